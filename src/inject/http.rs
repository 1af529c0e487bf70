//! The webhook's HTTP routes: `POST /inject` and `POST /inject/tag/<tag>`, each review within
//! a deadline and a bounded number at once, its body at most [`MAX_REVIEW_BYTES`].
//!
//! The whole review (reading the body, deciding, answering) must finish within
//! [`REVIEW_DEADLINE`], so a client that trickles its body holds a connection for at most that
//! long; beyond [`MAX_CONCURRENT_REVIEWS`] reviews wait for a turn within the same deadline.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::review::Route;
use super::{bounded, Injector, MAX_REVIEW_BYTES, REVIEW_DEADLINE};
use crate::revision::Revision;

/// The webhook's routes.
pub fn router(injector: Arc<Injector>) -> Router {
    // With and without a trailing '/': an injectionURL may end in either.
    Router::new()
        .route("/inject", post(inject_revision))
        .route("/inject/", post(inject_revision))
        .route("/inject/tag/{tag}", post(inject_tag))
        .route("/inject/tag/{tag}/", post(inject_tag))
        .with_state(injector)
}

async fn inject_revision(State(injector): State<Arc<Injector>>, body: Body) -> Response {
    within_deadline(&injector, Route::Revision, body).await
}

async fn inject_tag(
    State(injector): State<Arc<Injector>>,
    Path(tag): Path<String>,
    body: Body,
) -> Response {
    match tag.parse::<Revision>() {
        Ok(tag) => within_deadline(&injector, Route::Tag(tag), body).await,
        Err(e) => {
            injector.metrics.count("invalid");
            let message = format!(
                "bad tag {:?} in the path: a tag is a DNS-1123 label ({})\n",
                bounded(&e.name, 64),
                e.reason
            );
            (StatusCode::BAD_REQUEST, message).into_response()
        }
    }
}

async fn within_deadline(injector: &Injector, route: Route, body: Body) -> Response {
    let review = async {
        let Ok(_turn) = injector.turns.acquire().await else {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
        };
        let bytes = match axum::body::to_bytes(body, MAX_REVIEW_BYTES).await {
            Ok(bytes) => bytes,
            Err(e) => {
                injector.metrics.count("invalid");
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return if too_large {
                    let message = format!("AdmissionReview larger than {MAX_REVIEW_BYTES} bytes\n");
                    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
                } else {
                    let message = format!("cannot read the request body: {e}\n");
                    (StatusCode::BAD_REQUEST, message).into_response()
                };
            }
        };
        injector.handle(route, &bytes).await
    };
    match tokio::time::timeout(REVIEW_DEADLINE, review).await {
        Ok(response) => response,
        Err(_) => {
            injector.metrics.count("timeout");
            let message = format!(
                "the review did not complete within {REVIEW_DEADLINE:?} (body too slow, or the webhook is overloaded)\n"
            );
            (StatusCode::REQUEST_TIMEOUT, message).into_response()
        }
    }
}
