//! Metrics of the xDS server (names echo Istio's `pilot_xds*` family).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::snapshot::ResourceType;

type Labels = [(&'static str, &'static str); 1];
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// xDS server metrics; cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct XdsMetrics {
    /// Proxies with an admitted stream.
    pub connected_proxies: Gauge,
    pushes: Family<Labels, Counter>,
    push_seconds: Histograms,
    convergence_seconds: Histograms,
    nacks: Family<Labels, Counter>,
    rejected_streams: Family<Labels, Counter>,
    stream_ends: Family<Labels, Counter>,
    /// Open xDS connections.
    pub connections: Gauge,
    refused_connections: Family<Labels, Counter>,
    /// Bytes of partly received requests held (the request budget in use).
    pub request_buffer_bytes: Gauge<u64, AtomicU64>,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        XdsMetrics {
            connected_proxies: Gauge::default(),
            pushes: Family::default(),
            push_seconds: Family::new_with_constructor(latency_histogram),
            convergence_seconds: Family::new_with_constructor(latency_histogram),
            nacks: Family::default(),
            rejected_streams: Family::default(),
            stream_ends: Family::default(),
            connections: Gauge::default(),
            refused_connections: Family::default(),
            request_buffer_bytes: Gauge::default(),
        }
    }
}

impl XdsMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xds_connected_proxies",
            "Proxies with an admitted ADS stream",
            self.connected_proxies.clone(),
        );
        registry.register(
            "xds_pushes",
            "xDS responses sent, by type",
            self.pushes.clone(),
        );
        registry.register(
            "xds_push_time_seconds",
            "Time from snapshot build to a response being queued on a stream, by type",
            self.push_seconds.clone(),
        );
        registry.register(
            "xds_convergence_time_seconds",
            "Time from snapshot build to the proxy's ACK of it, by type",
            self.convergence_seconds.clone(),
        );
        registry.register(
            "xds_nacks",
            "Responses rejected by proxies (NACK), by type",
            self.nacks.clone(),
        );
        registry.register(
            "xds_rejected_streams",
            "Streams refused at start, ended by the revision gate or for a request the server \
             would not read, by reason",
            self.rejected_streams.clone(),
        );
        registry.register(
            "xds_stream_ends",
            "Admitted ADS streams ended, by reason: client_closed and client_reset (the proxy \
             left), stream_lost (the stream or its connection failed under the server: logged \
             as a warning), refused (see xds_rejected_streams), shutdown",
            self.stream_ends.clone(),
        );
        registry.register(
            "xds_connections",
            "Open xDS connections (HTTP/2), handshake or not",
            self.connections.clone(),
        );
        registry.register(
            "xds_refused_connections",
            "xDS connections closed by the server before any stream: connection_limit \
             (--max-connections reached) or handshake_timeout (no HTTP/2 preface in time)",
            self.refused_connections.clone(),
        );
        registry.register(
            "xds_request_buffer_bytes",
            "Bytes of partly received xDS requests held across all streams \
             (at most --request-buffer-bytes)",
            self.request_buffer_bytes.clone(),
        );
    }

    /// A response was queued `since_build` after its snapshot was built.
    pub fn pushed(&self, kind: ResourceType, since_build: std::time::Duration) {
        let l = [("type", kind.short())];
        self.pushes.get_or_create(&l).inc();
        self.push_seconds
            .get_or_create(&l)
            .observe(since_build.as_secs_f64());
    }

    /// The proxy acknowledged a response `since_build` after its snapshot was built.
    pub fn acked(&self, kind: ResourceType, since_build: std::time::Duration) {
        self.convergence_seconds
            .get_or_create(&[("type", kind.short())])
            .observe(since_build.as_secs_f64());
    }

    /// The proxy rejected a response.
    pub fn nacked(&self, kind: ResourceType) {
        self.nacks.get_or_create(&[("type", kind.short())]).inc();
    }

    /// A stream was refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected_streams
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// An admitted stream ended for `reason`.
    pub fn stream_ended(&self, reason: &'static str) {
        self.stream_ends.get_or_create(&[("reason", reason)]).inc();
    }

    /// Admitted streams ended so far for `reason` (for tests).
    pub fn stream_end_count(&self, reason: &'static str) -> u64 {
        self.stream_ends.get_or_create(&[("reason", reason)]).get()
    }

    /// The counter of connections closed for `reason` (for a hot path to hold).
    pub fn refused_connections(&self, reason: &'static str) -> Counter {
        self.refused_connections
            .get_or_create(&[("reason", reason)])
            .clone()
    }

    /// Connections closed so far for `reason` (for tests).
    pub fn refused_connection_count(&self, reason: &'static str) -> u64 {
        self.refused_connections
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Rejected streams so far for `reason` (for tests and the load tool).
    pub fn rejected_count(&self, reason: &'static str) -> u64 {
        self.rejected_streams
            .get_or_create(&[("reason", reason)])
            .get()
    }
}
