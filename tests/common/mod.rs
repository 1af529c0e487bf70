//! Shared helpers of the integration and end-to-end tests: an in-process server on
//! `127.0.0.1:0`, a scripted ADS client, admin HTTP look-ups, and loopback addresses.
#![allow(dead_code)]

pub mod certs;
pub mod envoy;
pub mod grpc;
pub mod helm;
pub mod kube;
pub mod kubelet;
pub mod manifest;
pub mod process;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use revplane::app::{self, Server};
use revplane::cli::ServeArgs;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The example mesh shipped in deploy/examples/mesh.
pub fn example_mesh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/mesh")
}

/// A private copy of the example mesh that a test may edit.
pub fn mesh_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example_mesh()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

pub fn serve_args(revision: &str, source: &Path) -> ServeArgs {
    ServeArgs {
        revision: revision.parse().unwrap(),
        source: revplane::cli::SourceSpec::Dir(source.to_path_buf()),
        namespace: "revplane-system".to_string(),
        rescan_interval: Duration::from_secs(30),
        max_manifest_bytes: 8 * 1024 * 1024,
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        tls_cert: None,
        tls_key: None,
        debounce_after: Duration::from_millis(20),
        debounce_max: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(2),
        max_request_bytes: 1024 * 1024,
        max_first_request_bytes: 64 * 1024,
        request_buffer_bytes: 64 * 1024 * 1024,
        max_connections: 16_384,
        handshake_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(300),
        max_streams_per_connection: 100,
        new_streams_per_second: 2000,
        new_stream_burst: 500,
        admission_max_wait: Duration::from_secs(30),
        push_concurrency: 512,
        max_subscribed_names: 100_000,
        debug_concurrency: 2,
    }
}

/// Starts an in-process server on ephemeral ports.
pub async fn start(revision: &str, source: &Path) -> Server {
    let args = serve_args(revision, source);
    let xds = TcpListener::bind(args.xds_addr).await.unwrap();
    let admin = TcpListener::bind(args.admin_addr).await.unwrap();
    app::start_on(args, xds, admin).await.unwrap()
}

/// A node with the given metadata strings.
pub fn node(id: &str, metadata: &[(&str, &str)]) -> Node {
    Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(Kind::StringValue(v.to_string())),
                        },
                    )
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// A scripted ADS client: send requests, read responses or the final status.
pub struct AdsClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl AdsClient {
    /// Opens a stream and sends `first`.
    pub async fn open(server: &Server, first: DiscoveryRequest) -> Result<AdsClient, Status> {
        Self::open_at(server.xds_addr, first).await
    }

    /// Opens a stream to `addr` and sends `first`.
    pub async fn open_at(
        addr: std::net::SocketAddr,
        first: DiscoveryRequest,
    ) -> Result<AdsClient, Status> {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to the xDS server");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(AdsClient { tx, responses })
    }

    pub async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("stream open");
    }

    /// The next response, or the status the stream ended with.
    pub async fn recv(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(Duration::from_secs(5), self.responses.message()).await {
            Err(_) => panic!("no response within 5 s"),
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => Err(Status::ok("stream ended without a status")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(next) = tokio::time::timeout(quiet, self.responses.message()).await {
            panic!("expected no message, got {next:?}");
        }
    }

    /// ACKs `response` with `names`.
    pub async fn ack(&self, response: &DiscoveryResponse, names: &[String]) {
        self.send(request(
            &response.type_url,
            names,
            &response.version_info,
            &response.nonce,
        ))
        .await;
    }
}

/// A request without node.
pub fn request(type_url: &str, names: &[String], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names.to_vec(),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// A first CDS wildcard request from a proxy of `revision`.
pub fn first_cds(node_id: &str, revision: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node(
            node_id,
            &[("REVISION", revision), ("NAMESPACE", "shop")],
        )),
        ..request(CDS, &[], "", "")
    }
}

/// Names of the resources in a response.
pub fn names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    response
        .resources
        .iter()
        .map(|any| {
            if response.type_url == CDS {
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(any.value.as_slice())
                    .unwrap()
                    .name
            } else {
                envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                    any.value.as_slice(),
                )
                .unwrap()
                .cluster_name
            }
        })
        .collect()
}

/// `host:port` endpoints of an EDS response, per cluster.
pub fn endpoints(response: &DiscoveryResponse) -> Vec<(String, Vec<String>)> {
    use prost::Message;
    response
        .resources
        .iter()
        .map(|any| {
            let la = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                any.value.as_slice(),
            )
            .unwrap();
            (
                la.cluster_name.clone(),
                revplane::translate::endpoint::socket_addresses(&la),
            )
        })
        .collect()
}

/// GET an admin path; returns (status, body).
pub async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("admin request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of one metric sample line (`name{labels} value`) in `/metrics`, 0 if absent.
pub async fn metric(addr: std::net::SocketAddr, sample: &str) -> f64 {
    let (_, body) = admin_get(addr, "/metrics").await;
    metric_in(&body, sample)
}

pub fn metric_in(body: &str, sample: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Polls `check` every 20 ms until it is true or `within` passed.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("not true within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the in-process server's `/ready` answers 200 (at most 10 s).
pub async fn wait_ready(server: &Server) {
    let addr = server.admin_addr;
    eventually(Duration::from_secs(10), "server ready", || async move {
        admin_get(addr, "/ready").await.0 == 200
    })
    .await;
}

/// A free address on 127.0.0.1 (bound once, then released for the caller).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A loopback address of its own for one Envoy's listeners (all of 127.0.0.0/8 is loopback on
/// Linux): `127.<pid>.<n>`, so Envoys binding the same service port, in this test binary or
/// in another running at the same time, do not collide. Never 127.0.0.1.
pub fn loopback_ip() -> std::net::IpAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    assert!(
        n < 250,
        "more than 250 loopback addresses in one test binary"
    );
    let pid = std::process::id();
    std::net::Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, n as u8 + 2).into()
}

/// `VmRSS` or `VmHWM` of a process, in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A request as gRPC frames it on the wire (uncompressed flag, length, message), for raw
/// HTTP/2 clients.
pub fn grpc_framed(request: &DiscoveryRequest) -> bytes::Bytes {
    use bytes::BufMut;
    use prost::Message;
    let mut out = bytes::BytesMut::new();
    out.put_u8(0);
    out.put_u32(request.encoded_len() as u32);
    request.encode(&mut out).unwrap();
    out.freeze()
}
