//! The xDS protocol: revision-gated ADS streams fed from the published snapshot.
//!
//! One task per stream ([`stream`]) selects over requests, snapshot changes and shutdown; the
//! protocol rules live in the pure [`state`] module. The same port serves CSDS ([`csds`]),
//! which reads only the registry of connected proxies. This module must not reach back into
//! sources, the catalog or translation: it only reads snapshots.
//!
//! Before any of that, [`conn`] bounds what an unauthenticated client can hold: connections
//! (a limit, and a handshake deadline for the HTTP/2 preface), and [`request`] the bytes of
//! requests (a small first-request limit and one budget for partly received requests).

pub mod admission;
pub mod ads;
pub mod conn;
pub mod csds;
pub mod log_limit;
pub mod metrics;
pub mod proxies;
pub mod request;
pub mod state;
pub mod stream;
pub mod sync_status;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipeline::SnapshotReceiver;
use crate::revision::RevisionGate;
use metrics::XdsMetrics;
use proxies::{ProxyRegistry, RejectionLog};
use request::{RequestBudget, RequestLimits};

/// Responses queued per stream before the stream task waits for the client to read. Small:
/// a response is built only once it has a slot, so a slow reader holds no stale ones.
const STREAM_QUEUE: usize = 2;

/// Names one stream may subscribe to per type unless configured otherwise
/// (`--max-subscribed-names`).
pub const DEFAULT_MAX_SUBSCRIBED_NAMES: usize = 100_000;

/// NACK lines logged per minute over all proxies (each proxy at most one per minute).
const NACK_LINES_PER_MINUTE: u32 = 100;

/// Limits of the gRPC server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Largest first request of a stream (it comes before the revision gate), in bytes.
    pub max_first_request_bytes: usize,
    /// Bytes of partly received requests buffered across all streams.
    pub request_buffer_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// Open xDS connections; more are closed as they come.
    pub max_connections: usize,
    /// A connection that has not sent the HTTP/2 preface this long after it was accepted is
    /// closed.
    pub handshake_timeout: Duration,
    /// An HTTP/2 keepalive PING goes to a connection whose proxy sent nothing this long.
    pub keepalive_interval: Duration,
    /// A connection that has not answered the PING within this is closed.
    pub keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 * 1024 * 1024,
            max_first_request_bytes: 64 * 1024,
            request_buffer_bytes: 64 * 1024 * 1024,
            max_streams_per_connection: 100,
            max_connections: 16_384,
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(300),
        }
    }
}

/// Everything a stream needs, shared by all streams of a server.
#[derive(Debug)]
pub struct XdsContext {
    /// The revision gate.
    pub gate: RevisionGate,
    /// Published snapshots.
    pub snapshots: SnapshotReceiver,
    /// Metrics.
    pub metrics: XdsMetrics,
    /// Connected proxies.
    pub proxies: ProxyRegistry,
    /// Rate-limited log of refused streams.
    pub rejections: RejectionLog,
    /// Rate limit of NACK log lines, per node and overall.
    pub nack_log: log_limit::LogLimiter,
    /// Limits the lines logged for streams lost under the server.
    pub end_log: log_limit::LogLimiter,
    /// Names a stream may subscribe to per type; a request naming more ends the stream.
    pub max_subscribed_names: usize,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks stream tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// `control_plane.identifier` of every response.
    pub control_plane_id: String,
    /// New-stream rate and push concurrency limits.
    pub admission: admission::Admission,
    /// Connection and request limits.
    pub limits: Limits,
    /// Request size limits and the server-wide budget for partly received requests.
    pub requests: RequestLimits,
}

impl XdsContext {
    /// A context for `gate`'s revision.
    pub fn new(
        gate: RevisionGate,
        snapshots: SnapshotReceiver,
        metrics: XdsMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_admission(gate, snapshots, metrics, shutdown, Default::default())
    }

    /// A context with explicit admission limits.
    pub fn with_admission(
        gate: RevisionGate,
        snapshots: SnapshotReceiver,
        metrics: XdsMetrics,
        shutdown: CancellationToken,
        admission: admission::AdmissionLimits,
    ) -> Self {
        Self::with_limits(
            gate,
            snapshots,
            metrics,
            shutdown,
            admission,
            Default::default(),
        )
    }

    /// A context with explicit admission, connection and request limits.
    pub fn with_limits(
        gate: RevisionGate,
        snapshots: SnapshotReceiver,
        metrics: XdsMetrics,
        shutdown: CancellationToken,
        admission: admission::AdmissionLimits,
        limits: Limits,
    ) -> Self {
        let requests = RequestLimits {
            first: limits.max_first_request_bytes,
            max: limits.max_request_bytes,
            budget: RequestBudget::new(
                limits.request_buffer_bytes,
                metrics.request_buffer_bytes.clone(),
            ),
        };
        let control_plane_id =
            format!("revplane/{} {}", gate.revision(), env!("CARGO_PKG_VERSION"));
        XdsContext {
            gate,
            snapshots,
            metrics,
            proxies: ProxyRegistry::default(),
            rejections: RejectionLog::new(Duration::from_secs(60)),
            nack_log: log_limit::LogLimiter::new(Duration::from_secs(60), NACK_LINES_PER_MINUTE),
            end_log: log_limit::LogLimiter::new(Duration::from_secs(60), NACK_LINES_PER_MINUTE),
            max_subscribed_names: DEFAULT_MAX_SUBSCRIBED_NAMES,
            shutdown,
            tasks: TaskTracker::new(),
            control_plane_id,
            admission: admission::Admission::new(admission),
            limits,
            requests,
        }
    }
}

impl XdsContext {
    /// This context with at most `max` subscribed names per type on one stream.
    pub fn with_max_subscribed_names(mut self, max: usize) -> Self {
        self.max_subscribed_names = max;
        self
    }
}

/// Serves ADS and CSDS on an already bound listener until `ctx.shutdown`, within
/// `ctx.limits`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<XdsContext>,
) -> Result<(), tonic::transport::Error> {
    let shutdown = ctx.shutdown.clone();
    let limits = ctx.limits;
    let incoming = conn::Incoming::new(
        listener,
        conn::ConnLimits {
            max_connections: limits.max_connections,
            handshake_timeout: limits.handshake_timeout,
        },
        &ctx.metrics,
    );
    let status = csds::service(&ctx);
    let service = ads::AdsServer::new(ctx.clone());
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Find proxies that stopped answering (hung) though their host is there; vanished
        // hosts are TCP's to find (`conn`).
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(service)
        .add_service(status)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
