//! The snapshot: per resource type, name → (content-hash version, encoded bytes).
//!
//! A snapshot is immutable and shared (`Arc`) by every stream. Each resource is encoded once
//! when the snapshot is built; streams only copy bytes. Versions are content hashes, so two
//! replicas, or a restarted process, give identical config identical versions.

pub mod publisher;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::mesh::MeshConfig;
use crate::translate::Translation;

/// One encoded resource before it is versioned: (name, message bytes).
pub type Encoded = (String, Vec<u8>);

/// The xDS resource types revplane serves, in make-before-break push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
}

impl ResourceType {
    /// All types in push order: CDS → EDS → LDS → RDS.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type for a type URL, if served.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name used in metrics and debug output (`cds`, `eds`, `lds`, `rds`).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }

    /// Whether a SotW response must hold every subscribed resource (CDS, LDS) or may hold
    /// only changed ones (EDS, RDS).
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One encoded resource.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Resource name.
    pub name: String,
    /// Content hash of `body`.
    pub version: String,
    /// The encoded message (the `value` of its `Any`).
    pub body: Bytes,
}

/// All resources of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Hash over every (name, version) pair: changes iff any resource of the type changed.
    pub version: String,
    /// Resources by name.
    pub by_name: BTreeMap<String, Arc<Resource>>,
}

/// An immutable, versioned set of encoded resources of every type.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every published snapshot of this process.
    pub serial: u64,
    /// When the snapshot was built (push-time metrics start here).
    pub built: Instant,
    /// The mesh config the resources were built with.
    pub mesh: MeshConfig,
    types: [Resources; 4],
}

impl Snapshot {
    /// The resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &Resources {
        &self.types[kind.index()]
    }

    /// An empty snapshot (no resources of any type).
    pub fn empty(serial: u64) -> Snapshot {
        Snapshot {
            serial,
            built: Instant::now(),
            mesh: MeshConfig::default(),
            types: Default::default(),
        }
    }
}

/// Builds the next snapshot from a translation, reusing unchanged resources of `previous`.
///
/// `encodes` counts serializations (one per resource per build, whatever the stream count).
pub fn build(
    serial: u64,
    translation: &Translation,
    previous: Option<&Snapshot>,
    encodes: &Counter,
) -> Snapshot {
    let encode = |name: &str, message: &dyn Fn() -> Vec<u8>| {
        encodes.inc();
        (name.to_string(), message())
    };
    let clusters = translation
        .clusters
        .iter()
        .map(|c| encode(&c.name, &|| c.encode_to_vec()))
        .collect();
    let load_assignments = translation
        .load_assignments
        .iter()
        .map(|l| encode(&l.cluster_name, &|| l.encode_to_vec()))
        .collect();
    Snapshot {
        mesh: translation.mesh.clone(),
        ..Snapshot::from_encoded(
            serial,
            previous,
            vec![
                (ResourceType::Cluster, clusters),
                (ResourceType::Endpoint, load_assignments),
            ],
        )
    }
}

impl Snapshot {
    /// A snapshot of already encoded resources; types not listed are empty. Resources whose
    /// bytes equal those in `previous` are shared with it.
    pub fn from_encoded(
        serial: u64,
        previous: Option<&Snapshot>,
        encoded: Vec<(ResourceType, Vec<Encoded>)>,
    ) -> Snapshot {
        let mut types: [Resources; 4] = Default::default();
        for (kind, items) in encoded {
            let old = previous.map(|p| p.resources(kind));
            let mut by_name = BTreeMap::new();
            for (name, body) in items {
                let version = format!("{:016x}", xxh3_64(&body));
                let reused = old
                    .and_then(|o| o.by_name.get(&name))
                    .filter(|r| r.version == version && r.body == body)
                    .cloned();
                let resource = reused.unwrap_or_else(|| {
                    Arc::new(Resource {
                        name: name.clone(),
                        version,
                        body: Bytes::from(body),
                    })
                });
                by_name.insert(name, resource);
            }
            types[kind.index()] = Resources {
                version: type_version(&by_name),
                by_name,
            };
        }
        Snapshot {
            serial,
            built: Instant::now(),
            mesh: MeshConfig::default(),
            types,
        }
    }
}

fn type_version(by_name: &BTreeMap<String, Arc<Resource>>) -> String {
    if by_name.is_empty() {
        return "empty".to_string();
    }
    let mut hasher = Xxh3::new();
    for (name, r) in by_name {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(r.version.as_bytes());
    }
    format!("{:016x}", hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::{service, slice};
    use crate::catalog::{Catalog, Object};
    use crate::translate::translate;

    fn catalog(endpoint: &str) -> Catalog {
        let mut c = Catalog::default();
        c.apply(Object::Service(service("shop", "web", &[("http", 80)])));
        c.apply(Object::Service(service("shop", "api", &[("http", 80)])));
        c.apply(Object::EndpointSlice(slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080)],
            &[(endpoint, true, false)],
        )));
        c
    }

    #[test]
    fn versions_are_content_hashes_and_unchanged_resources_are_shared() {
        let counter = Counter::default();
        let a = build(1, &translate(&catalog("10.0.0.1")), None, &counter);
        let again = build(7, &translate(&catalog("10.0.0.1")), None, &counter);
        for t in ResourceType::ALL {
            assert_eq!(
                a.resources(t).version,
                again.resources(t).version,
                "same content, same version"
            );
        }
        let b = build(2, &translate(&catalog("10.0.0.2")), Some(&a), &counter);
        assert_eq!(
            a.resources(ResourceType::Cluster),
            b.resources(ResourceType::Cluster)
        );
        let (ea, eb) = (
            a.resources(ResourceType::Endpoint),
            b.resources(ResourceType::Endpoint),
        );
        assert_ne!(ea.version, eb.version);
        let api = "outbound|80||api.shop.svc.cluster.local";
        assert!(
            Arc::ptr_eq(&ea.by_name[api], &eb.by_name[api]),
            "unchanged resource reused"
        );
        let web = "outbound|80||web.shop.svc.cluster.local";
        assert_ne!(ea.by_name[web].version, eb.by_name[web].version);
        assert_eq!(counter.get(), 12, "4 resources encoded once per build");
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }
}
