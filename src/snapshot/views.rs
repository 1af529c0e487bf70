//! What each kind of proxy is served of a snapshot's listeners and routes (DESIGN.md §4).
//!
//! Clusters and assignments are the same for every Envoy; listeners and routes are not: a
//! sidecar's listeners depend on its interception mode and listener address, its routes on its
//! namespace (short names), and a proxyless gRPC client asks for API listeners by name. Each
//! distinct [`View`] key gets its own set of resources, translated from the snapshot's
//! [`OutboundModel`] and encoded **once** — by the first stream that needs it — then shared by
//! every stream with the same key. A [`Views`] lives as long as the model is unchanged, so an
//! endpoint change (a new snapshot, the same model) encodes no listener or route again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prometheus_client::metrics::counter::Counter;
use prost::Message;

use super::{Resource, ResourceType, Resources};
use crate::mesh::MeshConfig;
use crate::revision::ProxyIdentity;
use crate::translate::listener::{listener_clusters, sidecar_listeners, Interception};
use crate::translate::outbound::{Conflict, OutboundModel};
use crate::translate::proxyless::{proxyless_listeners, proxyless_routes};
use crate::translate::route::{route_clusters, sidecar_route_plans};

/// Distinct variants kept per model; beyond this a variant is built for its stream alone
/// (bounded memory whatever the clients' metadata says).
const MAX_VARIANTS: usize = 1024;

/// Service ports from which a route variant's sidecar and proxyless halves are built on two
/// threads (a thread costs more than the work below this).
const PARALLEL_ROUTES: usize = 1000;

/// How one proxy sees the config, from its node (fixed for the stream's life).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct View {
    /// A proxyless gRPC client rather than an Envoy.
    pub proxyless: bool,
    /// The proxy's namespace (`NAMESPACE`): short names route only within it.
    pub namespace: Option<Arc<str>>,
    /// `INTERCEPTION_MODE`, when the proxy names one (else the mesh config's).
    pub interception: Option<Arc<str>>,
    /// `OUTBOUND_LISTENER_ADDRESS` as given.
    pub listener_address: Option<Arc<str>>,
}

impl View {
    /// The view of an admitted proxy.
    pub fn of(identity: &ProxyIdentity) -> View {
        View {
            proxyless: identity.proxyless,
            namespace: identity.namespace.as_deref().map(Arc::from),
            interception: identity.interception_mode.as_deref().map(Arc::from),
            listener_address: identity.outbound_listener_address.as_deref().map(Arc::from),
        }
    }

    /// How the sidecar's listeners bind, resolved with the mesh default; an address that
    /// does not parse is ignored (the default applies).
    fn interception(&self, mesh: &MeshConfig) -> Interception {
        Interception::resolve(
            self.interception.as_deref(),
            self.listener_address.as_deref(),
            mesh.interception,
        )
    }

    fn key(&self, kind: ResourceType, mesh: &MeshConfig) -> Option<Key> {
        match kind {
            ResourceType::Listener if self.proxyless => {
                Some(Key::ProxylessListeners(self.namespace.clone()))
            }
            ResourceType::Listener => Some(Key::Sidecar(self.interception(mesh))),
            ResourceType::Route => Some(Key::Routes(self.namespace.clone())),
            ResourceType::Cluster | ResourceType::Endpoint => None,
        }
    }
}

/// One variant's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Sidecar(Interception),
    ProxylessListeners(Option<Arc<str>>),
    Routes(Option<Arc<str>>),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = |n: &Option<Arc<str>>| n.as_deref().unwrap_or("-").to_string();
        match self {
            Key::Sidecar(Interception::Redirect { virtual_outbound }) => {
                write!(f, "listeners REDIRECT {virtual_outbound}")
            }
            Key::Sidecar(Interception::None { bind }) => write!(f, "listeners NONE {bind}"),
            Key::ProxylessListeners(n) => write!(f, "listeners proxyless namespace {}", ns(n)),
            Key::Routes(n) => write!(f, "routes namespace {}", ns(n)),
        }
    }
}

/// A variant: its resources and what was left out of them.
#[derive(Debug)]
struct Variant {
    resources: Arc<Resources>,
    conflicts: Vec<Conflict>,
}

/// The listener and route variants of one outbound model.
#[derive(Debug)]
pub struct Views {
    model: Arc<OutboundModel>,
    /// The model's content hash, computed once.
    hash: u64,
    /// Namespaces that have a service in the model: only their proxies see short names, so
    /// every other namespace shares the variant of no namespace.
    namespaces: HashSet<String>,
    encodes: Counter,
    memo: Mutex<HashMap<Key, Arc<OnceLock<Arc<Variant>>>>>,
    /// Conflicts already logged (each once per model, whatever the number of variants).
    logged: Mutex<HashSet<Conflict>>,
}

/// One variant as `/debug/config` shows it.
#[derive(Debug)]
pub struct VariantStatus {
    /// Which proxies it is for.
    pub key: String,
    /// Its resources.
    pub resources: Arc<Resources>,
    /// What was left out, and why.
    pub conflicts: Vec<Conflict>,
}

impl Views {
    /// The views of `model`, counting encodes in `encodes`.
    pub fn new(model: Arc<OutboundModel>, encodes: Counter) -> Views {
        Views {
            hash: model.content_hash(),
            namespaces: model.ports.iter().map(|p| p.namespace.clone()).collect(),
            model,
            encodes,
            memo: Mutex::new(HashMap::new()),
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// The model the views are built from.
    pub fn model(&self) -> &OutboundModel {
        &self.model
    }

    /// The model's content hash.
    pub fn content_hash(&self) -> u64 {
        self.hash
    }

    /// The variants built so far.
    pub fn len(&self) -> usize {
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no variant was built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A namespace without services sees what a proxy of no namespace sees.
    fn relevant(&self, namespace: &Option<Arc<str>>) -> Option<Arc<str>> {
        namespace
            .as_ref()
            .filter(|n| self.namespaces.contains(&***n))
            .cloned()
    }

    /// The resources of `kind` a proxy with `view` is served (`None` for CDS and EDS, which
    /// are the same for every Envoy).
    pub fn resources(
        &self,
        kind: ResourceType,
        view: &View,
        mesh: &MeshConfig,
    ) -> Option<Arc<Resources>> {
        let key = match view.key(kind, mesh)? {
            Key::Routes(ns) => Key::Routes(self.relevant(&ns)),
            Key::ProxylessListeners(ns) => Key::ProxylessListeners(self.relevant(&ns)),
            key => key,
        };
        Some(self.variant(key).resources.clone())
    }

    /// Builds what every snapshot serves or reports at once, and returns the default
    /// listeners and routes (of a proxy whose node says nothing). NONE mode's listeners are
    /// built too, whoever connects: their conflicts (two TCP services on one port) are
    /// reported as soon as the config has them, not when a proxy asks.
    pub fn prepare(&self, mesh: &MeshConfig) -> [Arc<Resources>; 2] {
        let default = View::default();
        let none = View {
            interception: Some(Arc::from("NONE")),
            ..Default::default()
        };
        self.resources(ResourceType::Listener, &none, mesh);
        [ResourceType::Listener, ResourceType::Route].map(|kind| {
            self.resources(kind, &default, mesh)
                .expect("listeners and routes have variants")
        })
    }

    fn variant(&self, key: Key) -> Arc<Variant> {
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            match memo.get(&key) {
                Some(cell) => Some(cell.clone()),
                None if memo.len() < MAX_VARIANTS => {
                    let cell = Arc::new(OnceLock::new());
                    memo.insert(key.clone(), cell.clone());
                    Some(cell)
                }
                None => None,
            }
        };
        // Built outside the lock: other keys are not held up; streams of the same key wait
        // for the first one's build.
        match cell {
            Some(cell) => cell.get_or_init(|| Arc::new(self.build(&key))).clone(),
            None => Arc::new(self.build(&key)),
        }
    }

    fn build(&self, key: &Key) -> Variant {
        let model = &self.model;
        let (by_name, conflicts) = match key {
            Key::Sidecar(interception) => {
                let (listeners, conflicts) = sidecar_listeners(model, interception);
                let encoded = listeners
                    .iter()
                    .map(|l| self.encode(ResourceType::Listener, &l.name, l, listener_clusters(l)));
                (encoded.collect(), conflicts)
            }
            Key::ProxylessListeners(namespace) => {
                let listeners = proxyless_listeners(model, namespace.as_deref());
                let encoded = listeners
                    .iter()
                    .map(|l| self.encode(ResourceType::Listener, &l.name, l, listener_clusters(l)));
                (encoded.collect(), Vec::new())
            }
            Key::Routes(namespace) => {
                // Each configuration is encoded as soon as it is made (and a large sidecar
                // one a virtual host at a time): holding thousands of route messages first
                // costs more in fresh memory than building them does.
                let sidecar = || {
                    let (routes, conflicts) = sidecar_route_plans(model, namespace.as_deref());
                    let encoded: Vec<_> = routes
                        .into_iter()
                        .map(|r| {
                            let (name, bytes, clusters) = r.encode();
                            self.encoded(ResourceType::Route, &name, &bytes, clusters)
                        })
                        .collect();
                    (encoded, conflicts)
                };
                let proxyless = || -> Vec<_> {
                    let encode = |r: RouteConfiguration| {
                        self.encode(ResourceType::Route, &r.name, &r, route_clusters(&r))
                    };
                    proxyless_routes(model).map(encode).collect()
                };
                // Two independent halves of about the same size: on a large model (the first
                // build's critical path) they are made on two cores.
                let ((mut encoded, conflicts), more) = if model.ports.len() >= PARALLEL_ROUTES {
                    std::thread::scope(|scope| {
                        let more = scope.spawn(proxyless);
                        let sidecar = sidecar();
                        let more = more.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                        (sidecar, more)
                    })
                } else {
                    (sidecar(), proxyless())
                };
                encoded.extend(more);
                (encoded.into_iter().collect(), conflicts)
            }
        };
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        for c in &conflicts {
            if logged.insert(c.clone()) {
                tracing::warn!(
                    listener = %c.listener,
                    kept = %c.kept,
                    dropped = %c.dropped,
                    "left out of the config: {}",
                    c.reason
                );
            }
        }
        drop(logged);
        Variant {
            resources: Arc::new(Resources::new(by_name)),
            conflicts,
        }
    }

    fn encode(
        &self,
        kind: ResourceType,
        name: &str,
        message: &impl Message,
        clusters: Vec<String>,
    ) -> (Arc<str>, Arc<Resource>) {
        self.encoded(kind, name, &message.encode_to_vec(), clusters)
    }

    /// [`Views::encode`] for a message encoded already.
    fn encoded(
        &self,
        kind: ResourceType,
        name: &str,
        body: &[u8],
        clusters: Vec<String>,
    ) -> (Arc<str>, Arc<Resource>) {
        self.encodes.inc();
        let r = Arc::new(Resource::new(kind, name, body).with_refs(clusters));
        (r.name.clone(), r)
    }

    /// Every variant built so far, ordered by key.
    pub fn status(&self) -> Vec<VariantStatus> {
        let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<VariantStatus> = memo
            .iter()
            .filter_map(|(key, cell)| {
                let v = cell.get()?;
                Some(VariantStatus {
                    key: key.to_string(),
                    resources: v.resources.clone(),
                    conflicts: v.conflicts.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::service;
    use crate::catalog::{Catalog, Object};
    use crate::snapshot::builder::SnapshotBuilder;

    type Ports<'a> = &'a [(&'a str, u16)];

    fn snapshot(services: &[(&str, &str, Ports)]) -> crate::snapshot::Snapshot {
        let mut catalog = Catalog::default();
        for (ns, name, ports) in services {
            catalog.apply(Object::Service(service(ns, name, ports)));
        }
        SnapshotBuilder::new(Counter::default()).build(1, &catalog)
    }

    fn view(namespace: &str) -> View {
        View {
            namespace: Some(Arc::from(namespace)),
            ..Default::default()
        }
    }

    #[test]
    fn namespaces_without_services_share_one_route_variant() {
        let s = snapshot(&[("shop", "web", &[("http", 80)])]);
        let routes = |v: &View| s.resources_for(ResourceType::Route, v);
        let none = routes(&View::default());
        assert!(Arc::ptr_eq(&routes(&view("empty-1")), &none));
        assert!(Arc::ptr_eq(&routes(&view("empty-2")), &none));
        assert!(
            !Arc::ptr_eq(&routes(&view("shop")), &none),
            "shop's proxies see the short name web"
        );
        let keys: Vec<String> = s
            .views()
            .unwrap()
            .status()
            .iter()
            .map(|v| v.key.clone())
            .collect();
        assert_eq!(
            keys.iter().filter(|k| k.starts_with("routes")).count(),
            2,
            "{keys:?}"
        );
    }

    #[test]
    fn conflicts_are_reported_before_any_proxy_asks() {
        let s = snapshot(&[
            ("shop", "a", &[("tcp-db", 5432)]),
            ("shop", "b", &[("tcp-db", 5432)]),
        ]);
        let conflicts: Vec<Conflict> = s
            .views()
            .unwrap()
            .status()
            .into_iter()
            .flat_map(|v| v.conflicts)
            .collect();
        assert!(
            conflicts.iter().any(|c| c.listener == "127.0.0.1_5432"
                && c.kept.starts_with("shop/a")
                && c.dropped.starts_with("shop/b")),
            "{conflicts:?}"
        );
    }

    #[test]
    fn an_unchanged_model_keeps_its_views_across_snapshots() {
        let mut catalog = Catalog::default();
        catalog.apply(Object::Service(service("shop", "web", &[("http", 80)])));
        let mut builder = SnapshotBuilder::new(Counter::default());
        let first = builder.build(1, &catalog);
        let again = builder.build(2, &catalog);
        assert!(Arc::ptr_eq(first.views().unwrap(), again.views().unwrap()));
        catalog.apply(Object::Service(service("shop", "api", &[("http", 80)])));
        let changed = builder.build(3, &catalog);
        assert!(!Arc::ptr_eq(
            first.views().unwrap(),
            changed.views().unwrap()
        ));
    }
}
