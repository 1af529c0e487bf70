//! In-process tier: the real server on 127.0.0.1:0, driven by a scripted tonic ADS client.

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Code;

const FRONTEND_HTTP: &str = "outbound|80||frontend.shop.svc.cluster.local";
const CATALOG_HTTP: &str = "outbound|8080||catalog.shop.svc.cluster.local";

fn all_clusters() -> Vec<String> {
    vec![
        "outbound|8080||catalog.shop.svc.cluster.local".to_string(),
        "outbound|80||frontend.shop.svc.cluster.local".to_string(),
        "outbound|9000||ledger.payments.svc.cluster.local".to_string(),
        "outbound|9090||frontend.shop.svc.cluster.local".to_string(),
    ]
}

/// What a wildcard CDS subscriber gets: the example mesh's clusters and the two every
/// sidecar holds (REDIRECT mode sends unknown destinations there).
fn every_cluster() -> Vec<String> {
    let mut all = all_clusters();
    all.extend([
        "BlackHoleCluster".to_string(),
        "PassthroughCluster".to_string(),
    ]);
    all.sort();
    all
}

/// Opens an admitted stream and walks it through CDS, EDS and their ACKs.
async fn attached(server: &revplane::app::Server, node_id: &str) -> AdsClient {
    let mut client = AdsClient::open(server, first_cds(node_id, "canary"))
        .await
        .unwrap();
    let cds = client.recv().await.unwrap();
    assert_eq!(cds.type_url, CDS);
    let clusters = names(&cds);
    client.ack(&cds, &[]).await;
    client.send(request(EDS, &clusters, "", "")).await;
    let eds = client.recv().await.unwrap();
    assert_eq!(eds.type_url, EDS);
    client.ack(&eds, &clusters).await;
    client
}

#[tokio::test]
async fn the_gate_refuses_each_kind_of_stranger_with_its_own_status() {
    let server = start("stable", &example_mesh()).await;

    let no_node = AdsClient::open(&server, request(CDS, &[], "", "")).await;
    let status = match no_node {
        Ok(mut c) => c.recv().await.unwrap_err(),
        Err(s) => s,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let bad = DiscoveryRequest {
        node: Some(node("n-bad", &[("REVISION", "Not_A_Label")])),
        ..request(CDS, &[], "", "")
    };
    let mut c = AdsClient::open(&server, bad).await.unwrap();
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("DNS-1123"),
        "{}",
        status.message()
    );

    let mut c = AdsClient::open(
        &server,
        first_cds(
            "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local",
            "canary",
        ),
    )
    .await
    .unwrap();
    let status = c.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    for part in [
        "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local",
        "\"canary\"",
        "\"stable\"",
    ] {
        assert!(
            status.message().contains(part),
            "{part} missing from: {}",
            status.message()
        );
    }

    let metrics = admin_get(server.admin_addr, "/metrics").await.1;
    for reason in ["missing_node", "bad_revision", "revision_mismatch"] {
        let sample = format!(
            "revplane_xds_rejected_streams_total{{revision=\"stable\",reason=\"{reason}\"}}"
        );
        assert_eq!(metric_in(&metrics, &sample), 1.0, "{sample} in\n{metrics}");
    }
    assert_eq!(
        metric_in(
            &metrics,
            "revplane_xds_connected_proxies{revision=\"stable\"}"
        ),
        0.0
    );
    let proxies = admin_get(server.admin_addr, "/debug/proxies").await.1;
    assert!(
        proxies.contains("\"proxies\":[]"),
        "refused proxies are not listed: {proxies}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_admitted_proxy_gets_clusters_then_endpoints_and_shows_up_everywhere() {
    let server = start("canary", &example_mesh()).await;
    let mut client = AdsClient::open(&server, first_cds("proxy-a", "canary"))
        .await
        .unwrap();
    let cds = client.recv().await.unwrap();
    assert_eq!(names(&cds), every_cluster());
    client.ack(&cds, &[]).await;
    client.send(request(EDS, &all_clusters(), "", "")).await;
    let eds = client.recv().await.unwrap();
    let eps = endpoints(&eds);
    let catalog = eps.iter().find(|(n, _)| n == CATALOG_HTTP).unwrap();
    assert_eq!(
        catalog.1,
        ["127.0.0.1:18180"],
        "terminating endpoint left out"
    );
    let frontend = eps.iter().find(|(n, _)| n == FRONTEND_HTTP).unwrap();
    assert_eq!(
        frontend.1,
        ["127.0.0.1:18080"],
        "not-ready endpoint left out"
    );
    client.ack(&eds, &all_clusters()).await;
    client.expect_silence(Duration::from_millis(300)).await;

    let admin = server.admin_addr;
    eventually(
        Duration::from_secs(2),
        "ACKs visible in /debug/proxies",
        || async {
            let body = admin_get(admin, "/debug/proxies").await.1;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let p = &v["proxies"][0];
            p["node_id"] == "proxy-a"
                && p["types"]["cds"]["acked_version"] == cds.version_info.as_str()
                && p["types"]["eds"]["acked_version"] == eds.version_info.as_str()
        },
    )
    .await;
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric_in(
            &metrics,
            "revplane_xds_connected_proxies{revision=\"canary\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &metrics,
            "revplane_xds_pushes_total{revision=\"canary\",type=\"cds\"}"
        ),
        1.0
    );
    assert_eq!(admin_get(admin, "/ready").await.0, 200);
    drop(client);
    eventually(
        Duration::from_secs(2),
        "gauge back to 0 after disconnect",
        || async {
            metric(admin, "revplane_xds_connected_proxies{revision=\"canary\"}").await == 0.0
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_file_change_reaches_the_client_and_a_bad_file_keeps_the_last_good_config() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-b").await;
    let shop = mesh.path().join("shop.yaml");
    let original = std::fs::read_to_string(&shop).unwrap();

    std::fs::write(&shop, original.replace("port: 18180", "port: 18199")).unwrap();
    let eds = client.recv().await.unwrap();
    assert_eq!(eds.type_url, EDS);
    assert_eq!(
        endpoints(&eds),
        [(
            CATALOG_HTTP.to_string(),
            vec!["127.0.0.1:18199".to_string()]
        )],
        "only the change is sent"
    );
    client.ack(&eds, &all_clusters()).await;

    // A broken file: nothing is pushed, the error is reported, the config stays.
    std::fs::write(&shop, original.replace("port: 18180", "port: 0")).unwrap();
    client.expect_silence(Duration::from_millis(500)).await;
    let config: serde_json::Value =
        serde_json::from_str(&admin_get(server.admin_addr, "/debug/config").await.1).unwrap();
    let errors = config["source_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("shop.yaml"));
    assert!(errors[0]["reason"]
        .as_str()
        .unwrap()
        .contains("outside 1-65535"));
    assert!(errors[0]["document"].is_u64());
    let catalog = config["snapshot"]["types"]["eds"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == CATALOG_HTTP)
        .unwrap()
        .clone();
    assert_eq!(
        catalog["endpoints"][0], "127.0.0.1:18199",
        "last good config still served"
    );
    assert_eq!(
        metric(
            server.admin_addr,
            "revplane_source_invalid_documents{revision=\"canary\"}"
        )
        .await,
        1.0
    );

    // A new proxy connecting now gets the last good config, not a hole.
    let mut late = AdsClient::open(&server, first_cds("proxy-late", "canary"))
        .await
        .unwrap();
    assert_eq!(names(&late.recv().await.unwrap()), every_cluster());

    // Removing a whole file removes its services.
    std::fs::remove_file(mesh.path().join("payments.yaml")).unwrap();
    let cds = client.recv().await.unwrap();
    assert_eq!(cds.type_url, CDS);
    let outbound: Vec<String> = names(&cds)
        .into_iter()
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    assert_eq!(outbound.len(), 3, "{outbound:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_later_request_for_another_revision_or_a_malformed_one_ends_only_that_stream() {
    let server = start("canary", &example_mesh()).await;
    let mut switcher = attached(&server, "proxy-c").await;
    let mut bystander = attached(&server, "proxy-d").await;

    switcher
        .send(DiscoveryRequest {
            node: Some(node("proxy-c", &[("REVISION", "stable")])),
            ..request(CDS, &[], "", "")
        })
        .await;
    let status = switcher.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut malformed = attached(&server, "proxy-e").await;
    malformed.send(request("", &[], "", "")).await;
    let status = malformed.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("type_url"));

    // An oversized request is refused by the message-size limit, again for that stream only.
    let mut huge = attached(&server, "proxy-f").await;
    huge.send(request(EDS, &["x".repeat(2 * 1024 * 1024)], "", ""))
        .await;
    let status = huge.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    bystander.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        metric(
            server.admin_addr,
            "revplane_xds_connected_proxies{revision=\"canary\"}"
        )
        .await,
        1.0
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_streams_with_unavailable_within_the_grace_period() {
    let server = start("canary", &example_mesh()).await;
    let mut client = attached(&server, "proxy-g").await;
    let shutdown = server.shutdown.clone();
    let stopping = tokio::spawn(server.stop());
    let status = client.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("shutting down"));
    assert!(shutdown.is_cancelled());
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("stops within the grace period")
        .unwrap();
}

#[tokio::test]
async fn one_change_is_encoded_once_whatever_the_number_of_streams() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(attached(&server, &format!("proxy-{i}")).await);
    }
    let before = server.publisher_metrics.encodes.get();
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();
    std::fs::write(&shop, text.replace("port: 18180", "port: 18177")).unwrap();
    for c in &mut clients {
        let eds = c.recv().await.unwrap();
        assert_eq!(endpoints(&eds)[0].1, ["127.0.0.1:18177"]);
    }
    let encoded = server.publisher_metrics.encodes.get() - before;
    assert_eq!(
        encoded, 1,
        "one changed assignment: one serialization, not one per stream (20 streams) nor per resource"
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_are_held_until_the_first_snapshot_never_answered_with_nothing() {
    use revplane::revision::RevisionGate;
    use revplane::snapshot::{ResourceType, Snapshot};
    use revplane::xds::{self, XdsContext};
    use std::sync::Arc;

    let (tx, rx) = tokio::sync::watch::channel(None);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ctx = Arc::new(XdsContext::new(
        RevisionGate::new("canary".parse().unwrap()),
        rx,
        Default::default(),
        shutdown.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(xds::serve(listener, ctx));

    let mut client = AdsClient::open_at(addr, first_cds("early", "canary"))
        .await
        .unwrap();
    client.expect_silence(Duration::from_millis(300)).await;
    let snapshot = Snapshot::from_encoded(
        1,
        vec![(ResourceType::Cluster, vec![("c1".to_string(), vec![])])],
    );
    tx.send_replace(Some(Arc::new(snapshot)));
    let cds = client.recv().await.unwrap();
    assert_eq!(
        cds.resources.len(),
        1,
        "the held request is answered once there is config"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn pushes_in_flight_are_bounded_until_proxies_ack() {
    let mut args = serve_args("canary", &example_mesh());
    args.push_concurrency = 1;
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = revplane::app::start_on(args, xds, admin).await.unwrap();
    let mut a = AdsClient::open(&server, first_cds("proxy-a", "canary"))
        .await
        .unwrap();
    let cds_a = a.recv().await.unwrap();
    // A holds the only push permit until it answers.
    let mut b = AdsClient::open(&server, first_cds("proxy-b", "canary"))
        .await
        .unwrap();
    b.expect_silence(Duration::from_millis(500)).await;
    a.ack(&cds_a, &[]).await;
    let cds_b = b.recv().await.unwrap();
    assert_eq!(names(&cds_b).len(), 6, "B is served once A answered");
    server.stop().await;
}

#[tokio::test]
async fn delta_xds_is_refused_with_unimplemented_and_a_hint() {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

    let server = start("canary", &example_mesh()).await;
    let mut client =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.xds_addr))
            .await
            .unwrap();
    let first = DeltaDiscoveryRequest {
        node: Some(node("proxy-delta", &[("REVISION", "canary")])),
        type_url: CDS.to_string(),
        ..Default::default()
    };
    let status = match client
        .delta_aggregated_resources(tokio_stream::iter([first]))
        .await
    {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status.message().contains("state-of-the-world"),
        "{status:?}"
    );
    // State-of-the-world streams are served as ever.
    let mut sotw = AdsClient::open(&server, first_cds("proxy-sotw", "canary"))
        .await
        .unwrap();
    assert_eq!(sotw.recv().await.unwrap().type_url, CDS);
    server.stop().await;
}
