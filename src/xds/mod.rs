//! The xDS protocol: revision-gated ADS streams fed from the published snapshot.
//!
//! One task per stream ([`stream`]) selects over requests, snapshot changes and shutdown; the
//! protocol rules live in the pure [`state`] module. This module must not reach back into
//! sources, the catalog or translation: it only reads snapshots.

pub mod admission;
pub mod metrics;
pub mod proxies;
pub mod state;
pub mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::revision::RevisionGate;
use crate::snapshot::publisher::SnapshotReceiver;
use metrics::XdsMetrics;
use proxies::{ProxyRegistry, RejectionLog};

/// Responses queued per stream before the stream task waits for the client to read. Small:
/// each queued response is a full copy, and a response is built only once it has a slot.
const STREAM_QUEUE: usize = 2;

/// Limits of the gRPC server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 * 1024 * 1024,
            max_streams_per_connection: 100,
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
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks stream tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// `control_plane.identifier` of every response.
    pub control_plane_id: String,
    /// New-stream rate and push concurrency limits.
    pub admission: admission::Admission,
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
        limits: admission::AdmissionLimits,
    ) -> Self {
        let control_plane_id =
            format!("revplane/{} {}", gate.revision(), env!("CARGO_PKG_VERSION"));
        XdsContext {
            gate,
            snapshots,
            metrics,
            proxies: ProxyRegistry::default(),
            rejections: RejectionLog::new(Duration::from_secs(60)),
            shutdown,
            tasks: TaskTracker::new(),
            control_plane_id,
            admission: admission::Admission::new(limits),
        }
    }
}

/// The ADS gRPC service.
#[derive(Clone, Debug)]
pub struct AdsService {
    ctx: Arc<XdsContext>,
}

type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let ctx = self.ctx.clone();
        self.ctx
            .tasks
            .spawn(stream::serve(ctx, request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "revplane serves state-of-the-world ADS only; configure the proxy with api_type GRPC",
        ))
    }
}

/// Serves ADS on an already bound listener until `ctx.shutdown`.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<XdsContext>,
    limits: Limits,
) -> Result<(), tonic::transport::Error> {
    let shutdown = ctx.shutdown.clone();
    let service = AggregatedDiscoveryServiceServer::new(AdsService { ctx })
        .max_decoding_message_size(limits.max_request_bytes);
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        // Find proxies that vanished without closing their connection.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}
