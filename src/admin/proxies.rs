//! `/debug/proxies`: connected proxies, paged by node id and filtered by node.
//!
//! `?node=<id>` shows the streams of one node; `?limit=<n>` (default [`DEFAULT_PAGE`], at
//! most [`MAX_PAGE`]) and `?after=<node id>` (the previous page's `next`) page through the
//! rest in node id order. `total` counts every proxy the filter matches.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{limit, AdminState};
use crate::xds::proxies::ProxyStatus;

/// Proxies on a page unless `?limit=` says otherwise.
pub const DEFAULT_PAGE: usize = 1000;

/// Most proxies on one page.
pub const MAX_PAGE: usize = 10_000;

/// The query of `/debug/proxies`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxiesQuery {
    /// Only streams of this node id.
    pub node: Option<String>,
    /// Only node ids after this one (the previous page's `next`).
    pub after: Option<String>,
    /// At most this many proxies.
    pub limit: Option<usize>,
}

#[derive(Serialize)]
struct ProxiesPage {
    revision: String,
    total: usize,
    next: Option<String>,
    proxies: Vec<ProxyStatus>,
}

/// `GET /debug/proxies`.
pub async fn proxies(
    State(state): State<AdminState>,
    query: Result<Query<ProxiesQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return bad_request(&e.body_text()),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return bad_request(&format!("limit={limit} is not between 1 and {MAX_PAGE}"));
    }
    let permit = match state.debug.enter("/debug/proxies").await {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let registry = state.proxies.clone();
    let revision = state.revision.to_string();
    limit::blocking_json(permit, move || {
        let page = registry.page(query.node.as_deref(), query.after.as_deref(), limit);
        serde_json::to_vec(&ProxiesPage {
            revision,
            total: page.total,
            next: page.next,
            proxies: page.proxies,
        })
    })
    .await
}

fn bad_request(what: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!(
            "/debug/proxies: {what}; it takes node=<node id>, limit=<1..={MAX_PAGE}> and \
             after=<the previous page's next>\n"
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
