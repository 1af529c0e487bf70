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

pub mod patch;
pub mod review;
pub mod server;
pub mod template;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::pipeline::InjectorViewReceiver;
use crate::revision::Revision;
use review::{Outcome, Route};

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

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

/// The webhook of one revision.
#[derive(Clone, Debug)]
pub struct Injector {
    /// The revision it injects.
    pub revision: Revision,
    /// The control plane's namespace (for the default discovery address).
    pub control_namespace: String,
    /// The pipeline's published view.
    pub views: InjectorViewReceiver,
    /// Fresh namespace reads from the API server (kube source only).
    pub namespaces: Option<kube::Api<Namespace>>,
    /// Metrics.
    pub metrics: InjectMetrics,
}

/// The webhook's routes.
pub fn router(injector: Arc<Injector>) -> Router {
    Router::new()
        .route("/inject", post(inject_revision))
        .route("/inject/tag/{tag}", post(inject_tag))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(injector)
}

async fn inject_revision(State(injector): State<Arc<Injector>>, body: Bytes) -> Response {
    injector.handle(Route::Revision, &body).await
}

async fn inject_tag(
    State(injector): State<Arc<Injector>>,
    Path(tag): Path<String>,
    body: Bytes,
) -> Response {
    match tag.parse::<Revision>() {
        Ok(tag) => injector.handle(Route::Tag(tag), &body).await,
        Err(e) => {
            injector.metrics.count("invalid");
            (
                StatusCode::BAD_REQUEST,
                format!("bad tag in the path: {e}\n"),
            )
                .into_response()
        }
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn pod_name(pod: &Pod) -> String {
    let meta = &pod.metadata;
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "<unnamed>".to_string(),
    }
}

impl Injector {
    /// Answers one AdmissionReview body: HTTP 400 with a message when it is malformed.
    pub async fn handle(&self, route: Route, body: &[u8]) -> Response {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(review) => review,
            Err(e) => {
                self.metrics.count("invalid");
                return bad_request(format!(
                    "malformed AdmissionReview (admission.k8s.io/v1 expected): {e}\n"
                ));
            }
        };
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(request) => request,
            Err(_) => {
                self.metrics.count("invalid");
                return bad_request("AdmissionReview has no request\n".to_string());
            }
        };
        let response = AdmissionResponse::from(&request);
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        if !is_pod || request.operation != Operation::Create {
            self.metrics.count("not_pod");
            return Json(response.into_review()).into_response();
        }
        let pod: Pod = match request
            .object
            .map(|o| serde_json::to_value(o).and_then(serde_json::from_value))
        {
            Some(Ok(pod)) => pod,
            Some(Err(e)) => {
                self.metrics.count("invalid");
                return bad_request(format!("request.object is not a valid Pod: {e}\n"));
            }
            None => {
                self.metrics.count("invalid");
                return bad_request("a Pod CREATE review without request.object\n".to_string());
            }
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        let name = format!("{namespace}/{}", pod_name(&pod));
        let Some(view) = self.views.borrow().clone() else {
            self.metrics.count("not_ready");
            let message = format!(
                "revplane {} has not read its configuration yet (waiting for the initial sync); retry shortly",
                self.revision
            );
            return Json(response.deny(message).into_review()).into_response();
        };
        let empty = BTreeMap::new();
        let cached = view.namespaces.get(&namespace).unwrap_or(&empty);
        let decide = |labels: &BTreeMap<String, String>| {
            review::decide(
                &self.revision,
                &route,
                &pod,
                labels,
                &view.mesh,
                &self.control_namespace,
            )
        };
        let mut outcome = decide(cached);
        if matches!(outcome, Outcome::OptedOut | Outcome::NotSelected { .. }) {
            if let Some(fresh) = self.fresh_labels(&namespace).await {
                if &fresh != cached {
                    outcome = decide(&fresh);
                }
            }
        }
        self.metrics.count(outcome.result());
        let response = match outcome {
            Outcome::Inject(patch) => {
                tracing::info!(pod = %name, route = ?route, "injecting the sidecar");
                match response.clone().with_patch(patch) {
                    Ok(patched) => patched,
                    Err(e) => {
                        let message = format!("cannot encode the injection patch: {e}");
                        tracing::error!(pod = %name, "{message}");
                        response.deny(message)
                    }
                }
            }
            other => {
                let warning = other.warning(&self.revision, &route, &name);
                tracing::info!(pod = %name, result = other.result(), "not injecting: {}", warning.as_deref().unwrap_or(""));
                let mut response = response;
                response.warnings = warning.map(|w| vec![w]);
                response
            }
        };
        Json(response.into_review()).into_response()
    }

    async fn fresh_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let api = self.namespaces.as_ref()?;
        match api.get(namespace).await {
            Ok(ns) => Some(ns.metadata.labels.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(namespace, error = %e, "cannot read the namespace to confirm the selection; using the watched labels");
                None
            }
        }
    }
}
