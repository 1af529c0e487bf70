//! An Envoy in REDIRECT mode (Istio's default, no `INTERCEPTION_MODE`) takes all four types:
//! no NACK, and its config_dump holds the listeners and routes of Istio's outbound layout.
//! Without iptables nothing reaches its listeners, so no traffic is sent; virtualOutbound
//! binds on a loopback address of its own and the per-port listeners bind nothing.

use std::net::SocketAddr;
use std::time::Duration;

use super::common::envoy::{Bootstrap, Envoy};
use super::common::manifest::{namespace, service, slices, Condition, Manifests};
use super::common::process::Revplane;
use super::common::{admin_get, loopback_ip};
use super::{diagnostics, retry};

#[tokio::test(flavor = "multi_thread")]
async fn an_envoy_in_redirect_mode_accepts_clusters_endpoints_listeners_and_routes() {
    // Endpoints where nothing listens: no traffic is sent.
    let ready = |port: u16| [(SocketAddr::from(([127, 0, 0, 1], port)), Condition::Ready)];
    let mut documents = vec![namespace("payments"), namespace("demo"), namespace("tools")];
    documents.push(service(
        "payments",
        "ledger",
        "10.96.0.20",
        &[("http-web", 9000)],
    ));
    documents.extend(slices("payments", "ledger", "http-web", &ready(19000)));
    documents.push(service("demo", "greeter", "10.96.0.40", &[("grpc", 50051)]));
    documents.extend(slices("demo", "greeter", "grpc", &ready(19051)));
    documents.push(service(
        "tools",
        "echo",
        "10.96.0.50",
        &[("tcp-echo", 7000)],
    ));
    documents.extend(slices("tools", "echo", "tcp-echo", &ready(17000)));
    let manifests = Manifests::new();
    manifests.write("mesh", &documents);
    let server = Revplane::start("canary", manifests.path()).await;
    let virtual_outbound = SocketAddr::new(loopback_ip(), 15001);
    let bootstrap = Bootstrap::traffic("frontend-7d4b9", "shop", "canary", server.xds.port())
        .interception_redirect(virtual_outbound);
    let envoy = Envoy::start_with(&bootstrap, &[]);

    let synced = retry(Duration::from_secs(15), || async {
        let body = admin_get(server.admin, "/debug/proxies").await.1;
        let proxies: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let types = &proxies["proxies"][0]["types"];
        for kind in ["cds", "eds", "lds", "rds"] {
            let t = &types[kind];
            if !t["last_nack"].is_null() {
                return Err(format!("{kind} NACKed: {}", t["last_nack"]));
            }
            if t["sent_version"].is_null() || t["acked_version"] != t["sent_version"] {
                return Err(format!("{kind} not ACKed: {t}"));
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = synced {
        panic!("{e}\n{}", diagnostics(&server, &[&envoy]).await);
    }

    let listeners = envoy.dynamic_listeners().await;
    let routes = envoy.dynamic_routes().await;
    let clusters = envoy.dynamic_clusters().await;
    let context = format!(
        "listeners {listeners:?}\nroutes {routes:?}\nclusters {clusters:?}\n{}",
        diagnostics(&server, &[&envoy]).await
    );
    for want in [
        "virtualOutbound",
        "0.0.0.0_9000",
        "0.0.0.0_50051",
        "10.96.0.50_7000",
    ] {
        assert!(listeners.iter().any(|l| l == want), "no {want}: {context}");
    }
    for want in ["9000", "50051"] {
        assert!(
            routes.iter().any(|r| r == want),
            "no route {want}: {context}"
        );
    }
    for want in [
        "PassthroughCluster",
        "BlackHoleCluster",
        "outbound|9000||ledger.payments.svc.cluster.local",
        "outbound|50051||greeter.demo.svc.cluster.local",
        "outbound|7000||echo.tools.svc.cluster.local",
    ] {
        assert!(clusters.iter().any(|c| c == want), "no {want}: {context}");
    }
    // Envoy's own counters agree: nothing rejected, nothing left warming.
    for (stat, want) in [
        ("listener_manager.lds.update_rejected", 0),
        ("cluster_manager.cds.update_rejected", 0),
        ("listener_manager.total_listeners_warming", 0),
        ("cluster_manager.warming_clusters", 0),
    ] {
        assert_eq!(envoy.stat(stat).await, Some(want), "{stat}: {context}");
    }
    // virtualOutbound is bound where OUTBOUND_LISTENER_ADDRESS says.
    assert!(
        std::net::TcpStream::connect(virtual_outbound).is_ok(),
        "virtualOutbound not bound on {virtual_outbound}: {context}"
    );
}
