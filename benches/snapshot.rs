//! Criterion benchmarks of the snapshot path: full translation + encoding of a large catalog,
//! the incremental rebuild after one endpoint change, and the encoding cost per resource.
//!
//! `cargo bench --bench snapshot`; sizes: `REVPLANE_BENCH_SERVICES` (default 10,000) with 10
//! endpoints each (100,000 endpoints).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use revplane::catalog::build::{service, slice};
use revplane::catalog::{Catalog, Object};
use revplane::snapshot::builder::SnapshotBuilder;
use revplane::translate::translate;

/// The allocator of the `revplane` binary (src/main.rs), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// 10,000 under `cargo bench`; 100 when `cargo test` runs the bench once as a smoke test.
fn services() -> usize {
    let default = if std::env::args().any(|a| a == "--bench") {
        10_000
    } else {
        100
    };
    std::env::var("REVPLANE_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn endpoints(i: usize, generation: u8) -> Vec<String> {
    (0..10)
        .map(|e| {
            format!(
                "10.{}.{}.{}",
                (i >> 8) & 255,
                i & 255,
                e * 10 + generation as usize
            )
        })
        .collect()
}

fn catalog(n: usize) -> Catalog {
    let mut c = Catalog::default();
    for i in 0..n {
        let ns = format!("ns{}", i % 100);
        let name = format!("svc{i}");
        c.apply(Object::Service(service(&ns, &name, &[("http", 80)])));
        let ips = endpoints(i, 1);
        let eps: Vec<(&str, bool, bool)> =
            ips.iter().map(|ip| (ip.as_str(), true, false)).collect();
        c.apply(Object::EndpointSlice(slice(
            &ns,
            &format!("{name}-1"),
            &name,
            &[("http", 8080)],
            &eps,
        )));
    }
    c
}

fn bench(c: &mut Criterion) {
    let n = services();
    let catalog = catalog(n);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);

    group.bench_function(format!("full build, {n} services x 10 endpoints"), |b| {
        b.iter(|| {
            let mut builder = SnapshotBuilder::new(Counter::default());
            black_box(builder.build(1, black_box(&catalog)))
        })
    });

    group.bench_function(format!("translate only, {n} services"), |b| {
        b.iter(|| black_box(translate(black_box(&catalog))))
    });

    // One endpoint change: alternate between two versions of one slice.
    let mut changing = catalog.clone();
    let mut builder = SnapshotBuilder::new(Counter::default());
    builder.build(1, &changing);
    let mut generation = 1u8;
    group.bench_function(
        format!("rebuild after one endpoint change, {n} services"),
        |b| {
            b.iter(|| {
                generation = 3 - generation;
                let ips = endpoints(7, generation);
                let eps: Vec<(&str, bool, bool)> =
                    ips.iter().map(|ip| (ip.as_str(), true, false)).collect();
                changing.apply(Object::EndpointSlice(slice(
                    "ns7",
                    "svc7-1",
                    "svc7",
                    &[("http", 8080)],
                    &eps,
                )));
                black_box(builder.build(2, &changing))
            })
        },
    );
    group.finish();

    let t = translate(&catalog);
    let (cluster, assignment) = (&t.clusters[0], &t.load_assignments[0]);
    c.bench_function("encode one Cluster", |b| {
        b.iter(|| black_box(black_box(cluster).encode_to_vec()))
    });
    c.bench_function("encode one ClusterLoadAssignment (10 endpoints)", |b| {
        b.iter(|| black_box(black_box(assignment).encode_to_vec()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
