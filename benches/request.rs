//! Criterion benchmark of reading one xDS request: a SotW EDS ACK naming every assignment of
//! a 1,000-service catalog, as each of 10,000 proxies sends after every push (item 1 of the
//! fan-out's cost). `cargo bench --bench request`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use revplane::xds::request::Request;

/// The allocator of the `revplane` binary (src/main.rs), so the figures are the server's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn ack(names: usize) -> Bytes {
    DiscoveryRequest {
        version_info: "5f0c2a9d1e7b3c44".into(),
        response_nonce: "17".into(),
        type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
        resource_names: (0..names)
            .map(|i| format!("outbound|80||svc{i}.ns{}.svc.cluster.local", i % 10))
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn bench(c: &mut Criterion) {
    let size = if std::env::args().any(|a| a == "--bench") {
        1000
    } else {
        10
    };
    let message = ack(size);
    c.bench_function(
        &format!(
            "read an EDS ACK naming {size} assignments ({} B)",
            message.len()
        ),
        |b| {
            b.iter(|| {
                let request = Request::parse(black_box(message.clone())).unwrap();
                black_box(request.names_fingerprint())
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
