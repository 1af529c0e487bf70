//! The index: apply/delete/reset/replace and which services each change concerns.

use super::build::*;
use super::*;

#[test]
fn apply_is_idempotent_and_reports_change() {
    let mut c = Catalog::default();
    assert!(c.apply(Object::Service(service("shop", "web", &[("http", 80)]))));
    assert!(!c.apply(Object::Service(service("shop", "web", &[("http", 80)]))));
    assert!(c.apply(Object::Service(service("shop", "web", &[("http", 81)]))));
    assert_eq!(c.service_count(), 1);
}

#[test]
fn cluster_ips_are_part_of_a_services_content() {
    let plain = Hashed::new(service("shop", "web", &[("http", 80)]));
    let mut with_ip = service("shop", "web", &[("http", 80)]);
    with_ip.cluster_ips = vec!["10.96.0.10".parse().unwrap()];
    let with_ip = Hashed::new(with_ip);
    assert_ne!(plain.content_hash(), with_ip.content_hash());
    let mut c = Catalog::default();
    c.apply(Object::Service(plain.object().clone()));
    assert!(
        c.apply(Object::Service(with_ip.object().clone())),
        "a new cluster IP is a change"
    );
}

#[test]
fn slices_are_indexed_by_service_and_follow_relabels() {
    let mut c = Catalog::default();
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-1",
        "web",
        &[],
        &[],
    )));
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-2",
        "web",
        &[],
        &[],
    )));
    let web = ObjectKey::new("shop", "web");
    assert_eq!(c.slices_of(&web).count(), 2);
    // web-2 moves to another service.
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-2",
        "api",
        &[],
        &[],
    )));
    assert_eq!(c.slices_of(&web).count(), 1);
    assert_eq!(c.slices_of(&ObjectKey::new("shop", "api")).count(), 1);
    assert!(c.delete(&ObjectRef::EndpointSlice(ObjectKey::new("shop", "web-1"))));
    assert_eq!(c.slices_of(&web).count(), 0);
    assert!(!c.delete(&ObjectRef::EndpointSlice(ObjectKey::new("shop", "web-1"))));
}

#[test]
fn replacing_one_kind_keeps_the_others() {
    let mut c = Catalog::default();
    c.apply(Object::Service(service("shop", "web", &[("http", 80)])));
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-1",
        "web",
        &[],
        &[],
    )));
    let relisted = vec![Object::Service(service("shop", "api", &[("http", 80)]))];
    assert!(c.replace_kind(ObjectKind::Service, relisted.clone()));
    assert!(!c.replace_kind(ObjectKind::Service, relisted));
    assert_eq!(c.service_count(), 1);
    assert_eq!(c.slice_count(), 1, "slices untouched by a service re-list");
    let mesh = MeshConfig {
        domain: "example.org".into(),
        ..Default::default()
    };
    assert!(c.apply(Object::Mesh(mesh)));
    assert_eq!(c.mesh().domain, "example.org");
    assert!(c.delete(&ObjectRef::Mesh));
    assert_eq!(c.mesh().domain, "cluster.local");
}

#[test]
fn reset_replaces_atomically_and_detects_no_change() {
    let mut c = Catalog::default();
    let objects = vec![
        Object::Service(service("shop", "web", &[("http", 80)])),
        Object::EndpointSlice(slice("shop", "web-1", "web", &[("http", 8080)], &[])),
    ];
    assert!(c.reset(objects.clone()));
    assert!(!c.reset(objects));
    assert!(c.reset(vec![Object::Service(service(
        "pay",
        "ledger",
        &[("grpc", 9000)]
    ))]));
    assert_eq!(c.service_count(), 1);
    assert_eq!(c.slice_count(), 0);
    assert_eq!(c.services().next().unwrap().key.name, "ledger");
}

fn changed_since(c: &Catalog, mark: Mark) -> Vec<String> {
    match c.changes().since(Some(mark)) {
        Since::Everything => vec!["everything".to_string()],
        Since::Services(keys) => keys
            .into_iter()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect(),
    }
}

#[test]
fn changes_name_the_services_they_concern() {
    let mut c = Catalog::default();
    c.apply(Object::Service(service("shop", "web", &[("http", 80)])));
    c.apply(Object::Service(service("shop", "api", &[("http", 80)])));
    c.apply(Object::Service(service("pay", "ledger", &[("http", 80)])));
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-1",
        "web",
        &[],
        &[],
    )));
    let mark = c.changes().mark();
    assert!(!c.apply(Object::Service(service("shop", "web", &[("http", 80)]))));
    assert_eq!(
        changed_since(&c, mark),
        Vec::<String>::new(),
        "no change, nothing logged"
    );
    // A slice moving from web to api concerns both.
    c.apply(Object::EndpointSlice(slice(
        "shop",
        "web-1",
        "api",
        &[],
        &[],
    )));
    assert_eq!(changed_since(&c, mark), ["shop/api", "shop/web"]);
    let mark = c.changes().mark();
    c.delete(&ObjectRef::EndpointSlice(ObjectKey::new("shop", "web-1")));
    c.delete(&ObjectRef::Service(ObjectKey::new("pay", "ledger")));
    assert_eq!(changed_since(&c, mark), ["pay/ledger", "shop/api"]);
    // A namespace's labels concern each of its services.
    let mark = c.changes().mark();
    c.apply(Object::Namespace(Namespace {
        name: "shop".into(),
        labels: [("mesh".to_string(), "on".to_string())].into(),
    }));
    assert_eq!(changed_since(&c, mark), ["shop/api", "shop/web"]);
    let mark = c.changes().mark();
    c.delete(&ObjectRef::Namespace("shop".into()));
    assert_eq!(changed_since(&c, mark), ["shop/api", "shop/web"]);
}

#[test]
fn the_mesh_config_a_reset_or_a_relist_change_everything_for_the_same_readers() {
    let mut c = Catalog::default();
    c.apply(Object::Service(service("shop", "web", &[("http", 80)])));
    let mark = c.changes().mark();
    c.apply(Object::Mesh(MeshConfig::default()));
    assert_eq!(changed_since(&c, mark), ["everything"]);
    let mark = c.changes().mark();
    c.reset(vec![Object::Service(service(
        "shop",
        "api",
        &[("http", 80)],
    ))]);
    assert_eq!(changed_since(&c, mark), ["everything"]);
    let mark = c.changes().mark();
    c.replace_kind(ObjectKind::Service, vec![]);
    assert_eq!(changed_since(&c, mark), ["everything"]);
    let mark = c.changes().mark();
    c.apply(Object::Service(service("shop", "web", &[("http", 80)])));
    assert_eq!(changed_since(&c, mark), ["shop/web"], "still the same log");
    assert_eq!(
        changed_since(&c.clone(), mark),
        ["everything"],
        "a copy is another catalog"
    );
}
