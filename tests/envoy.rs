//! End-to-end tier: the `revplane` binary and a real Envoy 1.40 (installed by scripts/test).

mod common;

use std::time::Duration;

use common::envoy::Envoy;
use common::process::Revplane;
use common::*;

const CANARY_NODE: &str = "sidecar~127.0.0.1~frontend-7d4b9.shop~shop.svc.cluster.local";

/// What the example mesh must look like inside Envoy: ready endpoints only.
fn expected_endpoints() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        (
            "outbound|8080||catalog.shop.svc.cluster.local",
            "127.0.0.1:18180",
        ),
        (
            "outbound|80||frontend.shop.svc.cluster.local",
            "127.0.0.1:18080",
        ),
        (
            "outbound|9000||ledger.payments.svc.cluster.local",
            "127.0.0.1:19000",
        ),
        (
            "outbound|9000||ledger.payments.svc.cluster.local",
            "127.0.0.1:19001",
        ),
        (
            "outbound|9090||frontend.shop.svc.cluster.local",
            "127.0.0.1:19090",
        ),
    ]
    .iter()
    .map(|(c, e)| (c.to_string(), e.to_string()))
    .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_envoy_on_the_canary_server_gets_every_cluster_and_endpoint() {
    let server = Revplane::start("canary", &example_mesh()).await;
    let envoy = Envoy::start(CANARY_NODE, "canary", server.xds.port(), &[]);
    eventually(
        Duration::from_secs(10),
        "Envoy holds the example mesh",
        || async { envoy.outbound_endpoints().await == expected_endpoints() },
    )
    .await;
    let proxies: serde_json::Value =
        serde_json::from_str(&admin_get(server.admin, "/debug/proxies").await.1).unwrap();
    assert_eq!(proxies["proxies"][0]["node_id"], CANARY_NODE);
    assert_eq!(proxies["proxies"][0]["revision"], "canary");
    assert_eq!(proxies["proxies"][0]["pod_name"], "frontend-7d4b9");
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_envoy_on_the_stable_server_is_refused_holds_nothing_and_is_counted() {
    let stable = Revplane::start("stable", &example_mesh()).await;
    let envoy = Envoy::start(CANARY_NODE, "canary", stable.xds.port(), &[]);
    let sample =
        "revplane_xds_rejected_streams_total{revision=\"stable\",reason=\"revision_mismatch\"}";
    eventually(
        Duration::from_secs(10),
        "the refusal is counted",
        || async { metric(stable.admin, sample).await >= 1.0 },
    )
    .await;
    // Envoy saw the PERMISSION_DENIED status (gRPC code 7) with the reason.
    eventually(Duration::from_secs(5), "Envoy logs the refusal", || async {
        // grpc-message is percent-encoded on the wire and in Envoy's log.
        let log = envoy.log_text().replace("%20", " ").replace("%22", "\"");
        log.contains("closed: 7, ") && log.contains("belongs to revision \"canary\"")
    })
    .await;
    assert!(
        envoy.dynamic_clusters().await.is_empty(),
        "a refused Envoy holds no dynamic clusters"
    );
    assert!(envoy.outbound_endpoints().await.is_empty());
    let proxies = admin_get(stable.admin, "/debug/proxies").await.1;
    assert!(proxies.contains("\"proxies\":[]"), "{proxies}");
    let log = stable.log_text();
    assert!(
        log.contains("refused xDS stream") && log.contains(CANARY_NODE),
        "{log}"
    );
    // Envoy retries; the log stays at one line per node per minute.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stable.log_text().matches("refused xDS stream").count(),
        1,
        "{}",
        stable.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_an_endpoint_slice_reaches_envoy_within_two_seconds() {
    let mesh = mesh_copy();
    let server = Revplane::start("canary", mesh.path()).await;
    let envoy = Envoy::start(CANARY_NODE, "canary", server.xds.port(), &[]);
    eventually(Duration::from_secs(10), "initial config", || async {
        envoy.outbound_endpoints().await == expected_endpoints()
    })
    .await;
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();
    std::fs::write(&shop, text.replace("port: 18180", "port: 18188")).unwrap();
    let moved = (
        "outbound|8080||catalog.shop.svc.cluster.local".to_string(),
        "127.0.0.1:18188".to_string(),
    );
    eventually(
        Duration::from_secs(2),
        "Envoy shows the new endpoint",
        || async {
            let now = envoy.outbound_endpoints().await;
            now.contains(&moved) && !now.iter().any(|(_, e)| e == "127.0.0.1:18180")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_envoy_rejects_is_nacked_recorded_and_not_resent() {
    // This Envoy is built without the EDS cluster type, as a trimmed or older proxy build
    // might be: it must reject every cluster revplane sends.
    let server = Revplane::start("canary", &example_mesh()).await;
    let envoy = Envoy::start(
        CANARY_NODE,
        "canary",
        server.xds.port(),
        &["--disable-extensions", "envoy.clusters/envoy.cluster.eds"],
    );
    let admin = server.admin;
    eventually(
        Duration::from_secs(10),
        "the NACK shows in /debug/proxies",
        || async {
            let v: serde_json::Value =
                serde_json::from_str(&admin_get(admin, "/debug/proxies").await.1).unwrap();
            v["proxies"][0]["types"]["cds"]["last_nack"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("envoy.cluster.eds"))
        },
    )
    .await;
    // Hold still: no resend loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = admin_get(admin, "/metrics").await.1;
    assert_eq!(
        metric_in(
            &metrics,
            "revplane_xds_nacks_total{revision=\"canary\",type=\"cds\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_in(
            &metrics,
            "revplane_xds_pushes_total{revision=\"canary\",type=\"cds\"}"
        ),
        1.0,
        "not re-sent"
    );
    assert_eq!(
        envoy.stat("cluster_manager.cds.update_rejected").await,
        Some(1)
    );
    // Envoy takes the clusters it can build (the static PassthroughCluster and
    // BlackHoleCluster) and rejects the EDS ones.
    let clusters = envoy.dynamic_clusters().await;
    assert!(
        clusters.iter().all(|c| !c.starts_with("outbound|")),
        "{clusters:?}"
    );
    assert!(server.log_text().contains("proxy rejected config (NACK)"));

    // The operator's view: proxy-status names the NACK and Envoy's own message.
    let addr = server.xds.to_string();
    for node in [CANARY_NODE, "frontend-7d4b9.shop"] {
        let (ok, detail, stderr) = proxy_status(&["--xds-addr", &addr, node]).await;
        assert!(ok, "{stderr}");
        assert!(detail.contains("CDS   NACKED"), "{detail}");
        let message = detail
            .split_once("CDS last NACK")
            .map(|(_, m)| m)
            .unwrap_or_default();
        assert!(message.contains("envoy.cluster.eds"), "{detail}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_cluster_finishes_warming_with_its_endpoints() {
    let mesh = mesh_copy();
    let server = Revplane::start("canary", mesh.path()).await;
    let envoy = Envoy::start(CANARY_NODE, "canary", server.xds.port(), &[]);
    eventually(Duration::from_secs(10), "initial config", || async {
        envoy.outbound_endpoints().await == expected_endpoints()
    })
    .await;
    // Switching the catalog port to HTTP/2 changes its Cluster but not its endpoints; Envoy
    // re-warms the cluster and must get its assignment again, or it waits 15 s for it.
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();
    let changed = text.replacen(
        "      port: 8080\n      targetPort: 8080\n      protocol: TCP\n",
        "      port: 8080\n      targetPort: 8080\n      protocol: TCP\n      appProtocol: kubernetes.io/h2c\n",
        1,
    );
    assert_ne!(changed, text, "the example mesh still has the catalog port");
    std::fs::write(&shop, changed).unwrap();
    eventually(
        Duration::from_secs(2),
        "the changed cluster is active with its endpoint",
        || async {
            let dump: serde_json::Value = serde_json::from_str(
                &envoy
                    .admin_get("/config_dump?resource=dynamic_active_clusters")
                    .await,
            )
            .unwrap();
            let catalog = dump["configs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["cluster"]["name"] == "outbound|8080||catalog.shop.svc.cluster.local")
                .map(|c| c.to_string())
                .unwrap_or_default();
            catalog.contains("http2_protocol_options")
                && envoy.stat("cluster_manager.warming_clusters").await == Some(0)
                && envoy.outbound_endpoints().await == expected_endpoints()
        },
    )
    .await;
}

/// `revplane proxy-status <args>`: (success, stdout, stderr).
async fn proxy_status(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["proxy-status".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = common::process::run_cli(all).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_status_over_both_revisions_shows_the_envoy_synced_on_its_own() {
    let canary = Revplane::start("canary", &example_mesh()).await;
    let stable = Revplane::start("stable", &example_mesh()).await;
    let envoy = Envoy::start(CANARY_NODE, "canary", canary.xds.port(), &[]);
    eventually(Duration::from_secs(10), "Envoy holds the mesh", || async {
        envoy.outbound_endpoints().await == expected_endpoints()
    })
    .await;
    let (canary_addr, stable_addr) = (canary.xds.to_string(), stable.xds.to_string());
    let args = ["--xds-addr", &canary_addr, "--xds-addr", &stable_addr];
    let want = [
        "frontend-7d4b9.shop",
        "canary",
        "SYNCED",
        "SYNCED",
        "NOT SENT",
        "NOT SENT",
        canary_addr.as_str(),
        env!("CARGO_PKG_VERSION"),
    ];
    let mut table = String::new();
    for _ in 0..100 {
        let (ok, stdout, stderr) = proxy_status(&args).await;
        assert!(ok, "{stdout}{stderr}");
        table = stdout;
        let rows: Vec<Vec<&str>> = table
            .lines()
            .skip(1)
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        if rows == [want.to_vec()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "one proxy over both instances:\n{table}");
    assert_eq!(
        rows[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
        want,
        "{table}"
    );
    let (ok, json, _) = proxy_status(&[&args[..], &["--json"]].concat()).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["instances"][0]["revision"], "canary");
    assert_eq!(v["instances"][0]["proxies"], 1);
    assert_eq!(v["instances"][1]["revision"], "stable");
    assert_eq!(v["instances"][1]["proxies"], 0);
    assert_eq!(v["proxies"][0]["node_id"], CANARY_NODE);
}
