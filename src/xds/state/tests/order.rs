//! Make-before-break across types on one stream: listeners and routes wait for the clusters
//! and assignments they use to be answered, and a cluster goes only once no answered route
//! uses it (driven as the stream task drives the state).

use super::*;

/// A snapshot of clusters (name, body), one route config "80" sending to `routed`, and one
/// listener using it.
fn routed(serial: u64, clusters: &[(&str, &str)], routed: &[&str]) -> Snapshot {
    let one = |kind, name: &str, body: &str, refs: &[&str]| {
        let r = Resource::new(kind, name, body.as_bytes())
            .with_refs(refs.iter().map(|s| s.to_string()));
        (r.name.clone(), Arc::new(r))
    };
    let cds = clusters.iter().map(|(n, b)| one(CDS, n, b, &[])).collect();
    let eds = clusters.iter().map(|(n, b)| one(EDS, n, b, &[])).collect();
    let route_body = format!("route to {}", routed.join(","));
    let rds = [one(RDS, "80", &route_body, routed)].into_iter().collect();
    let lds = [one(LDS, "0.0.0.0_80", "listener", &[])]
        .into_iter()
        .collect();
    Snapshot::from_resources(
        serial,
        Default::default(),
        vec![(CDS, cds), (EDS, eds), (LDS, lds), (RDS, rds)],
    )
}

fn ack(st: &mut StreamState, r: &Response, names: &[&str]) {
    let ack = RequestView {
        version: &r.version,
        ..req(&r.nonce, names)
    };
    let (v, _) = st.on_request(r.kind, &ack);
    assert!(matches!(v, Verdict::Ack { .. }), "{v:?}");
}

/// Envoy's start: CDS wildcard, EDS for its clusters, LDS wildcard, RDS "80"; all ACKed.
fn attached(s: &Snapshot) -> StreamState {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let cds = st.response_for(CDS, s, true).unwrap();
    ack(&mut st, &cds, &[]);
    let clusters: Vec<&str> = sent_names(&cds);
    st.on_request(EDS, &req("", &clusters));
    let eds = st.response_for(EDS, s, true).unwrap();
    ack(&mut st, &eds, &clusters);
    st.on_request(LDS, &req("", &[]));
    let lds = st.response_for(LDS, s, true).unwrap();
    ack(&mut st, &lds, &[]);
    let routes = names(&["80"]);
    st.on_request(RDS, &req("", &routes));
    let rds = st.response_for(RDS, s, true).unwrap();
    ack(&mut st, &rds, &routes);
    st
}

/// What the stream task does with a request (stream.rs `handle`): apply it, then send what
/// it made due.
fn handle(
    st: &mut StreamState,
    kind: ResourceType,
    r: RequestView<'_>,
    s: &Snapshot,
) -> Vec<Response> {
    let (verdict, consider) = st.on_request(kind, &r);
    if consider {
        st.responses_after_request(kind, s, true)
    } else if matches!(verdict, Verdict::Ack { .. } | Verdict::Nack(_)) {
        st.responses_for(s)
    } else {
        Vec::new()
    }
}

fn kinds(responses: &[Response]) -> Vec<ResourceType> {
    responses.iter().map(|r| r.kind).collect()
}

#[test]
fn a_route_to_a_new_cluster_waits_until_the_cluster_and_its_assignment_are_answered() {
    let s1 = routed(1, &[("a", "1")], &["a"]);
    let mut st = attached(&s1);
    let s2 = routed(2, &[("a", "1"), ("b", "1")], &["a", "b"]);
    let pushed = st.responses_for(&s2);
    assert_eq!(kinds(&pushed), [CDS], "the route naming b waits for b");
    let cds = &pushed[0];
    assert_eq!(sent_names(cds), ["a", "b"]);
    // Envoy ACKs the clusters; the route still waits for b's assignment, which Envoy asks
    // for next.
    let after_ack = handle(
        &mut st,
        CDS,
        RequestView {
            version: &cds.version,
            ..req(&cds.nonce, &[])
        },
        &s2,
    );
    assert!(
        !kinds(&after_ack).contains(&RDS),
        "the route waits until b's assignment went out and was answered: {:?}",
        kinds(&after_ack)
    );
    let eds_names = names(&["a", "b"]);
    let eds_nonce = st.get(EDS).nonce.clone().unwrap();
    let after_subscribe = handle(&mut st, EDS, req(&eds_nonce, &eds_names), &s2);
    assert_eq!(
        kinds(&after_subscribe),
        [EDS],
        "b's assignment, and still no route"
    );
    assert!(sent_names(&after_subscribe[0]).contains(&"b"));
    let eds = &after_subscribe[0];
    let after = handle(
        &mut st,
        EDS,
        RequestView {
            version: &eds.version,
            ..req(&eds.nonce, &eds_names)
        },
        &s2,
    );
    assert_eq!(kinds(&after), [RDS], "the route follows once b is warm");
}

#[test]
fn endpoint_pushes_do_not_hold_up_listeners_and_routes() {
    let s1 = routed(1, &[("a", "1")], &["a"]);
    let mut st = attached(&s1);
    // Only an endpoint changed, and the route changed too (a new domain, say): both go out.
    let s2 = Snapshot::from_resources(
        2,
        Default::default(),
        ResourceType::ALL
            .into_iter()
            .map(|k| {
                let mut by_name = s1.resources(k).by_name.clone();
                let changed = match k {
                    EDS => Some(Resource::new(EDS, "a", b"2")),
                    RDS => Some(Resource::new(RDS, "80", b"route v2").with_refs(["a".to_string()])),
                    _ => None,
                };
                if let Some(r) = changed {
                    by_name.insert(r.name.clone(), Arc::new(r));
                }
                (k, by_name)
            })
            .collect(),
    );
    let pushed = st.responses_for(&s2);
    assert_eq!(
        kinds(&pushed),
        [EDS, RDS],
        "an endpoint push is no reason to wait"
    );
}

#[test]
fn a_rejected_route_update_keeps_the_clusters_the_old_routes_use() {
    let s1 = routed(1, &[("a", "1"), ("b", "1")], &["a", "b"]);
    let mut st = attached(&s1);
    let s2 = routed(2, &[("a", "1")], &["a"]);
    let pushed = st.responses_for(&s2);
    assert_eq!(kinds(&pushed), [RDS]);
    let nack = RequestView {
        version: "",
        nonce: &pushed[0].nonce,
        names: &names(&["80"]),
        same_names: false,
        error: Some("route rejected"),
    };
    let after = handle(&mut st, RDS, nack, &s2);
    assert!(
        after.iter().all(|r| r.kind != CDS),
        "b stays while the proxy still runs the routes that use it"
    );
}

#[test]
fn a_cluster_is_removed_only_after_the_route_that_used_it_is_answered() {
    let s1 = routed(1, &[("a", "1"), ("b", "1")], &["a", "b"]);
    let mut st = attached(&s1);
    let s2 = routed(2, &[("a", "1")], &["a"]);
    let pushed = st.responses_for(&s2);
    let kinds: Vec<ResourceType> = pushed.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [RDS],
        "b stays (nothing to send for CDS yet); the route that drops b goes first"
    );
    // Until the route is answered, b stays, whatever else happens.
    assert!(st.responses_for(&s2).is_empty());
    ack(&mut st, &pushed[0], &names(&["80"]));
    let after = st.responses_for(&s2);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].kind, CDS);
    assert_eq!(sent_names(&after[0]), ["a"], "now b goes");
    assert_eq!(after[0].version, s2.resources(CDS).version);
    ack(&mut st, &after[0], &[]);
    assert!(st.responses_for(&s2).is_empty(), "and nothing more");
}

#[test]
fn a_removed_cluster_no_route_uses_goes_at_once() {
    let s1 = routed(1, &[("a", "1"), ("b", "1")], &["a"]);
    let mut st = attached(&s1);
    let s2 = routed(2, &[("a", "1")], &["a"]);
    let pushed = st.responses_for(&s2);
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].kind, CDS);
    assert_eq!(sent_names(&pushed[0]), ["a"]);
}

#[test]
fn a_first_listener_request_that_had_to_wait_is_still_answered() {
    let s = routed(1, &[("a", "1")], &["a"]);
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let cds = st.response_for(CDS, &s, true).unwrap();
    // LDS asked while CDS is unanswered: it waits...
    st.on_request(LDS, &req("", &[]));
    assert!(st.responses_after_request(LDS, &s, true).is_empty());
    // ...and is answered once CDS is.
    ack(&mut st, &cds, &[]);
    let after = st.responses_for(&s);
    assert_eq!(after.iter().map(|r| r.kind).collect::<Vec<_>>(), [LDS]);
}
