//! The Kubernetes source on a large catalog: Services with two EndpointSlices each, created in
//! a real kube-apiserver before `revplane serve --source kube` starts; the server must become
//! ready with a cluster and an assignment for every service. CI runs it at 200 services and
//! asserts the catalog only; `REVPLANE_KUBE_SCALE=10000 cargo test --release --test
//! kube_scale -- --nocapture` is issue 12's measurement (time to ready, memory), printed and
//! recorded in docs/benchmarks.md — never a timed assertion.

mod common;

use std::time::{Duration, Instant};

use common::kube::*;
use common::process::Revplane;
use common::*;
use futures::StreamExt;

const REVISION: &str = "scale";
const NAMESPACES: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_catalog_from_the_apiserver_is_served_whole() {
    let n: usize = std::env::var("REVPLANE_KUBE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    apply_mesh_config(
        &admin,
        REVISION,
        "discoverySelectors:\n- matchLabels: {bench: scale}\n",
    )
    .await;
    for i in 0..NAMESPACES {
        create_namespace(&admin, &format!("scale-{i}"), &[("bench", "scale")]).await;
    }
    let created = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let admin = admin.clone();
            async move {
                let (ns, name) = (format!("scale-{}", i % NAMESPACES), format!("svc{i}"));
                let (a, b) = ((i >> 8) & 255, i & 255);
                apply_service(&admin, &ns, &name, 80).await;
                let first = [format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2")];
                let first: Vec<&str> = first.iter().map(String::as_str).collect();
                apply_slice(&admin, &ns, &name, &first, 8080).await;
                let second = format!("10.{a}.{b}.3");
                apply_named_slice(&admin, &ns, &name, &format!("{name}-2"), &[&second], 8080).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!(
        "created {n} Services and {} EndpointSlices in {:.1} s",
        2 * n,
        created.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let server = Revplane::spawn_kube(REVISION, &cluster.main.kubeconfig(REVPLANE_TOKEN));
    server.wait_ready().await;
    let ready = started.elapsed();
    let (rss, peak) = (
        status_mib(server.pid(), "VmRSS:"),
        status_mib(server.pid(), "VmHWM:"),
    );
    let clusters = metric(
        server.admin,
        &format!("revplane_snapshot_clusters{{revision=\"{REVISION}\"}}"),
    )
    .await;
    let assignments = metric(
        server.admin,
        &format!("revplane_snapshot_endpoint_sets{{revision=\"{REVISION}\"}}"),
    )
    .await;
    println!(
        "kube source, {n} Services + {} EndpointSlices: ready {:.0} ms after the process started; RSS {rss:.1} MiB (peak {peak:.1} MiB); {clusters} clusters, {assignments} assignments",
        2 * n,
        ready.as_secs_f64() * 1000.0,
    );
    assert!(
        clusters >= n as f64 && assignments >= n as f64,
        "every service served when ready: {clusters} clusters, {assignments} assignments for {n} services"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
