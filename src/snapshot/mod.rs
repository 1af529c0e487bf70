//! The snapshot: per resource type, name → (content-hash version, encoded bytes).
//!
//! A snapshot is immutable and shared (`Arc`) by every stream. Each resource is encoded once
//! when it changes ([`builder`]), already wrapped as a `DiscoveryResponse.resources` entry;
//! the bodies of responses are concatenations of those entries, built once per snapshot and
//! set of resources ([`bodies`]) and shared by every stream that sends the same set. Streams
//! copy no resource bytes. Versions are content hashes, so two replicas, or a restarted
//! process, give identical config identical versions.

pub mod bodies;
pub mod builder;
mod cache;
pub mod diffs;
pub mod digest;
pub mod selections;
pub mod views;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::{encode_length_delimiter, length_delimiter_len, Message};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::mesh::MeshConfig;

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
    /// Resource name (shared: streams key their bookkeeping by it without copying).
    pub name: Arc<str>,
    /// Content hash of the body.
    pub version: String,
    /// Where the encoded message (the `value` of its `Any`) starts in `entry`.
    body_start: usize,
    /// The resource as one `DiscoveryResponse.resources` entry (field tag, length, `Any`
    /// with type URL and `body`), ready to be concatenated into response bodies.
    pub entry: Bytes,
    /// Clusters this resource sends traffic to (listeners and routes; empty otherwise): a
    /// cluster is removed from a proxy only once nothing it holds refers to it.
    pub refs: Box<[Arc<str>]>,
    /// A hash of name and version: what identifies the resource in a set of them, so a
    /// response body's memo key hashes 8 bytes per resource, not its name and version.
    pub(crate) key: u64,
}

/// Resources of one type by name (the key is the resource's own name, shared), ordered by
/// name. A persistent map: a copy costs nothing and shares every part with the original, and
/// the next snapshot's map shares every part the change did not touch with the last one's.
pub type ByName = imbl::OrdMap<Arc<str>, Arc<Resource>>;

/// All resources of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Hash over every (name, version) pair: changes iff any resource of the type changed.
    pub version: String,
    /// Resources by name.
    pub by_name: ByName,
    /// What `version` is made of, kept for edits ([`digest::Edit`]).
    digest: digest::Digest,
    /// What subscribed name lists select (memoized).
    selections: selections::Selections,
    /// What changed since older versions of this type (memoized).
    diffs: diffs::Diffs,
    /// Every cluster a resource of this set refers to (memoized).
    referenced: cache::Cache<Option<Arc<HashSet<Arc<str>>>>>,
    /// Every resource in name order (what wildcard subscribers are sent), made once.
    all: cache::Cache<Option<selections::Selected>>,
}

impl Resources {
    /// The resources `names` (sorted) names, in its order; looked up once per list.
    pub fn select(&self, names: &selections::NameList) -> selections::Selected {
        self.selections.get(names, &self.by_name)
    }

    /// The resources added or changed since `older`, an earlier set of this type, by name;
    /// computed once per older version.
    pub fn changed_since(&self, older: &Resources) -> diffs::Changed {
        self.diffs
            .since(&older.version, &older.by_name, &self.by_name)
            .changed
    }

    /// The resources of `older` that this set no longer has, by name; computed once per
    /// older version.
    pub fn removed_since(&self, older: &Resources) -> diffs::Changed {
        self.diffs
            .since(&older.version, &older.by_name, &self.by_name)
            .removed
    }

    /// Every resource, in name order: one list shared by every wildcard subscriber's
    /// response instead of a copy of 20,000 pointers per stream; made once.
    pub fn all(&self) -> selections::Selected {
        self.all
            .lock()
            .get_or_insert_with(|| self.by_name.values().cloned().collect())
            .clone()
    }

    /// Every cluster some resource of this set refers to; computed once.
    pub fn referenced_clusters(&self) -> Arc<HashSet<Arc<str>>> {
        self.referenced
            .lock()
            .get_or_insert_with(|| {
                Arc::new(
                    self.by_name
                        .values()
                        .flat_map(|r| r.refs.iter().cloned())
                        .collect(),
                )
            })
            .clone()
    }

    /// A set of `by_name`, versioned by its content.
    pub fn new(by_name: ByName) -> Resources {
        let digest = digest::Digest::of(&by_name);
        Resources::versioned(by_name, digest)
    }

    /// A set of `by_name`, whose (name, version) pairs make `digest`.
    fn versioned(by_name: ByName, digest: digest::Digest) -> Resources {
        Resources {
            version: digest.version(),
            digest,
            by_name,
            selections: Default::default(),
            diffs: Default::default(),
            referenced: Default::default(),
            all: Default::default(),
        }
    }
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
    types: [Arc<Resources>; 4],
    bodies: bodies::ResponseBodies,
    /// Listener and route variants per kind of proxy (shared with the previous snapshot
    /// while the outbound model is unchanged); `None`: the types above serve everyone.
    views: Option<Arc<views::Views>>,
    /// Clusters as a proxyless gRPC client takes them, when they differ from the above.
    proxyless_clusters: Option<Arc<Resources>>,
}

impl Snapshot {
    /// The resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &Resources {
        &self.types[kind.index()]
    }

    /// The resources of one type, shared: a stream keeps what it last sent as this handle
    /// (without the rest of the snapshot), never as a copy.
    pub fn shared_resources(&self, kind: ResourceType) -> &Arc<Resources> {
        &self.types[kind.index()]
    }

    /// The resources of `kind` a proxy with `view` is served: its variant of listeners and
    /// routes, the proxyless clusters for a proxyless client, else the shared set.
    pub fn resources_for(&self, kind: ResourceType, view: &views::View) -> Arc<Resources> {
        if kind == ResourceType::Cluster && view.proxyless {
            if let Some(clusters) = &self.proxyless_clusters {
                return clusters.clone();
            }
        }
        self.views
            .as_ref()
            .and_then(|v| v.resources(kind, view, &self.mesh))
            .unwrap_or_else(|| self.types[kind.index()].clone())
    }

    /// The listener and route variants, when the snapshot has an outbound model.
    pub fn views(&self) -> Option<&Arc<views::Views>> {
        self.views.as_ref()
    }

    /// Adds the per-proxy variants (the builder's last step): `views` serves listeners and
    /// routes, whose default variants become the snapshot's own, and `proxyless_clusters`,
    /// if any, the clusters of proxyless clients.
    pub fn with_views(
        mut self,
        views: Arc<views::Views>,
        proxyless_clusters: Option<Arc<Resources>>,
    ) -> Snapshot {
        let [listeners, routes] = views.prepare(&self.mesh);
        self.types[ResourceType::Listener.index()] = listeners;
        self.types[ResourceType::Route.index()] = routes;
        self.views = Some(views);
        self.proxyless_clusters = proxyless_clusters;
        self
    }
}

impl Resource {
    /// A resource of type `kind` versioned by the hash of its bytes.
    pub fn new(kind: ResourceType, name: &str, body: &[u8]) -> Resource {
        // The entry is `resources` (field 2) holding an `Any`: `type_url` (1), then `value` (2).
        // Written directly: building a `DiscoveryResponse` and an `Any` to encode them would
        // allocate the type URL and copy the body once more.
        const LEN_FIELD_1: u8 = 1 << 3 | 2;
        const LEN_FIELD_2: u8 = 2 << 3 | 2;
        let url = kind.type_url().as_bytes();
        let any_len = 1
            + length_delimiter_len(url.len())
            + url.len()
            + 1
            + length_delimiter_len(body.len())
            + body.len();
        let mut entry = Vec::with_capacity(1 + length_delimiter_len(any_len) + any_len);
        entry.push(LEN_FIELD_2);
        put_length(any_len, &mut entry);
        entry.push(LEN_FIELD_1);
        put_length(url.len(), &mut entry);
        entry.extend_from_slice(url);
        entry.push(LEN_FIELD_2);
        put_length(body.len(), &mut entry);
        let body_start = entry.len();
        entry.extend_from_slice(body);
        let version = xxh3_64(body);
        Resource {
            name: Arc::from(name),
            version: format!("{version:016x}"),
            body_start,
            entry: Bytes::from(entry),
            refs: Box::default(),
            key: xxh3_64_with_seed(name.as_bytes(), version),
        }
    }

    /// This resource, sending traffic to `clusters`.
    pub fn with_refs(mut self, clusters: impl IntoIterator<Item = String>) -> Resource {
        self.refs = clusters.into_iter().map(Arc::from).collect();
        self
    }

    /// `message` of type `kind`, encoded (once).
    pub fn encode(kind: ResourceType, name: &str, message: &impl Message) -> Resource {
        Resource::new(kind, name, &message.encode_to_vec())
    }

    /// The encoded message (the `value` of its `Any`).
    pub fn body(&self) -> &[u8] {
        &self.entry[self.body_start..]
    }
}

/// Appends a length prefix (a varint) to a `Vec`, which always has room.
fn put_length(len: usize, out: &mut Vec<u8>) {
    encode_length_delimiter(len, out).expect("a Vec grows as needed");
}

impl Snapshot {
    /// A snapshot of versioned resources; types not listed are empty.
    pub fn from_resources(
        serial: u64,
        mesh: MeshConfig,
        resources: Vec<(ResourceType, ByName)>,
    ) -> Snapshot {
        let sets = resources
            .into_iter()
            .map(|(kind, by_name)| (kind, Arc::new(Resources::new(by_name))))
            .collect();
        Snapshot::from_sets(serial, mesh, sets)
    }

    /// A snapshot of already versioned sets; types not listed are empty.
    pub fn from_sets(
        serial: u64,
        mesh: MeshConfig,
        sets: Vec<(ResourceType, Arc<Resources>)>,
    ) -> Snapshot {
        let mut types = empty_types();
        for (kind, resources) in sets {
            types[kind.index()] = resources;
        }
        Snapshot {
            serial,
            built: Instant::now(),
            mesh,
            types,
            bodies: Default::default(),
            views: None,
            proxyless_clusters: None,
        }
    }

    /// The body of a response holding exactly `resources` of type `kind`: their entries
    /// concatenated, built once per snapshot and set and shared by every stream sending it.
    pub fn response_body(&self, kind: ResourceType, resources: &selections::Selected) -> Bytes {
        self.bodies.get(kind, resources)
    }

    /// A snapshot of already encoded resources (tests and tools); types not listed are
    /// empty, the mesh config is the default.
    pub fn from_encoded(serial: u64, encoded: Vec<(ResourceType, Vec<Encoded>)>) -> Snapshot {
        let resources = encoded
            .into_iter()
            .map(|(kind, items)| {
                let by_name = items
                    .into_iter()
                    .map(|(name, body)| {
                        let r = Arc::new(Resource::new(kind, &name, &body));
                        (r.name.clone(), r)
                    })
                    .collect();
                (kind, by_name)
            })
            .collect();
        Snapshot::from_resources(serial, MeshConfig::default(), resources)
    }
}

fn empty_types() -> [Arc<Resources>; 4] {
    std::array::from_fn(|_| Arc::new(Resources::new(ByName::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn versions_are_content_hashes() {
        let a = Snapshot::from_encoded(
            1,
            vec![(ResourceType::Cluster, vec![("a".into(), b"x".to_vec())])],
        );
        let b = Snapshot::from_encoded(
            9,
            vec![(ResourceType::Cluster, vec![("a".into(), b"x".to_vec())])],
        );
        assert_eq!(
            a.resources(ResourceType::Cluster),
            b.resources(ResourceType::Cluster),
            "same content, same version"
        );
        let c = Snapshot::from_encoded(
            2,
            vec![(ResourceType::Cluster, vec![("a".into(), b"y".to_vec())])],
        );
        assert_ne!(
            a.resources(ResourceType::Cluster).version,
            c.resources(ResourceType::Cluster).version
        );
        assert_eq!(a.resources(ResourceType::Endpoint).version, "empty");
    }

    #[test]
    fn a_resource_entry_decodes_as_a_response_holding_it() {
        let r = Resource::new(ResourceType::Endpoint, "a", b"payload");
        let decoded = DiscoveryResponse::decode(r.entry.clone()).unwrap();
        assert_eq!(decoded.resources.len(), 1);
        assert_eq!(
            decoded.resources[0].type_url,
            ResourceType::Endpoint.type_url()
        );
        assert_eq!(decoded.resources[0].value, b"payload");
        assert_eq!(r.body(), b"payload");
        let expected = DiscoveryResponse {
            resources: vec![Any {
                type_url: ResourceType::Endpoint.type_url().to_string(),
                value: b"payload".to_vec(),
            }],
            ..Default::default()
        };
        assert_eq!(
            r.entry,
            expected.encode_to_vec(),
            "what prost writes, byte for byte"
        );
    }

    #[test]
    fn long_bodies_get_multi_byte_lengths() {
        let body = vec![7u8; 300];
        let r = Resource::new(ResourceType::Cluster, "c", &body);
        let decoded = DiscoveryResponse::decode(r.entry.clone()).unwrap();
        assert_eq!(decoded.resources[0].value, body);
        assert_eq!(r.body(), &body[..]);
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }
}
