//! The service catalog: an index of namespaces, services and endpoint slices.
//!
//! Sources feed it [`CatalogEvent`]s; it applies them synchronously and says whether anything
//! changed. It knows nothing of Kubernetes clients, files or Envoy: its types are the domain
//! model that `translate` reads. A [`CatalogEvent::Reset`] replaces the whole state at once, so
//! a re-list can never be observed half-done. It logs which services each change concerns
//! ([`ChangeLog`]), so a snapshot build visits only those.

mod changes;
mod hashed;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::LazyLock;

pub use changes::{ChangeLog, Mark, Since};
pub use hashed::{content_hash, hash_of, Hashed};

use crate::mesh::MeshConfig;

/// The mesh config in force when the source provides none.
static DEFAULT_MESH: LazyLock<MeshConfig> = LazyLock::new(MeshConfig::default);

/// Namespace and name of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A namespace and its labels (discovery selectors match on them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// Namespace name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// How a service is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// A virtual IP in front of endpoints (ClusterIP, NodePort, LoadBalancer).
    ClusterIp,
    /// `clusterIP: None`: clients reach the endpoints directly.
    Headless,
    /// A DNS alias for a host outside the mesh.
    ExternalName(String),
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// Port name ("" for the unnamed single port).
    pub name: String,
    /// Service port number.
    pub port: u16,
    /// `appProtocol`, if set.
    pub app_protocol: Option<String>,
}

/// A Kubernetes Service reduced to what config is built from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// Namespace and name.
    pub key: ObjectKey,
    /// How it is reached.
    pub kind: ServiceKind,
    /// Virtual IPs (`spec.clusterIPs`, else `spec.clusterIP`); empty when headless, for an
    /// ExternalName, or when the source gives none. Part of the content hash.
    pub cluster_ips: Vec<IpAddr>,
    /// TCP ports (UDP and SCTP ports are left out).
    pub ports: Vec<ServicePort>,
}

/// One port of an endpoint slice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SlicePort {
    /// Name matching a service port name ("" when unnamed).
    pub name: String,
    /// Port number on the endpoints.
    pub port: u16,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Addresses of the endpoint (all of one family).
    pub addresses: Vec<IpAddr>,
    /// Ready to receive traffic (`conditions.ready`, unset counts as ready).
    pub ready: bool,
    /// Being shut down (`conditions.terminating`).
    pub terminating: bool,
}

/// A `discovery.k8s.io/v1` EndpointSlice of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    /// Namespace and slice name.
    pub key: ObjectKey,
    /// The service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    /// Ports.
    pub ports: Vec<SlicePort>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// Any object the catalog indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A service.
    Service(Service),
    /// An endpoint slice.
    EndpointSlice(EndpointSlice),
    /// The revision's mesh config (from ConfigMap `revplane-<revision>`).
    Mesh(MeshConfig),
}

/// The kinds of object the catalog indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// Namespaces.
    Namespace,
    /// Services.
    Service,
    /// Endpoint slices.
    EndpointSlice,
    /// The mesh config.
    Mesh,
}

/// Identifies an object for deletion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectRef {
    /// A namespace by name.
    Namespace(String),
    /// A service.
    Service(ObjectKey),
    /// An endpoint slice.
    EndpointSlice(ObjectKey),
    /// The mesh config (back to defaults).
    Mesh,
}

impl Object {
    /// The reference that identifies this object.
    pub fn reference(&self) -> ObjectRef {
        match self {
            Object::Namespace(ns) => ObjectRef::Namespace(ns.name.clone()),
            Object::Service(svc) => ObjectRef::Service(svc.key.clone()),
            Object::EndpointSlice(slice) => ObjectRef::EndpointSlice(slice.key.clone()),
            Object::Mesh(_) => ObjectRef::Mesh,
        }
    }

    /// The kind of this object.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Namespace(_) => ObjectKind::Namespace,
            Object::Service(_) => ObjectKind::Service,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Mesh(_) => ObjectKind::Mesh,
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectRef::Namespace(name) => write!(f, "Namespace {name}"),
            ObjectRef::Service(k) => write!(f, "Service {}/{}", k.namespace, k.name),
            ObjectRef::EndpointSlice(k) => write!(f, "EndpointSlice {}/{}", k.namespace, k.name),
            ObjectRef::Mesh => write!(f, "mesh config"),
        }
    }
}

/// A change a source reports.
#[derive(Clone, Debug, PartialEq)]
pub enum CatalogEvent {
    /// Add or replace one object.
    Apply(Object),
    /// Remove one object.
    Delete(ObjectRef),
    /// Replace the whole state with these objects, atomically.
    Reset(Vec<Object>),
    /// Replace every object of one kind with these, atomically (a watch re-list).
    Replace(ObjectKind, Vec<Object>),
}

/// The index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    namespaces: BTreeMap<String, Namespace>,
    services: BTreeMap<ObjectKey, Hashed<Service>>,
    slices: BTreeMap<ObjectKey, Hashed<EndpointSlice>>,
    /// Slice keys by the service they belong to.
    slices_by_service: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    mesh: Option<MeshConfig>,
    /// Which services the changes so far concerned (never part of equality).
    changes: ChangeLog,
}

impl Catalog {
    /// Applies one event; returns whether the catalog changed.
    pub fn handle(&mut self, event: CatalogEvent) -> bool {
        match event {
            CatalogEvent::Apply(object) => self.apply(object),
            CatalogEvent::Delete(object) => self.delete(&object),
            CatalogEvent::Reset(objects) => self.reset(objects),
            CatalogEvent::Replace(kind, objects) => self.replace_kind(kind, objects),
        }
    }

    /// Adds or replaces one object; returns whether anything changed.
    pub fn apply(&mut self, object: Object) -> bool {
        match object {
            Object::Namespace(ns) => {
                let name = ns.name.clone();
                let changed = replace(&mut self.namespaces, name.clone(), ns);
                if changed {
                    self.namespace_changed(&name);
                }
                changed
            }
            Object::Service(svc) => {
                let key = svc.key.clone();
                let changed = replace(&mut self.services, key.clone(), Hashed::new(svc));
                if changed {
                    self.changes.service(key);
                }
                changed
            }
            Object::EndpointSlice(slice) => {
                let key = slice.key.clone();
                let slice = Hashed::new(slice);
                let owner = ObjectKey::new(&key.namespace, &slice.service);
                if let Some(old) = self.slices.get(&key) {
                    if *old == slice {
                        return false;
                    }
                    let old_owner = old.service.clone();
                    self.unlink_slice(&key, &old_owner);
                    if old_owner != slice.service {
                        self.changes
                            .service(ObjectKey::new(&key.namespace, old_owner));
                    }
                }
                self.slices_by_service
                    .entry(owner.clone())
                    .or_default()
                    .insert(key.clone());
                self.slices.insert(key, slice);
                self.changes.service(owner);
                true
            }
            Object::Mesh(mesh) => {
                let changed = self.mesh.as_ref() != Some(&mesh);
                self.mesh = Some(mesh);
                if changed {
                    self.changes.everything();
                }
                changed
            }
        }
    }

    /// Removes one object; returns whether it was there.
    pub fn delete(&mut self, object: &ObjectRef) -> bool {
        match object {
            ObjectRef::Namespace(name) => {
                let removed = self.namespaces.remove(name).is_some();
                if removed {
                    self.namespace_changed(name);
                }
                removed
            }
            ObjectRef::Service(key) => {
                let removed = self.services.remove(key).is_some();
                if removed {
                    self.changes.service(key.clone());
                }
                removed
            }
            ObjectRef::EndpointSlice(key) => match self.slices.remove(key) {
                Some(old) => {
                    self.unlink_slice(key, &old.service);
                    self.changes
                        .service(ObjectKey::new(&key.namespace, &old.service));
                    true
                }
                None => false,
            },
            ObjectRef::Mesh => {
                let removed = self.mesh.take().is_some();
                if removed {
                    self.changes.everything();
                }
                removed
            }
        }
    }

    /// A namespace's labels decide whether its services are admitted: each of them changed.
    fn namespace_changed(&mut self, name: &str) {
        let first = ObjectKey::new(name, "");
        let keys: Vec<ObjectKey> = self
            .services
            .range(first..)
            .map(|(k, _)| k)
            .take_while(|k| k.namespace == name)
            .cloned()
            .collect();
        keys.into_iter().for_each(|k| self.changes.service(k));
    }

    /// Replaces everything with `objects`; returns whether anything changed.
    pub fn reset(&mut self, objects: Vec<Object>) -> bool {
        let mut next = Catalog::default();
        for object in objects {
            next.apply(object);
        }
        if next == *self {
            return false;
        }
        self.take_everything_from(next);
        true
    }

    /// Replaces every object of `kind` with `objects`; returns whether anything changed.
    pub fn replace_kind(&mut self, kind: ObjectKind, objects: Vec<Object>) -> bool {
        let mut next = self.clone();
        match kind {
            ObjectKind::Namespace => next.namespaces.clear(),
            ObjectKind::Service => next.services.clear(),
            ObjectKind::EndpointSlice => {
                next.slices.clear();
                next.slices_by_service.clear();
            }
            ObjectKind::Mesh => next.mesh = None,
        }
        for object in objects.into_iter().filter(|o| o.kind() == kind) {
            next.apply(object);
        }
        if next == *self {
            return false;
        }
        self.take_everything_from(next);
        true
    }

    /// Becomes `next`, keeping its own log (readers of this catalog stay its readers), where
    /// everything changed.
    fn take_everything_from(&mut self, next: Catalog) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.everything();
        *self = Catalog { changes, ..next };
    }

    fn unlink_slice(&mut self, key: &ObjectKey, service: &str) {
        let owner = ObjectKey::new(&key.namespace, service);
        if let Some(set) = self.slices_by_service.get_mut(&owner) {
            set.remove(key);
            if set.is_empty() {
                self.slices_by_service.remove(&owner);
            }
        }
    }

    /// All services (with their content hashes), ordered by namespace and name.
    pub fn services(&self) -> impl Iterator<Item = &Hashed<Service>> {
        self.services.values()
    }

    /// All namespaces, ordered by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// The endpoint slices of a service (with their content hashes), ordered by slice name.
    pub fn slices_of<'a>(
        &'a self,
        service: &ObjectKey,
    ) -> impl Iterator<Item = &'a Hashed<EndpointSlice>> + Clone {
        self.slices_by_service
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|key| self.slices.get(key))
    }

    /// A service by key.
    pub fn service(&self, key: &ObjectKey) -> Option<&Hashed<Service>> {
        self.services.get(key)
    }

    /// Which services the changes so far concerned.
    pub fn changes(&self) -> &ChangeLog {
        &self.changes
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// The mesh config in force (defaults when the source gave none).
    pub fn mesh(&self) -> &MeshConfig {
        self.mesh.as_ref().unwrap_or(&DEFAULT_MESH)
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Number of endpoint slices.
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }
}

fn replace<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, key: K, value: V) -> bool {
    match map.get(&key) {
        Some(old) if *old == value => false,
        _ => {
            map.insert(key, value);
            true
        }
    }
}

/// Small builders for tests in this crate and its integration tests.
#[doc(hidden)]
pub mod build;

#[cfg(test)]
mod tests;
