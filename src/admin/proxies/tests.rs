//! `/debug/proxies` paging, filtering and its concurrency bound, through the handler itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::Value;
use tokio::sync::watch;

use super::*;
use crate::admin::DebugLimit;
use crate::xds::proxies::{ProxyEntry, ProxyRegistry};

fn admin_state(debug: DebugLimit) -> AdminState {
    let (_tx, snapshots) = watch::channel(None);
    AdminState {
        revision: "canary".parse().unwrap(),
        registry: Arc::new(Default::default()),
        snapshots,
        proxies: ProxyRegistry::default(),
        sources: Default::default(),
        readiness: Default::default(),
        debug,
    }
}

fn connect(registry: &ProxyRegistry, node_id: &str) -> ProxyEntry {
    let node = Node {
        id: node_id.to_string(),
        ..Default::default()
    };
    registry.register(&crate::revision::identity_of(&node).unwrap())
}

async fn get(state: &AdminState, query: &str) -> (StatusCode, String) {
    let uri: axum::http::Uri = format!("/debug/proxies?{query}").parse().unwrap();
    let query = Query::try_from_uri(&uri);
    let response = proxies(State(state.clone()), query).await;
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn node_ids(page: &Value) -> Vec<&str> {
    page["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn pages_walk_every_proxy_once_in_node_order_and_a_node_filter_selects_its_streams() {
    let state = admin_state(DebugLimit::new(2));
    // Node "b" has two streams (a reconnect overlapping its old stream).
    let _entries: Vec<ProxyEntry> = ["d", "b", "a", "e", "b", "c"]
        .iter()
        .map(|n| connect(&state.proxies, n))
        .collect();

    let (status, body) = get(&state, "").await;
    assert_eq!(status, StatusCode::OK);
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(node_ids(&all), ["a", "b", "b", "c", "d", "e"]);
    assert_eq!(all["total"], 6);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(all["revision"], "canary");

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &after {
            Some(a) => format!("limit=2&after={a}"),
            None => "limit=2".to_string(),
        };
        let page: Value = serde_json::from_str(&get(&state, &query).await.1).unwrap();
        assert_eq!(page["total"], 6);
        seen.extend(node_ids(&page).iter().map(|s| s.to_string()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["a", "b", "b", "c", "d", "e"],
        "no stream skipped or repeated"
    );
    assert_eq!(pages, 3);
    let first: Value = serde_json::from_str(&get(&state, "limit=2").await.1).unwrap();
    assert_eq!(
        node_ids(&first),
        ["a", "b", "b"],
        "both streams of the last node stay on one page"
    );

    let one: Value = serde_json::from_str(&get(&state, "node=b").await.1).unwrap();
    assert_eq!(node_ids(&one), ["b", "b"]);
    assert_eq!(one["total"], 2);
    let none: Value = serde_json::from_str(&get(&state, "node=zz").await.1).unwrap();
    assert_eq!(none["total"], 0);
    assert_eq!(none["proxies"], serde_json::json!([]));
}

#[tokio::test]
async fn a_bad_query_is_refused_with_what_the_page_takes() {
    let state = admin_state(DebugLimit::new(1));
    for query in ["limit=0", "limit=100001", "limit=many", "nodes=a"] {
        let (status, body) = get(&state, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body.contains("node=<node id>"), "{query}: {body}");
    }
}

#[tokio::test]
async fn requests_beyond_the_concurrency_wait_then_get_503() {
    let limit = DebugLimit::new(2).with_wait(Duration::from_millis(50));
    let state = admin_state(limit.clone());
    let _entry = connect(&state.proxies, "a");
    let held = [
        limit.enter("test").await.unwrap(),
        limit.enter("test").await.unwrap(),
    ];
    let (status, body) = get(&state, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("--debug-concurrency"), "{body}");
    assert!(body.contains("?node="), "{body}");
    drop(held);
    assert_eq!(get(&state, "").await.0, StatusCode::OK);

    // A waiting request is served once a permit comes back.
    let limit = DebugLimit::new(1).with_wait(Duration::from_secs(5));
    let state = admin_state(limit.clone());
    let permit = limit.enter("test").await.unwrap();
    let waiting = tokio::spawn({
        let state = state.clone();
        async move { get(&state, "").await.0 }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "waits for the permit");
    drop(permit);
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}
