//! One AdmissionReview, from its bytes to the answer: decode (only a Pod CREATE is decoded
//! whole), read the published view, decide ([`super::review::decide`]), and answer with the
//! patch or an untouched pod and a warning.
//!
//! When the published namespace labels say a pod is not ours, the namespace is read once more
//! from the API server (kube source only, at most every [`NAMESPACE_READ_REUSE`] per
//! namespace, within [`NAMESPACE_READ_TIMEOUT`]): the API server chose this webhook with
//! fresher labels than the watch may have delivered yet.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionKind};
use serde::Deserialize;

use super::review::{self, Outcome, Route};
use super::{bounded, Injector, NAMESPACE_READ_REUSE, NAMESPACE_READ_TIMEOUT};

/// Longest piece of a decoding error echoed back.
const ECHO: usize = 200;

/// Namespaces whose recent reads are kept at most; older ones are forgotten all at once.
const FRESH_READS_KEPT: usize = 1024;

/// The parts of a review read before deciding whether to decode the object.
#[derive(Deserialize)]
struct Peek {
    request: Option<PeekRequest>,
}

#[derive(Deserialize)]
struct PeekRequest {
    kind: GroupVersionKind,
    operation: Operation,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn pod_name(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let name = match (&meta.name, &meta.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => "<unnamed>".to_string(),
    };
    bounded(&name, 253)
}

/// An AdmissionReview decoded as far as [`Injector::handle`] needs it.
#[derive(Debug)]
pub enum Review {
    /// Anything but a Pod CREATE: answered allowed and untouched, its object never decoded.
    Other(Box<AdmissionRequest<DynamicObject>>),
    /// A Pod CREATE, with its pod decoded whole.
    PodCreate(Box<AdmissionRequest<Pod>>),
}

/// Decodes one AdmissionReview body (pure: what the webhook does before it reads any state).
/// The error is the message for an HTTP 400, with at most [`ECHO`] bytes of the decoder's
/// words.
pub fn decode_review(body: &[u8]) -> Result<Review, String> {
    let peek: Peek = serde_json::from_slice(body).map_err(|e| {
        format!(
            "malformed AdmissionReview (admission.k8s.io/v1 expected): {}\n",
            bounded(&e.to_string(), ECHO)
        )
    })?;
    let Some(peeked) = peek.request else {
        return Err("AdmissionReview has no request\n".to_string());
    };
    let is_pod = peeked.kind.group.is_empty() && peeked.kind.kind == "Pod";
    if !is_pod || peeked.operation != Operation::Create {
        let request = request_of::<DynamicObject>(body, "malformed AdmissionReview")?;
        return Ok(Review::Other(Box::new(request)));
    }
    let request = request_of::<Pod>(body, "request.object is not a valid Pod")?;
    if request.object.is_none() {
        return Err("a Pod CREATE review without request.object\n".to_string());
    }
    Ok(Review::PodCreate(Box::new(request)))
}

/// The review's request with its object decoded as `T`; `what` leads the error message.
fn request_of<T>(body: &[u8], what: &str) -> Result<AdmissionRequest<T>, String>
where
    T: kube::Resource + serde::de::DeserializeOwned,
{
    let review: AdmissionReview<T> = serde_json::from_slice(body)
        .map_err(|e| format!("{what}: {}\n", bounded(&e.to_string(), ECHO)))?;
    review
        .try_into()
        .map_err(|_| "AdmissionReview has no request\n".to_string())
}

impl Injector {
    /// Answers one AdmissionReview body: HTTP 400 with a message when it is malformed.
    pub async fn handle(&self, route: Route, body: &[u8]) -> Response {
        let request = match decode_review(body) {
            Ok(Review::PodCreate(request)) => request,
            Ok(Review::Other(request)) => {
                self.metrics.count("not_pod");
                return Json(AdmissionResponse::from(&*request).into_review()).into_response();
            }
            Err(message) => {
                self.metrics.count("invalid");
                return bad_request(message);
            }
        };
        let response = AdmissionResponse::from(&*request);
        let Some(pod) = request.object.as_ref() else {
            // decode_review refuses these; kept so that no path here can panic.
            self.metrics.count("invalid");
            return bad_request("a Pod CREATE review without request.object\n".to_string());
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        let name = format!("{}/{}", bounded(&namespace, 63), pod_name(pod));
        let Some(view) = self.views.borrow().clone() else {
            self.metrics.count("not_ready");
            let message = format!(
                "revplane {rev} is not ready: it has not completed its initial sync (its log says \
                 why; an invalid mesh config in ConfigMap revplane-{rev} also keeps it here); \
                 retry shortly",
                rev = self.revision
            );
            return Json(response.deny(message).into_review()).into_response();
        };
        let empty = BTreeMap::new();
        let cached = view.namespaces.get(&namespace).unwrap_or(&empty);
        let decide = |labels: &BTreeMap<String, String>| {
            review::decide(
                &self.revision,
                &route,
                &namespace,
                pod,
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

    /// The namespace's labels as the API server has them now (`None`: no kube source, or the
    /// read failed or took too long).
    async fn fresh_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        let api = self.namespaces.as_ref()?;
        let now = tokio::time::Instant::now();
        {
            let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, labels)) = fresh.get(namespace) {
                if now.duration_since(*at) < NAMESPACE_READ_REUSE {
                    return Some(labels.clone());
                }
            }
        }
        let labels = match tokio::time::timeout(NAMESPACE_READ_TIMEOUT, api.get(namespace)).await {
            Ok(Ok(ns)) => ns.metadata.labels.unwrap_or_default(),
            Ok(Err(e)) => {
                tracing::warn!(namespace, error = %e, "cannot read the namespace to confirm the selection; using the watched labels");
                return None;
            }
            Err(_) => {
                tracing::warn!(namespace, timeout = ?NAMESPACE_READ_TIMEOUT, "reading the namespace to confirm the selection timed out; using the watched labels");
                return None;
            }
        };
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.len() >= FRESH_READS_KEPT {
            fresh.clear();
        }
        fresh.insert(namespace.to_string(), (now, labels.clone()));
        Some(labels)
    }
}
