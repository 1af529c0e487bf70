//! Incremental snapshot building: a service whose inputs did not change since the last build
//! is neither translated nor encoded again; its encoded resources are reused as they are.
//!
//! The inputs of a service's clusters (the Service and the mesh config) and of its
//! assignments (the Service, its EndpointSlices and the domain) are hashed and compared with
//! the last build's. So one endpoint change costs one translation of that service and one
//! serialization of its assignment, whatever the catalog size and however many streams
//! receive it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prost::Message;

use super::{Resource, ResourceType, Snapshot};
use crate::catalog::{content_hash, hash_of, Catalog, EndpointSlice, Hashed, ObjectKey};
use crate::translate::{admitted_services, translate_service};

/// Encoded resources of one service from the last build, with hashes of what shaped them.
struct Built {
    cluster_inputs: u64,
    endpoint_inputs: u64,
    clusters: Vec<Arc<Resource>>,
    load_assignments: Vec<Arc<Resource>>,
}

/// Builds snapshots from the catalog, reusing the work of the previous build.
pub struct SnapshotBuilder {
    by_service: HashMap<ObjectKey, Built>,
    encodes: Counter,
}

impl SnapshotBuilder {
    /// A builder that counts serializations in `encodes`.
    pub fn new(encodes: Counter) -> Self {
        SnapshotBuilder {
            by_service: HashMap::new(),
            encodes,
        }
    }

    /// The snapshot of `catalog` as it is now.
    pub fn build(&mut self, serial: u64, catalog: &Catalog) -> Snapshot {
        let mesh = catalog.mesh();
        // Gathered unordered and sorted once at the end: cheaper than inserting one by one.
        let mut clusters = Vec::with_capacity(self.by_service.len());
        let mut load_assignments = Vec::with_capacity(self.by_service.len());
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
                            (b.cluster_inputs == cluster_inputs).then_some(b.clusters),
                            (b.endpoint_inputs == endpoint_inputs).then_some(b.load_assignments),
                        ),
                        None => (None, None),
                    };
                    Built {
                        cluster_inputs,
                        endpoint_inputs,
                        clusters: old_clusters.unwrap_or_else(|| {
                            config
                                .clusters
                                .iter()
                                .map(|c| self.encode(ResourceType::Cluster, &c.name, c))
                                .collect()
                        }),
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
            load_assignments.extend(built.load_assignments.iter().map(by_name));
            next.insert(service.key.clone(), built);
        }
        self.by_service = next;
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
        assert_eq!(encodes.get(), 200, "100 clusters + 100 assignments");
        let same = builder.build(2, &c);
        assert_eq!(encodes.get(), 200, "nothing changed: nothing encoded");
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
            201,
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
