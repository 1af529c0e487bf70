//! The admin HTTP server: `/healthz`, `/ready`, `/metrics`, `/debug/proxies`, `/debug/config`.
//!
//! Read-only views of state owned elsewhere; it never changes what proxies are served. The
//! `/debug` pages can be large: at most `--debug-concurrency` are built at once, each on a
//! blocking thread (never on the runtime threads that serve xDS), and `/debug/proxies` is
//! paged ([`proxies`]).

mod config;
mod limit;
mod proxies;

pub use config::snapshot_json;
pub use limit::DebugLimit;
pub use proxies::{ProxiesQuery, DEFAULT_PAGE, MAX_PAGE};

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::SnapshotReceiver;
use crate::readiness::Readiness;
use crate::revision::Revision;
use crate::source::SourceStatus;
use crate::xds::proxies::ProxyRegistry;

/// What the admin server reads.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// This instance's revision.
    pub revision: Revision,
    /// All metrics.
    pub registry: Arc<Registry>,
    /// Published snapshots (`None` until every source synced).
    pub snapshots: SnapshotReceiver,
    /// Connected proxies.
    pub proxies: ProxyRegistry,
    /// Problems with source input.
    pub sources: SourceStatus,
    /// What the first snapshot still waits for (named by `/ready`).
    pub readiness: Readiness,
    /// How many `/debug` pages are built at once.
    pub debug: DebugLimit,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/debug/proxies", get(proxies::proxies))
        .route("/debug/config", get(config))
        .with_state(state)
}

/// Serves the admin routes on an already bound listener until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.snapshots.borrow().is_some() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let pending = state.readiness.pending();
    let message = if pending.is_empty() {
        "not ready: building the first snapshot\n".to_string()
    } else {
        format!(
            "not ready: waiting for the initial sync of {} (the log and /debug/config say why)\n",
            pending.join(", ")
        )
    };
    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn config(State(state): State<AdminState>) -> Response {
    let permit = match state.debug.enter("/debug/config").await {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let snapshot = state.snapshots.borrow().clone();
    let source_errors = state.sources.errors();
    let revision = state.revision.to_string();
    limit::blocking_json(permit, move || {
        serde_json::to_vec(&json!({
            "revision": revision,
            "synced": snapshot.is_some(),
            "source_errors": source_errors,
            "snapshot": snapshot.as_deref().map(snapshot_json),
        }))
    })
    .await
}
