//! The builder against a full translation: encodes counted, incremental builds equal to
//! fresh ones after every kind of change, and snapshots sharing what did not change.

use super::*;
use crate::catalog::build::{service, slice};
use crate::catalog::Object;
use crate::translate::translate;

fn catalog(services: usize) -> Catalog {
    let mut c = Catalog::default();
    for i in 0..services {
        let name = format!("s{i}");
        c.apply(Object::Service(service("shop", &name, &[("http", 80)])));
        c.apply(Object::EndpointSlice(slice(
            "shop",
            &format!("{name}-1"),
            &name,
            &[("http", 8080)],
            &[("10.0.0.1", true, false)],
        )));
    }
    c
}

#[test]
fn only_changed_services_are_encoded_again() {
    let encodes = Counter::default();
    let mut builder = SnapshotBuilder::new(encodes.clone());
    let mut c = catalog(100);
    let first = builder.build(1, &c);
    // 100 clusters + 100 assignments, PassthroughCluster and BlackHoleCluster, the
    // default listeners (virtualOutbound, 0.0.0.0_80; and 127.0.0.1_80 of NONE mode) and
    // routes ("80", and one per service for proxyless clients).
    assert_eq!(encodes.get(), 200 + 2 + 3 + 101);
    let same = builder.build(2, &c);
    assert_eq!(encodes.get(), 306, "nothing changed: nothing encoded");
    assert_eq!(
        first.resources(ResourceType::Endpoint),
        same.resources(ResourceType::Endpoint)
    );

    c.apply(Object::EndpointSlice(slice(
        "shop",
        "s7-1",
        "s7",
        &[("http", 8080)],
        &[("10.0.0.2", true, false)],
    )));
    let changed = builder.build(3, &c);
    assert_eq!(
        encodes.get(),
        307,
        "one assignment changed: it alone is encoded, once"
    );
    let name = "outbound|80||s8.shop.svc.cluster.local";
    assert!(Arc::ptr_eq(
        &first.resources(ResourceType::Endpoint).by_name[name],
        &changed.resources(ResourceType::Endpoint).by_name[name]
    ));
}

#[test]
fn incremental_builds_equal_a_full_translation() {
    let mut c = catalog(20);
    let mut builder = SnapshotBuilder::new(Counter::default());
    builder.build(1, &c);
    c.apply(Object::Service(service("shop", "s3", &[("http", 81)])));
    c.delete(&crate::catalog::ObjectRef::Service(ObjectKey::new(
        "shop", "s4",
    )));
    let incremental = builder.build(2, &c);
    let full = translate(&c);
    let names: Vec<&str> = incremental
        .resources(ResourceType::Cluster)
        .by_name
        .keys()
        .map(|k| &**k)
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    let expected: Vec<&str> = full.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, expected);
    for la in &full.load_assignments {
        let r = &incremental.resources(ResourceType::Endpoint).by_name[la.cluster_name.as_str()];
        assert_eq!(r.body(), la.encode_to_vec());
    }
}

/// Every type and the model of `incremental` equal those of a fresh builder's `full`.
fn assert_same(incremental: &Snapshot, full: &Snapshot, after: &str) {
    for kind in ResourceType::ALL {
        let (a, b) = (incremental.resources(kind), full.resources(kind));
        assert_eq!(a.version, b.version, "{kind:?} version after {after}");
        assert_eq!(a, b, "{kind:?} after {after}");
    }
    assert_eq!(
        incremental.views().map(|v| v.content_hash()),
        full.views().map(|v| v.content_hash()),
        "outbound model after {after}"
    );
    let proxyless = |s: &Snapshot| {
        let view = crate::snapshot::views::View {
            proxyless: true,
            ..Default::default()
        };
        s.resources_for(ResourceType::Cluster, &view)
    };
    assert_eq!(
        proxyless(incremental),
        proxyless(full),
        "proxyless after {after}"
    );
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Object {
    Object::Namespace(crate::catalog::Namespace {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// One change to a catalog, as a test applies it.
type Change = Box<dyn Fn(&mut Catalog)>;

#[test]
fn incremental_builds_equal_fresh_builds_after_every_kind_of_change() {
    use crate::catalog::ObjectRef;
    use crate::mesh::LabelSelector;

    let mut c = catalog(30);
    c.apply(namespace("shop", &[("mesh", "on")]));
    let mut builder = SnapshotBuilder::new(Counter::default());
    builder.build(1, &c);
    let selected = MeshConfig {
        discovery_selectors: vec![LabelSelector {
            match_labels: [("mesh".to_string(), "on".to_string())].into(),
            match_expressions: Vec::new(),
        }],
        lb_policy: LbPolicy::LeastRequest,
        ..Default::default()
    };
    fn endpoints(ip: &str) -> [(&str, bool, bool); 1] {
        [(ip, true, false)]
    }
    let changes: Vec<(&str, Change)> = vec![
        (
            "an endpoint change",
            Box::new(move |c| {
                c.apply(Object::EndpointSlice(slice(
                    "shop",
                    "s1-1",
                    "s1",
                    &[("http", 8080)],
                    &endpoints("10.0.0.9"),
                )));
            }),
        ),
        (
            "a second slice",
            Box::new(move |c| {
                c.apply(Object::EndpointSlice(slice(
                    "shop",
                    "s1-2",
                    "s1",
                    &[("http", 8080)],
                    &endpoints("10.0.1.9"),
                )));
            }),
        ),
        (
            "a slice moving to another service",
            Box::new(move |c| {
                c.apply(Object::EndpointSlice(slice(
                    "shop",
                    "s1-2",
                    "s2",
                    &[("http", 8080)],
                    &endpoints("10.0.1.9"),
                )));
            }),
        ),
        (
            "a slice deleted",
            Box::new(|c| {
                c.delete(&ObjectRef::EndpointSlice(ObjectKey::new("shop", "s2-1")));
            }),
        ),
        (
            "a service deleted",
            Box::new(|c| {
                c.delete(&ObjectRef::Service(ObjectKey::new("shop", "s3")));
            }),
        ),
        (
            "a service added in another namespace",
            Box::new(|c| {
                c.apply(Object::Service(service("pay", "ledger", &[("grpc", 9000)])));
            }),
        ),
        (
            "a service's ports changed",
            Box::new(|c| {
                c.apply(Object::Service(service(
                    "shop",
                    "s4",
                    &[("http", 80), ("tcp-db", 5432)],
                )));
            }),
        ),
        (
            "the mesh config selecting namespaces, least request",
            Box::new(move |c| {
                c.apply(Object::Mesh(selected.clone()));
            }),
        ),
        (
            "the selected namespace's labels changed",
            Box::new(|c| {
                c.apply(namespace("pay", &[("mesh", "on")]));
                c.apply(namespace("shop", &[]));
            }),
        ),
        (
            "an endpoint change of a service not admitted",
            Box::new(move |c| {
                c.apply(Object::EndpointSlice(slice(
                    "shop",
                    "s5-1",
                    "s5",
                    &[("http", 8080)],
                    &endpoints("10.0.2.9"),
                )));
            }),
        ),
        (
            "the namespace admitted again",
            Box::new(|c| {
                c.apply(namespace("shop", &[("mesh", "on")]));
            }),
        ),
        (
            "the mesh config deleted",
            Box::new(|c| {
                c.delete(&ObjectRef::Mesh);
            }),
        ),
        (
            "a reset to fewer objects",
            Box::new(|c| {
                let kept: Vec<Object> = c
                    .services()
                    .take(10)
                    .map(|s| Object::Service(s.object().clone()))
                    .collect();
                c.reset(kept);
            }),
        ),
        (
            "the services re-listed",
            Box::new(|c| {
                c.replace_kind(
                    crate::catalog::ObjectKind::Service,
                    vec![Object::Service(service("shop", "s0", &[("http", 80)]))],
                );
            }),
        ),
    ];
    for (serial, (what, change)) in changes.iter().enumerate() {
        change(&mut c);
        let incremental = builder.build(serial as u64 + 2, &c);
        let full = SnapshotBuilder::new(Counter::default()).build(1, &c);
        assert_same(&incremental, &full, what);
    }
}

#[test]
fn an_endpoint_change_shares_everything_else_with_the_last_snapshot() {
    let mut c = catalog(50);
    let mut builder = SnapshotBuilder::new(Counter::default());
    let first = builder.build(1, &c);
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "s7-1",
        "s7",
        &[("http", 8080)],
        &[("10.0.0.2", true, false)],
    )));
    let second = builder.build(2, &c);
    for kind in [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        assert!(
            Arc::ptr_eq(first.shared_resources(kind), second.shared_resources(kind)),
            "{kind:?}: the same set, memos and all"
        );
    }
    assert!(Arc::ptr_eq(first.views().unwrap(), second.views().unwrap()));
    let eds = |s: &Snapshot| s.resources(ResourceType::Endpoint).clone();
    let changed = eds(&second).changed_since(&eds(&first));
    let names: Vec<&str> = changed.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["outbound|80||s7.shop.svc.cluster.local"]);
    assert!(eds(&second).removed_since(&eds(&first)).is_empty());
}
