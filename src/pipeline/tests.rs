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
    let (publisher, mut rx) = Publisher::new(debounce, 1, metrics.clone());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));

    tx.send(svc("a")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.borrow().is_none(), "not synced yet: nothing published");

    tx.send(CatalogEvent::Synced).await.unwrap();
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
    let (publisher, _snapshots) = Publisher::new(debounce, 1, PublisherMetrics::default());
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
    tx.send(CatalogEvent::Synced).await.unwrap();
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
    let (publisher, mut rx) = Publisher::new(debounce, 1, PublisherMetrics::default());
    let (tx, events) = mpsc::channel(16);
    tokio::spawn(publisher.run(events, CancellationToken::new()));
    tx.send(CatalogEvent::Synced).await.unwrap();
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
