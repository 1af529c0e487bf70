//! In-process tier, limits on what one client can make the server hold or write: subscribed
//! names per stream, node sizes at the gate, NACKs counted and logged once per response,
//! and `/debug/proxies` filtered and paged.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc;
use revplane::app::{self, Server};
use tokio::net::TcpListener;
use tonic::Code;

async fn start_with(revision: &str, edit: impl FnOnce(&mut revplane::cli::ServeArgs)) -> Server {
    let mut args = serve_args(revision, &example_mesh());
    edit(&mut args);
    let xds = TcpListener::bind(args.xds_addr).await.unwrap();
    let admin = TcpListener::bind(args.admin_addr).await.unwrap();
    let server = app::start_on(args, xds, admin).await.unwrap();
    wait_ready(&server).await;
    server
}

/// `n` cluster names: the example mesh's four, then names that do not exist.
fn cluster_names(n: usize) -> Vec<String> {
    let mesh = [
        "outbound|8080||catalog.shop.svc.cluster.local",
        "outbound|80||frontend.shop.svc.cluster.local",
        "outbound|9000||ledger.payments.svc.cluster.local",
        "outbound|9090||frontend.shop.svc.cluster.local",
    ];
    let missing = (0..).map(|i| format!("outbound|80||missing-{i}.shop.svc.cluster.local"));
    mesh.into_iter()
        .map(String::from)
        .chain(missing)
        .take(n)
        .collect()
}

#[tokio::test]
async fn a_request_naming_more_than_the_limit_ends_the_stream_with_resource_exhausted() {
    let server = start_with("canary", |a| a.max_subscribed_names = 3).await;
    let mut client = AdsClient::open(&server, first_cds("proxy-a", "canary"))
        .await
        .unwrap();
    let cds = client.recv().await.unwrap();
    client.ack(&cds, &[]).await;
    // At the limit: served.
    client.send(request(EDS, &cluster_names(3), "", "")).await;
    let eds = client.recv().await.unwrap();
    assert_eq!(eds.type_url, EDS);
    // Over it: the stream ends, and says which flag.
    client.ack(&eds, &cluster_names(4)).await;
    let status = client.recv().await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    for part in ["names 4 resources", "at most 3", "--max-subscribed-names"] {
        assert!(
            status.message().contains(part),
            "{part}: {}",
            status.message()
        );
    }
    let sample =
        "revplane_xds_rejected_streams_total{revision=\"canary\",reason=\"too_many_names\"}";
    assert_eq!(metric(server.admin_addr, sample).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_huge_node_id_or_metadata_value_is_refused_with_a_short_message() {
    let server = start_with("canary", |_| {}).await;
    // Under --max-first-request-bytes (64 KiB), so the node gate is what refuses it; a larger
    // first request is refused before it is decoded (tests/xds_limits.rs).
    let huge = "n".repeat(32 * 1024);
    let long_id = first_cds(&huge, "canary");
    let long_pod = DiscoveryRequest {
        node: Some(node(
            "proxy-b",
            &[("REVISION", "canary"), ("POD_NAME", &huge)],
        )),
        ..request(CDS, &[], "", "")
    };
    for first in [long_id, long_pod] {
        let status = match AdsClient::open(&server, first).await {
            Ok(mut c) => c.recv().await.unwrap_err(),
            Err(s) => s,
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().len() < 1024,
            "{} bytes",
            status.message().len()
        );
        assert!(
            status.message().contains("is 32768 bytes, over the 1024"),
            "{}",
            status.message()
        );
    }
    let sample =
        "revplane_xds_rejected_streams_total{revision=\"canary\",reason=\"oversized_node\"}";
    assert_eq!(metric(server.admin_addr, sample).await, 2.0);
    let proxies = admin_get(server.admin_addr, "/debug/proxies").await.1;
    assert!(proxies.contains("\"proxies\":[]"), "{proxies}");
    server.stop().await;
}

/// Everything logged on this thread while the guard lives (the tests below run the server
/// on a current-thread runtime, so its tasks log here).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines_with(&self, text: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_string)
            .collect()
    }
}

fn nack_of(
    response: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
    message: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(rpc::Status {
            code: 3,
            message: message.to_string(),
            details: vec![],
        }),
        ..request(&response.type_url, &[], "", &response.nonce)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_nack_storm_is_counted_and_logged_once_per_response() {
    let log = Log::default();
    let _guard = log.capture();
    let server = start_with("canary", |_| {}).await;
    let message = format!("bad cluster: {}", "x".repeat(100 * 1024));
    let mut client = AdsClient::open(&server, first_cds("proxy-c", "canary"))
        .await
        .unwrap();
    let cds = client.recv().await.unwrap();
    for _ in 0..50 {
        client.send(nack_of(&cds, &message)).await;
    }
    // Requests are handled in order: once EDS is answered, every NACK was.
    client.send(request(EDS, &cluster_names(1), "", "")).await;
    assert_eq!(client.recv().await.unwrap().type_url, EDS);
    let nacks = "revplane_xds_nacks_total{revision=\"canary\",type=\"cds\"}";
    assert_eq!(
        metric(server.admin_addr, nacks).await,
        1.0,
        "one NACK per response"
    );

    // The same node again on a new stream: counted, but its line was logged a moment ago.
    drop(client);
    let mut again = AdsClient::open(&server, first_cds("proxy-c", "canary"))
        .await
        .unwrap();
    let cds = again.recv().await.unwrap();
    again.send(nack_of(&cds, &message)).await;
    again.send(request(EDS, &cluster_names(1), "", "")).await;
    assert_eq!(again.recv().await.unwrap().type_url, EDS);
    assert_eq!(metric(server.admin_addr, nacks).await, 2.0);

    let lines = log.lines_with("proxy rejected config (NACK)");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].len() < 2048, "a line of {} bytes", lines[0].len());
    assert!(lines[0].contains("bad cluster: xxx"), "{}", lines[0]);
    assert!(lines[0].contains("(102413 bytes)"), "{}", lines[0]);
    // What /debug/proxies keeps of the message is bounded too.
    let body = admin_get(server.admin_addr, "/debug/proxies?node=proxy-c")
        .await
        .1;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kept = v["proxies"][0]["types"]["cds"]["last_nack"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        kept.starts_with("bad cluster: ") && kept.len() < 4200,
        "{}",
        kept.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn debug_proxies_filters_by_node_and_pages_by_node_id() {
    let server = start_with("canary", |_| {}).await;
    let mut clients = Vec::new();
    for id in ["proxy-3", "proxy-1", "proxy-2"] {
        let mut c = AdsClient::open(&server, first_cds(id, "canary"))
            .await
            .unwrap();
        c.recv().await.unwrap();
        clients.push(c);
    }
    let admin = server.admin_addr;
    let get = |path: &'static str| async move {
        let (status, body) = admin_get(admin, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["node_id"].as_str().unwrap().to_string())
            .collect()
    };
    let one = get("/debug/proxies?node=proxy-2").await;
    assert_eq!(ids(&one), ["proxy-2"]);
    let first = get("/debug/proxies?limit=2").await;
    assert_eq!(ids(&first), ["proxy-1", "proxy-2"]);
    assert_eq!(first["total"], 3);
    assert_eq!(first["next"], "proxy-2");
    let rest = get("/debug/proxies?limit=2&after=proxy-2").await;
    assert_eq!(ids(&rest), ["proxy-3"]);
    assert_eq!(rest["next"], serde_json::Value::Null);
    let (status, body) = admin_get(admin, "/debug/proxies?limit=0").await;
    assert_eq!(status, 400, "{body}");
    drop(clients);
    server.stop().await;
}
