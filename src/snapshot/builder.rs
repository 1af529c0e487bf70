//! Incremental snapshot building: a service whose inputs did not change since the last build
//! is neither translated nor encoded again; its encoded resources are reused as they are.
//!
//! The inputs of a service's clusters (the Service and the mesh config) and of its
//! assignments (the Service, its EndpointSlices and the domain) are hashed and compared with
//! the last build's. So one endpoint change costs one translation of that service and one
//! serialization of its assignment, whatever the catalog size and however many streams
//! receive it. Listeners and routes come from the outbound model of the admitted services
//! ([`Views`]); its variants are kept as long as the model is unchanged, so an endpoint
//! change encodes no listener or route.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prost::Message;

use super::views::Views;
use super::{Resource, ResourceType, Resources, Snapshot};
use crate::catalog::{content_hash, hash_of, Catalog, EndpointSlice, Hashed, ObjectKey};
use crate::mesh::{LbPolicy, MeshConfig};
use crate::translate::cluster::{blackhole_cluster, passthrough_cluster};
use crate::translate::outbound::OutboundModel;
use crate::translate::proxyless::proxyless_cluster;
use crate::translate::{admitted_services, translate_service};

/// Encoded resources of one service from the last build, with hashes of what shaped them.
struct Built {
    cluster_inputs: u64,
    endpoint_inputs: u64,
    clusters: Vec<Arc<Resource>>,
    /// The clusters as proxyless gRPC clients take them, when those differ (a load-balancing
    /// policy other than round robin).
    proxyless: Vec<Arc<Resource>>,
    load_assignments: Vec<Arc<Resource>>,
}

/// Builds snapshots from the catalog, reusing the work of the previous build.
pub struct SnapshotBuilder {
    by_service: HashMap<ObjectKey, Built>,
    encodes: Counter,
    /// The listener and route variants of the last build's outbound model.
    views: Option<Arc<Views>>,
    /// `PassthroughCluster` and `BlackHoleCluster`, with the mesh config hash they were
    /// built with.
    special: Option<(u64, [Arc<Resource>; 2])>,
}

impl SnapshotBuilder {
    /// A builder that counts serializations in `encodes`.
    pub fn new(encodes: Counter) -> Self {
        SnapshotBuilder {
            by_service: HashMap::new(),
            encodes,
            views: None,
            special: None,
        }
    }

    /// The snapshot of `catalog` as it is now.
    pub fn build(&mut self, serial: u64, catalog: &Catalog) -> Snapshot {
        let mesh = catalog.mesh();
        // Gathered unordered and sorted once at the end: cheaper than inserting one by one.
        let mut clusters = Vec::with_capacity(self.by_service.len());
        let mut load_assignments = Vec::with_capacity(self.by_service.len());
        let mut proxyless = Vec::new();
        let mut next = HashMap::with_capacity(self.by_service.len());
        // The catalog hashed each object when it arrived; here only those hashes are combined.
        let (mesh_hash, domain_hash) = (
            content_hash(&mesh.translation_inputs()),
            content_hash(&mesh.domain),
        );
        for service in admitted_services(catalog) {
            // Looked up once, read twice (hashes, then translated if changed).
            let slices: Vec<&Hashed<EndpointSlice>> = catalog.slices_of(&service.key).collect();
            // Clusters depend on the service and the mesh config; assignments on the service,
            // its slices and the domain (part of their names).
            let cluster_inputs = hash_of(|h| {
                h.write_u64(service.content_hash());
                h.write_u64(mesh_hash);
            });
            let endpoint_inputs = hash_of(|h| {
                h.write_u64(service.content_hash());
                slices.iter().for_each(|s| h.write_u64(s.content_hash()));
                h.write_u64(domain_hash);
            });
            let built = match self.by_service.remove(&service.key) {
                Some(b)
                    if b.cluster_inputs == cluster_inputs
                        && b.endpoint_inputs == endpoint_inputs =>
                {
                    b
                }
                previous => {
                    let config =
                        translate_service(service, slices.iter().map(|s| s.object()), mesh);
                    let (old_clusters, old_assignments) = match previous {
                        Some(b) => (
                            (b.cluster_inputs == cluster_inputs)
                                .then_some((b.clusters, b.proxyless)),
                            (b.endpoint_inputs == endpoint_inputs).then_some(b.load_assignments),
                        ),
                        None => (None, None),
                    };
                    let (clusters, proxyless) = old_clusters.unwrap_or_else(|| {
                        let encoded = config
                            .clusters
                            .iter()
                            .map(|c| self.encode(ResourceType::Cluster, &c.name, c))
                            .collect();
                        let proxyless = if mesh.lb_policy == LbPolicy::RoundRobin {
                            Vec::new()
                        } else {
                            config
                                .clusters
                                .iter()
                                .filter_map(proxyless_cluster)
                                .map(|c| self.encode(ResourceType::Cluster, &c.name, &c))
                                .collect()
                        };
                        (encoded, proxyless)
                    });
                    Built {
                        cluster_inputs,
                        endpoint_inputs,
                        clusters,
                        proxyless,
                        load_assignments: old_assignments.unwrap_or_else(|| {
                            config
                                .load_assignments
                                .iter()
                                .map(|l| self.encode(ResourceType::Endpoint, &l.cluster_name, l))
                                .collect()
                        }),
                    }
                }
            };
            clusters.extend(built.clusters.iter().map(by_name));
            proxyless.extend(built.proxyless.iter().map(by_name));
            load_assignments.extend(built.load_assignments.iter().map(by_name));
            next.insert(service.key.clone(), built);
        }
        self.by_service = next;
        clusters.extend(self.special_clusters(mesh).iter().map(by_name));
        let views = self.views(catalog, mesh);
        let proxyless = (mesh.lb_policy != LbPolicy::RoundRobin)
            .then(|| Arc::new(Resources::new(BTreeMap::from_iter(proxyless))));
        Snapshot::from_resources(
            serial,
            mesh.clone(),
            vec![
                (ResourceType::Cluster, BTreeMap::from_iter(clusters)),
                (
                    ResourceType::Endpoint,
                    BTreeMap::from_iter(load_assignments),
                ),
            ],
        )
        .with_views(views, proxyless)
    }

    /// The views of the admitted services' outbound model: the last build's when the model
    /// is unchanged (its variants are reused as they are).
    fn views(&mut self, catalog: &Catalog, mesh: &MeshConfig) -> Arc<Views> {
        let model =
            OutboundModel::new(admitted_services(catalog).map(|s| s.object()), &mesh.domain);
        if let Some(views) = &self.views {
            if views.content_hash() == model.content_hash() {
                return views.clone();
            }
        }
        let views = Arc::new(Views::new(Arc::new(model), self.encodes.clone()));
        self.views = Some(views.clone());
        views
    }

    /// `PassthroughCluster` and `BlackHoleCluster` for every sidecar (REDIRECT mode sends
    /// unknown destinations there), encoded again only when the mesh config changes.
    fn special_clusters(&mut self, mesh: &MeshConfig) -> [Arc<Resource>; 2] {
        let hash = content_hash(&mesh.translation_inputs());
        if let Some((built, special)) = &self.special {
            if *built == hash {
                return special.clone();
            }
        }
        let passthrough = passthrough_cluster(mesh);
        let blackhole = blackhole_cluster();
        let special = [
            self.encode(ResourceType::Cluster, &passthrough.name, &passthrough),
            self.encode(ResourceType::Cluster, &blackhole.name, &blackhole),
        ];
        self.special = Some((hash, special.clone()));
        special
    }

    fn encode(&self, kind: ResourceType, name: &str, message: &impl Message) -> Arc<Resource> {
        self.encodes.inc();
        Arc::new(Resource::encode(kind, name, message))
    }
}

fn by_name(r: &Arc<Resource>) -> (Arc<str>, Arc<Resource>) {
    (r.name.clone(), r.clone())
}

#[cfg(test)]
mod tests {
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
            let r =
                &incremental.resources(ResourceType::Endpoint).by_name[la.cluster_name.as_str()];
            assert_eq!(r.body(), la.encode_to_vec());
        }
    }
}
