//! The sidecar injection webhook of one revision (DESIGN.md §1).
//!
//! ```text
//!  API server ──AdmissionReview (Pod CREATE)──► POST /inject            (the revision's webhooks)
//!   (webhook selectors chose us)               POST /inject/tag/<tag>  (a tag's webhooks)
//!                                                   │
//!          InjectorView (mesh config, namespace labels) ──► review::decide ──► JSONPatch
//!          published by the pipeline, read here                (same selectors, checked again)
//! ```
//!
//! The webhook reads the state the pipeline publishes; it never writes to it. When the
//! published namespace labels say a pod is not ours, the namespace is read once more from
//! the API server (kube source only): the API server selected us with fresher labels than the
//! watch may have delivered yet, and a pod must not lose its sidecar to that race.

mod admission;
mod http;
pub mod patch;
pub mod review;
pub mod server;
pub mod template;
pub mod tls;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

pub use admission::{decode_review, Review};
pub use http::router;

use crate::pipeline::InjectorViewReceiver;
use crate::revision::Revision;

/// Largest AdmissionReview accepted: the API server's own limit for a request (3 MiB) plus
/// the review around it.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024 + 64 * 1024;

/// Longest one review may take, from its first body byte to the answer (the API server gives
/// up after the webhook's `timeoutSeconds`, 10 s).
pub const REVIEW_DEADLINE: Duration = Duration::from_secs(8);

/// Reviews decoded and decided at once; more wait (within their deadline) for a turn, so a
/// burst of large reviews holds bounded memory.
pub const MAX_CONCURRENT_REVIEWS: usize = 32;

/// Longest the confirming namespace read may take.
const NAMESPACE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a confirming namespace read is reused: reviews of one namespace in a burst cost
/// the API server one read.
const NAMESPACE_READ_REUSE: Duration = Duration::from_secs(1);

/// Metrics of the injector.
#[derive(Clone, Debug, Default)]
pub struct InjectMetrics {
    injections: Family<[(&'static str, &'static str); 1], Counter>,
}

impl InjectMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sidecar_injections",
            "Admission reviews answered, by result: injected, already_injected, opted_out, \
             not_selected, not_pod, not_ready, invalid",
            self.injections.clone(),
        );
    }

    fn count(&self, result: &'static str) {
        self.injections.get_or_create(&[("result", result)]).inc();
    }

    /// Reviews answered with `result` so far.
    pub fn get(&self, result: &'static str) -> u64 {
        self.injections.get_or_create(&[("result", result)]).get()
    }
}

/// Namespace labels read from the API server, with when they were read.
type FreshLabels = HashMap<
    String,
    (
        tokio::time::Instant,
        std::collections::BTreeMap<String, String>,
    ),
>;

/// The webhook of one revision.
#[derive(Debug)]
pub struct Injector {
    revision: Revision,
    control_namespace: String,
    views: InjectorViewReceiver,
    namespaces: Option<kube::Api<Namespace>>,
    metrics: InjectMetrics,
    turns: Semaphore,
    fresh: Mutex<FreshLabels>,
}

impl Injector {
    /// The webhook of `revision`, whose control plane runs in `control_namespace`, reading
    /// the pipeline's `views` and, with the kube source, confirming namespace labels through
    /// `namespaces`.
    pub fn new(
        revision: Revision,
        control_namespace: String,
        views: InjectorViewReceiver,
        namespaces: Option<kube::Api<Namespace>>,
        metrics: InjectMetrics,
    ) -> Injector {
        Injector {
            revision,
            control_namespace,
            views,
            namespaces,
            metrics,
            turns: Semaphore::new(MAX_CONCURRENT_REVIEWS),
            fresh: Mutex::new(HashMap::new()),
        }
    }
}

/// `text` cut to `max` characters, marked when cut: client input echoed in answers and logs
/// stays bounded.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}
