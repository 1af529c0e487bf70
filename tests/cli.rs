//! The binary's command-line contract, as other tools rely on it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

#[test]
fn an_invalid_revision_exits_with_status_2_and_explains_valid_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "serve",
            "--revision",
            "Canary.v2",
            "--source",
            "deploy/examples/mesh",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DNS-1123") && stderr.contains("canary"),
        "{stderr}"
    );
}

#[test]
fn a_missing_source_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "serve",
            "--revision",
            "canary",
            "--source",
            "/nonexistent/mesh",
        ])
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/mesh is not a directory"),
        "{stderr}"
    );
}

/// Runs `revplane proxy-status <args>`; (exit code, stdout, stderr).
async fn proxy_status(args: Vec<String>) -> (Option<i32>, String, String) {
    let out = common::process::run_cli([vec!["proxy-status".to_string()], args].concat()).await;
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A proxy attached to `server` with its clusters acknowledged.
async fn synced_proxy(server: &revplane::app::Server, node_id: &str, revision: &str) -> AdsClient {
    let first = DiscoveryRequest {
        node: Some(node(
            node_id,
            &[
                ("REVISION", revision),
                ("NAMESPACE", "shop"),
                ("POD_NAME", node_id),
            ],
        )),
        ..request(CDS, &[], "", "")
    };
    let mut client = AdsClient::open(server, first).await.unwrap();
    let cds = client.recv().await.unwrap();
    client.ack(&cds, &[]).await;
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_status_prints_the_proxies_of_every_instance_in_one_table() {
    let canary = start("canary", &example_mesh()).await;
    let stable = start("stable", &example_mesh()).await;
    let _a = synced_proxy(&canary, "web-canary", "canary").await;
    let _b = synced_proxy(&stable, "web-stable", "stable").await;
    let addrs = vec![
        "--xds-addr".to_string(),
        canary.xds_addr.to_string(),
        "--xds-addr".to_string(),
        stable.xds_addr.to_string(),
    ];
    let version = env!("CARGO_PKG_VERSION");
    let mut out = String::new();
    for _ in 0..100 {
        let (code, stdout, stderr) = proxy_status(addrs.clone()).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        out = stdout;
        if out.matches("SYNCED").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "REVISION", "CDS", "EDS", "LDS", "RDS", "INSTANCE", "VERSION"],
        "{out}"
    );
    assert_eq!(
        rows[1..],
        [
            vec![
                "web-canary.shop",
                "canary",
                "SYNCED",
                "NOT SENT",
                "NOT SENT",
                "NOT SENT",
                &canary.xds_addr.to_string(),
                version
            ],
            vec![
                "web-stable.shop",
                "stable",
                "SYNCED",
                "NOT SENT",
                "NOT SENT",
                "NOT SENT",
                &stable.xds_addr.to_string(),
                version
            ],
        ],
        "{out}"
    );

    let (code, json, _) = proxy_status([addrs.clone(), vec!["--json".into()]].concat()).await;
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["proxies"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(v["proxies"][1]["types"]["cds"]["status"], "SYNCED");
    assert_eq!(v["instances"][1]["revision"], "stable");

    let (code, detail, stderr) =
        proxy_status([addrs.clone(), vec!["web-stable.shop".into()]].concat()).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(detail.contains("NODE:             web-stable"), "{detail}");
    let (code, _, stderr) = proxy_status([addrs, vec!["nobody.shop".into()]].concat()).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no proxy \"nobody.shop\""), "{stderr}");
    canary.stop().await;
    stable.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_status_names_an_unreachable_instance_and_still_shows_the_others() {
    let canary = start("canary", &example_mesh()).await;
    let _a = synced_proxy(&canary, "web-canary", "canary").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, stdout, stderr) = proxy_status(vec![
        "--xds-addr".into(),
        closed.to_string(),
        "--xds-addr".into(),
        canary.xds_addr.to_string(),
    ])
    .await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("web-canary.shop"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "could not ask 1 of 2 instance(s):\n  {closed}: cannot connect"
        )),
        "{stderr}"
    );
    canary.stop().await;
}
