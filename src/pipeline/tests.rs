//! Tests of the pipeline: sync gating, debounce with a paused clock, the injector's view.

use super::*;
use crate::catalog::build::service;
use crate::catalog::Object;

fn svc(name: &str) -> CatalogEvent {
    CatalogEvent::Apply(Object::Service(service("shop", name, &[("http", 80)])))
}

#[tokio::test(start_paused = true)]
async fn nothing_is_published_before_sync_and_bursts_are_debounced() {
    let debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };
    let metrics = PublisherMetrics::default();
    let readiness = Readiness::new();
    let source = readiness.block("test");
    let (publisher, mut rx) = Publisher::new(debounce, readiness, metrics.clone());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));

    tx.send(svc("a")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.borrow().is_none(), "not synced yet: nothing published");

    source.done();
    rx.changed().await.unwrap();
    assert_eq!(
        rx.borrow_and_update()
            .as_ref()
            .unwrap()
            .resources(ResourceType::Cluster)
            .by_name
            .keys()
            .filter(|n| n.starts_with("outbound|"))
            .count(),
        1
    );

    for name in ["b", "c", "d"] {
        tx.send(svc(name)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.changed().await.unwrap();
    assert_eq!(
        rx.borrow_and_update()
            .as_ref()
            .unwrap()
            .resources(ResourceType::Cluster)
            .by_name
            .keys()
            .filter(|n| n.starts_with("outbound|"))
            .count(),
        4
    );
    assert_eq!(metrics.builds.get(), 2, "one build for the burst");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let published = metrics.published.get();
    assert!(
        (now - 5.0..=now).contains(&published),
        "publish time is stamped: {published} vs now {now}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_injector_view_follows_namespaces_and_mesh_at_once_after_sync() {
    use crate::catalog::Namespace;
    let debounce = Debounce {
        quiet: Duration::from_secs(5),
        max: Duration::from_secs(10),
    };
    let readiness = Readiness::new();
    let source = readiness.block("test");
    let (publisher, _snapshots) = Publisher::new(debounce, readiness, PublisherMetrics::default());
    let mut views = publisher.injector_views();
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));
    let ns = |labels: &[(&str, &str)]| {
        CatalogEvent::Apply(Object::Namespace(Namespace {
            name: "shop".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }))
    };
    tx.send(ns(&[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(views.borrow().is_none(), "nothing before the initial sync");
    source.done();
    views.changed().await.unwrap();
    assert_eq!(
        views.borrow_and_update().as_ref().unwrap().namespaces["shop"].len(),
        0
    );

    let start = Instant::now();
    tx.send(ns(&[("istio.io/rev", "canary")])).await.unwrap();
    views.changed().await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(5), "not debounced");
    let view = views.borrow_and_update().clone().unwrap();
    assert_eq!(view.namespaces["shop"]["istio.io/rev"], "canary");

    let mut mesh = crate::mesh::MeshConfig::default();
    mesh.sidecar.image = "registry.local/envoy:1".into();
    tx.send(CatalogEvent::Apply(Object::Mesh(mesh)))
        .await
        .unwrap();
    views.changed().await.unwrap();
    assert_eq!(
        views
            .borrow_and_update()
            .as_ref()
            .unwrap()
            .mesh
            .sidecar
            .image,
        "registry.local/envoy:1"
    );
    tx.send(svc("a")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !views.has_changed().unwrap(),
        "services do not touch the view"
    );
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_of_changes_is_published_at_the_max_delay() {
    let debounce = Debounce {
        quiet: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let (publisher, mut rx) =
        Publisher::new(debounce, Readiness::new(), PublisherMetrics::default());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));
    rx.changed().await.unwrap();
    rx.borrow_and_update();
    let start = Instant::now();
    for i in 0..30 {
        tx.send(svc(&format!("s{i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if rx.has_changed().unwrap() {
            break;
        }
    }
    let waited = start.elapsed();
    assert!(
        rx.has_changed().unwrap(),
        "published while changes kept coming"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn what_a_source_queued_before_dropping_its_guard_is_in_the_first_snapshot() {
    let debounce = Debounce {
        quiet: Duration::from_secs(5),
        max: Duration::from_secs(10),
    };
    let readiness = Readiness::new();
    let (a, b) = (readiness.block("kube/services"), readiness.block("dir"));
    let (publisher, mut rx) = Publisher::new(debounce, readiness, PublisherMetrics::default());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));
    a.done();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.borrow().is_none(), "one source still pending");
    // Queued and the guard dropped at once, before the publisher ran again.
    tx.send(svc("a")).await.unwrap();
    tx.send(svc("b")).await.unwrap();
    b.done();
    rx.changed().await.unwrap();
    let clusters = rx
        .borrow_and_update()
        .as_ref()
        .unwrap()
        .resources(ResourceType::Cluster)
        .by_name
        .keys()
        .filter(|n| n.starts_with("outbound|"))
        .count();
    assert_eq!(clusters, 2, "no debounce wait, nothing missing");
}

/// The build runs off the runtime's threads: on a one-thread runtime, a task keeps ticking
/// while a large snapshot is built (on main the tick stalled for the whole build).
#[tokio::test(flavor = "current_thread")]
async fn a_snapshot_build_does_not_stall_the_runtime() {
    let debounce = Debounce {
        quiet: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let readiness = Readiness::new();
    let source = readiness.block("test");
    let metrics = PublisherMetrics::default();
    let (publisher, mut rx) = Publisher::new(debounce, readiness, metrics.clone());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));
    let services: Vec<Object> = (0..3000)
        .map(|i| {
            Object::Service(service(
                &format!("ns{}", i % 10),
                &format!("s{i}"),
                &[("http", 80), ("grpc", 9000)],
            ))
        })
        .collect();
    tx.send(CatalogEvent::Reset(services)).await.unwrap();
    // Let the publisher apply the event first: only the build is measured.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let longest = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = CancellationToken::new();
    let ticker = tokio::spawn({
        let (longest, stop) = (longest.clone(), stop.clone());
        async move {
            let mut last = std::time::Instant::now();
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let gap = last.elapsed().as_micros() as u64;
                longest.fetch_max(gap, std::sync::atomic::Ordering::Relaxed);
                last = std::time::Instant::now();
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    longest.store(0, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    source.done();
    rx.changed().await.unwrap();
    let build = started.elapsed();
    stop.cancel();
    ticker.await.unwrap();
    let longest = Duration::from_micros(longest.load(std::sync::atomic::Ordering::Relaxed));
    assert!(
        build > Duration::from_millis(20),
        "the build is long enough to measure: {build:?}"
    );
    assert!(
        longest < build / 2,
        "the runtime stalled {longest:?} during a build of {build:?}"
    );
}
