//! Stream-state rules, one test per rule of DESIGN.md §3.

use super::*;
use crate::snapshot::Encoded;

fn snap(serial: u64, items: &[(ResourceType, &str, &str)]) -> Snapshot {
    let mut by_type: Vec<(ResourceType, Vec<Encoded>)> = Vec::new();
    for kind in ResourceType::ALL {
        let list = items
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, name, body)| (name.to_string(), body.as_bytes().to_vec()))
            .collect();
        by_type.push((kind, list));
    }
    Snapshot::from_encoded(serial, by_type)
}

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;

fn req<'a>(nonce: &'a str, names: &'a [&'a str]) -> RequestView<'a> {
    RequestView {
        version: "",
        nonce,
        names,
        same_names: false,
        error: None,
    }
}

fn names<'a>(n: &[&'a str]) -> Vec<&'a str> {
    n.to_vec()
}

fn sent_names(r: &Response) -> Vec<&str> {
    r.resources.iter().map(|r| &*r.name).collect()
}

#[test]
fn ack_records_version_and_sends_nothing_more() {
    let s = snap(1, &[(CDS, "a", "1"), (CDS, "b", "1")]);
    let mut st = StreamState::default();
    let (v, consider) = st.on_request(CDS, &req("", &[]));
    assert_eq!(v, Verdict::None);
    assert!(consider);
    let r = st
        .response_for(CDS, &s, true)
        .expect("first request is answered");
    assert_eq!(sent_names(&r), ["a", "b"]);
    let ack = RequestView {
        version: &r.version,
        ..req(&r.nonce, &[])
    };
    let (v, consider) = st.on_request(CDS, &ack);
    assert!(matches!(v, Verdict::Ack { .. }));
    assert!(!consider, "an ACK changes no subscription");
    assert_eq!(
        st.get(CDS).acked_version.as_deref(),
        Some(r.version.as_str())
    );
    assert!(st.responses_for(&s).is_empty());
}

#[test]
fn nack_is_recorded_and_not_answered_with_the_same_resources() {
    let s1 = snap(1, &[(CDS, "a", "1")]);
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let r = st.response_for(CDS, &s1, true).unwrap();
    let nack = RequestView {
        version: "",
        nonce: &r.nonce,
        names: &[],
        same_names: false,
        error: Some("bad cluster"),
    };
    let (v, consider) = st.on_request(CDS, &nack);
    assert!(matches!(v, Verdict::Nack(ref n) if n.message == "bad cluster"));
    assert!(!consider);
    assert_eq!(
        st.get(CDS).last_nack.as_ref().unwrap().message,
        "bad cluster"
    );
    assert_eq!(st.get(CDS).acked_version, None);
    assert!(
        st.responses_for(&s1).is_empty(),
        "same resources are not re-sent"
    );
    assert!(
        st.responses_for(&snap(2, &[(CDS, "a", "1")])).is_empty(),
        "nor equal content"
    );
    let fixed = st.responses_for(&snap(3, &[(CDS, "a", "2")]));
    assert_eq!(fixed.len(), 1, "the next change is sent");
}

#[test]
fn a_nack_counts_once_per_nonce_and_keeps_a_bounded_message() {
    let s1 = snap(1, &[(CDS, "a", "1")]);
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let r = st.response_for(CDS, &s1, true).unwrap();
    let message = "e".repeat(1 << 20);
    let version = "v".repeat(1 << 16);
    let nack = RequestView {
        version: &version,
        nonce: &r.nonce,
        names: &[],
        same_names: false,
        error: Some(&message),
    };
    let (v, _) = st.on_request(CDS, &nack);
    let Verdict::Nack(first) = v else {
        panic!("{v:?}")
    };
    assert!(first.message.len() < MAX_NACK_MESSAGE_BYTES + 32);
    assert!(first.message.ends_with("(1048576 bytes)"));
    assert!(first.version.len() < MAX_VERSION_BYTES + 32);
    for _ in 0..100 {
        let (v, consider) = st.on_request(CDS, &nack);
        assert_eq!(v, Verdict::Repeated, "the same nonce is answered once");
        assert!(!consider);
    }
    // A later request on the answered nonce without an error (Envoy clears error_detail
    // once sent) is not an ACK of the rejected response.
    let (v, _) = st.on_request(CDS, &req(&r.nonce, &[]));
    assert_eq!(v, Verdict::Repeated);
    assert!(st.get(CDS).last_nack.is_some(), "the NACK stands");
    assert_eq!(st.get(CDS).acked_version, None);
    // The next response is answered afresh.
    let next = st
        .response_for(CDS, &snap(2, &[(CDS, "a", "2")]), false)
        .unwrap();
    let (v, _) = st.on_request(CDS, &nack_of(&next, "again"));
    assert!(matches!(v, Verdict::Nack(ref n) if n.message == "again"));
}

fn nack_of<'a>(r: &'a Response, message: &'a str) -> RequestView<'a> {
    RequestView {
        version: "",
        nonce: &r.nonce,
        names: &[],
        same_names: false,
        error: Some(message),
    }
}

#[test]
fn an_ack_naming_the_same_list_keeps_the_subscription_unread() {
    let s = snap(1, &[(EDS, "a", "1"), (EDS, "b", "1")]);
    let mut st = StreamState::default();
    let both = names(&["a", "b"]);
    st.on_request(EDS, &req("", &both));
    let r = st.response_for(EDS, &s, true).unwrap();
    // The stream saw the same fingerprint: no names passed, none read.
    let ack = RequestView {
        version: &r.version,
        same_names: true,
        ..req(&r.nonce, &[])
    };
    let (v, consider) = st.on_request(EDS, &ack);
    assert!(matches!(v, Verdict::Ack { .. }));
    assert!(!consider);
    assert_eq!(st.get(EDS).names.iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(st.response_for(EDS, &s, false).is_none());
    // The same empty list is an unsubscription only when it is news.
    let none = RequestView {
        version: &r.version,
        ..req(&r.nonce, &[])
    };
    let (_, consider) = st.on_request(EDS, &none);
    assert!(consider, "an empty list after names unsubscribes");
    assert!(st.get(EDS).names.is_empty());
}

#[test]
fn stale_nonce_is_ignored_whole() {
    let s = snap(1, &[(EDS, "a", "1"), (EDS, "b", "1")]);
    let mut st = StreamState::default();
    let a = names(&["a"]);
    st.on_request(EDS, &req("", &a));
    let first = st.response_for(EDS, &s, true).unwrap();
    let both = names(&["a", "b"]);
    st.on_request(EDS, &req(&first.nonce, &both));
    let second = st.response_for(EDS, &s, true).unwrap();
    assert_eq!(sent_names(&second), ["b"]);
    let (v, consider) = st.on_request(EDS, &req(&first.nonce, &a));
    assert_eq!(v, Verdict::Stale);
    assert!(!consider);
    assert_eq!(st.get(EDS).names.iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn legacy_wildcard_then_named_then_explicit_star() {
    let s = snap(1, &[(CDS, "a", "1"), (CDS, "b", "1")]);
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    assert!(st.get(CDS).wildcard);
    let r = st.response_for(CDS, &s, true).unwrap();
    // An ACK with an empty list keeps a legacy wildcard subscription.
    st.on_request(CDS, &req(&r.nonce, &[]));
    assert!(st.get(CDS).wildcard);
    let only_a = names(&["a"]);
    let (_, consider) = st.on_request(CDS, &req(&r.nonce, &only_a));
    assert!(consider);
    assert!(!st.get(CDS).wildcard);
    let r = st.response_for(CDS, &s, true).unwrap();
    assert_eq!(sent_names(&r), ["a"]);
    let star = names(&["*", "a"]);
    st.on_request(CDS, &req(&r.nonce, &star));
    assert!(st.get(CDS).wildcard);
    let r = st.response_for(CDS, &s, true).unwrap();
    assert_eq!(sent_names(&r), ["a", "b"]);
    // After explicit names, an empty list unsubscribes from everything.
    st.on_request(CDS, &req(&r.nonce, &[]));
    assert!(!st.get(CDS).wildcard && st.get(CDS).names.is_empty());
}

#[test]
fn a_missing_name_is_remembered_and_sent_when_it_appears() {
    let mut st = StreamState::default();
    let want = names(&["late"]);
    st.on_request(EDS, &req("", &want));
    assert!(st
        .response_for(EDS, &snap(1, &[(EDS, "other", "1")]), true)
        .is_none());
    let rs = st.responses_for(&snap(2, &[(EDS, "other", "1"), (EDS, "late", "1")]));
    assert_eq!(rs.len(), 1);
    assert_eq!(sent_names(&rs[0]), ["late"]);
}

#[test]
fn cds_goes_before_eds_and_eds_sends_only_changes() {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let both = names(&["a", "b"]);
    st.on_request(EDS, &req("", &both));
    let s1 = snap(
        1,
        &[
            (CDS, "a", "1"),
            (CDS, "b", "1"),
            (EDS, "a", "1"),
            (EDS, "b", "1"),
        ],
    );
    let rs = st.responses_for(&s1);
    assert_eq!(rs.iter().map(|r| r.kind).collect::<Vec<_>>(), [CDS, EDS]);
    let s2 = snap(
        2,
        &[
            (CDS, "a", "1"),
            (CDS, "b", "1"),
            (CDS, "c", "1"),
            (EDS, "a", "1"),
            (EDS, "b", "2"),
        ],
    );
    let rs = st.responses_for(&s2);
    assert_eq!(rs.iter().map(|r| r.kind).collect::<Vec<_>>(), [CDS, EDS]);
    assert_eq!(sent_names(&rs[0]), ["a", "b", "c"], "CDS is full state");
    assert_eq!(
        sent_names(&rs[1]),
        ["b"],
        "EDS carries only the changed assignment"
    );
}

#[test]
fn nothing_is_resent_when_nothing_changed() {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    st.responses_for(&snap(1, &[(CDS, "a", "1")]));
    assert!(st.responses_for(&snap(2, &[(CDS, "a", "1")])).is_empty());
    assert!(
        st.responses_for(&snap(3, &[(CDS, "a", "1"), (EDS, "a", "9")]))
            .is_empty(),
        "EDS not subscribed"
    );
}

#[test]
fn empty_wildcard_cds_is_answered_and_removals_are_sent() {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let r = st
        .response_for(CDS, &snap(1, &[]), true)
        .expect("Envoy waits for this to initialise");
    assert!(r.resources.is_empty());
    st.responses_for(&snap(2, &[(CDS, "a", "1")]));
    let rs = st.responses_for(&snap(3, &[]));
    assert_eq!(rs.len(), 1);
    assert!(
        rs[0].resources.is_empty(),
        "removal of the last cluster is pushed"
    );
}

#[test]
fn nonces_are_unique_per_stream() {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let a = names(&["a"]);
    st.on_request(EDS, &req("", &a));
    let rs = st.responses_for(&snap(1, &[(CDS, "a", "1"), (EDS, "a", "1")]));
    assert_ne!(rs[0].nonce, rs[1].nonce);
}

#[test]
fn a_changed_cluster_gets_its_assignment_again_so_envoy_can_finish_warming_it() {
    let mut st = StreamState::default();
    st.on_request(CDS, &req("", &[]));
    let both = names(&["a", "b"]);
    st.on_request(EDS, &req("", &both));
    let s1 = snap(
        1,
        &[
            (CDS, "a", "1"),
            (CDS, "b", "1"),
            (EDS, "a", "1"),
            (EDS, "b", "1"),
        ],
    );
    st.responses_for(&s1);
    let s2 = snap(
        2,
        &[
            (CDS, "a", "2"),
            (CDS, "b", "1"),
            (EDS, "a", "1"),
            (EDS, "b", "1"),
        ],
    );
    let rs = st.responses_for(&s2);
    assert_eq!(rs.iter().map(|r| r.kind).collect::<Vec<_>>(), [CDS, EDS]);
    assert_eq!(
        sent_names(&rs[1]),
        ["a"],
        "unchanged assignment of the changed cluster only"
    );
    assert!(st
        .responses_for(&snap(
            3,
            &[
                (CDS, "a", "2"),
                (CDS, "b", "1"),
                (EDS, "a", "1"),
                (EDS, "b", "1")
            ]
        ))
        .is_empty());
}

#[test]
fn a_request_that_changes_cds_is_followed_by_the_pending_assignments() {
    let mut st = StreamState::default();
    let only_a = names(&["a"]);
    st.on_request(CDS, &req("", &only_a));
    st.on_request(EDS, &req("", &only_a));
    let s = snap(
        1,
        &[
            (CDS, "a", "1"),
            (CDS, "b", "1"),
            (EDS, "a", "1"),
            (EDS, "b", "1"),
        ],
    );
    let first = st.responses_for(&s);
    assert_eq!(first.len(), 2);
    // Subscribing to b as well: the CDS answer is followed by nothing else for EDS (b is not
    // subscribed for EDS yet and a did not change).
    let ab = names(&["a", "b"]);
    let rs = st.responses_after_request(CDS, &s, true);
    assert!(
        rs.is_empty(),
        "nothing changed for the subscribed CDS names yet"
    );
    st.on_request(CDS, &req(&first[0].nonce, &ab));
    let rs = st.responses_after_request(CDS, &s, true);
    assert_eq!(rs.iter().map(|r| r.kind).collect::<Vec<_>>(), [CDS]);
    assert_eq!(sent_names(&rs[0]), ["a", "b"]);
}

#[test]
fn a_name_dropped_and_subscribed_again_is_sent_again_unchanged() {
    let s = snap(1, &[(EDS, "a", "1"), (EDS, "b", "1")]);
    let mut st = StreamState::default();
    let both = names(&["a", "b"]);
    st.on_request(EDS, &req("", &both));
    let first = st.response_for(EDS, &s, true).unwrap();
    assert_eq!(sent_names(&first), ["a", "b"]);
    let a = names(&["a"]);
    st.on_request(EDS, &req(&first.nonce, &a));
    assert!(
        st.response_for(EDS, &s, true).is_none(),
        "nothing new for a"
    );
    let (_, consider) = st.on_request(EDS, &req(&first.nonce, &both));
    assert!(consider);
    let again = st.response_for(EDS, &s, true).unwrap();
    assert_eq!(
        sent_names(&again),
        ["b"],
        "b was dropped, so the client no longer has it"
    );
}

#[test]
fn switching_from_names_to_wildcard_sends_everything_once() {
    let s = snap(1, &[(EDS, "a", "1"), (EDS, "b", "1")]);
    let mut st = StreamState::default();
    let a = names(&["a"]);
    st.on_request(EDS, &req("", &a));
    let first = st.response_for(EDS, &s, true).unwrap();
    let star = names(&["*"]);
    st.on_request(EDS, &req(&first.nonce, &star));
    let all = st.response_for(EDS, &s, true).unwrap();
    assert_eq!(sent_names(&all), ["a", "b"]);
    st.on_request(EDS, &req(&all.nonce, &star));
    assert!(st.response_for(EDS, &s, true).is_none());
}

#[test]
fn eds_pushes_filter_the_shared_diff_by_each_subscription() {
    let s1 = snap(1, &[(EDS, "a", "1"), (EDS, "b", "1"), (EDS, "c", "1")]);
    let subscribe = |list: &[&str]| {
        let mut st = StreamState::default();
        st.on_request(EDS, &req("", &names(list)));
        st.response_for(EDS, &s1, true).expect("first response");
        st
    };
    let (mut ab, mut bc) = (subscribe(&["a", "b"]), subscribe(&["b", "c"]));
    // b and c change, d appears; nobody subscribes to d.
    let s2 = snap(
        2,
        &[
            (EDS, "a", "1"),
            (EDS, "b", "2"),
            (EDS, "c", "2"),
            (EDS, "d", "1"),
        ],
    );
    let to_ab = ab.response_for(EDS, &s2, false).expect("b changed");
    assert_eq!(sent_names(&to_ab), ["b"]);
    let r = bc.response_for(EDS, &s2, false).expect("b and c changed");
    assert_eq!(sent_names(&r), ["b", "c"]);
    assert!(Arc::ptr_eq(
        &s2.resources(EDS).changed_since(s1.resources(EDS)),
        &s2.resources(EDS).changed_since(s1.resources(EDS))
    ));

    // A name subscribed since is sent whole next time, with whatever changed.
    let (verdict, _) = ab.on_request(EDS, &req(&to_ab.nonce, &names(&["a", "b", "d"])));
    assert!(matches!(verdict, Verdict::Ack { .. }));
    let s3 = snap(
        3,
        &[
            (EDS, "a", "2"),
            (EDS, "b", "2"),
            (EDS, "c", "2"),
            (EDS, "d", "1"),
        ],
    );
    let r = ab.response_for(EDS, &s3, false).expect("a changed, d new");
    assert_eq!(sent_names(&r), ["a", "d"]);
    assert!(ab.response_for(EDS, &s3, false).is_none(), "then nothing");
}

const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::Route;

mod order;
