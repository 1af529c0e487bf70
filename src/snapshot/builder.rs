//! Incremental snapshot building: work in proportion to what changed.
//!
//! The catalog logs which services each change concerns ([`ChangeLog`]); a build visits only
//! those (every service after a change of the mesh config, a re-list, or on the first build).
//! For a visited service, the inputs of its clusters (the Service and the mesh config) and of
//! its assignments (the Service, its EndpointSlices and the domain) are hashed and compared
//! with the last build's: only what changed is translated and encoded again. The per-type sets
//! are the last build's, edited ([`Edit`]): the new snapshot shares every untouched resource
//! and map node with the last one, and its versions are updated, not recomputed. So one
//! endpoint change costs one translation of that service, one serialization of its assignment
//! and a few map-node copies, whatever the catalog size and however many streams receive it.
//! Listeners and routes come from the outbound model of the admitted services ([`Views`]);
//! the model is rebuilt only when a service (not just its endpoints) came, went or changed,
//! and its variants are kept as long as it is unchanged.
//!
//! [`ChangeLog`]: crate::catalog::ChangeLog

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prost::Message;

use super::digest::Edit;
use super::views::Views;
use super::{Resource, ResourceType, Resources, Snapshot};
use crate::catalog::{
    content_hash, hash_of, Catalog, EndpointSlice, Hashed, Mark, ObjectKey, Service, Since,
};
use crate::mesh::{LbPolicy, MeshConfig};
use crate::translate::cluster::{blackhole_cluster, passthrough_cluster};
use crate::translate::outbound::OutboundModel;
use crate::translate::proxyless::proxyless_cluster;
use crate::translate::{admitted_services, translate_service};

/// Encoded resources of one service from the last build, with hashes of what shaped them.
struct Built {
    /// The Service's own content hash (the outbound model reads the Service alone).
    service: u64,
    cluster_inputs: u64,
    endpoint_inputs: u64,
    clusters: Vec<Arc<Resource>>,
    /// The clusters as proxyless gRPC clients take them, when those differ (a load-balancing
    /// policy other than round robin).
    proxyless: Vec<Arc<Resource>>,
    load_assignments: Vec<Arc<Resource>>,
}

/// Hashes of the mesh config's parts that resources depend on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MeshInputs {
    /// Everything translation reads (clusters).
    translation: u64,
    /// The domain (assignments: it is part of their names).
    domain: u64,
}

/// The sets the last build published, which the next one edits.
struct Last {
    /// The catalog's changes this build saw.
    mark: Mark,
    mesh: MeshInputs,
    clusters: Arc<Resources>,
    load_assignments: Arc<Resources>,
    proxyless: Arc<Resources>,
}

/// The edits of one build.
#[derive(Default)]
struct Edits {
    clusters: Edit,
    load_assignments: Edit,
    proxyless: Edit,
    /// A service came, went or changed (not only its endpoints): the outbound model may too.
    services_changed: bool,
}

impl Edits {
    fn of(last: Option<&Last>) -> Edits {
        match last {
            Some(last) => Edits {
                clusters: Edit::of(&last.clusters),
                load_assignments: Edit::of(&last.load_assignments),
                proxyless: Edit::of(&last.proxyless),
                services_changed: false,
            },
            None => Edits::default(),
        }
    }

    /// Puts in what `next` built in place of what `old` had (nothing when it is new).
    fn replace(&mut self, old: Option<&Built>, next: &Built) {
        let empty = Vec::new();
        let old_of = |f: fn(&Built) -> &Vec<Arc<Resource>>| old.map_or(&empty, f);
        swap(&mut self.clusters, old_of(|b| &b.clusters), &next.clusters);
        swap(
            &mut self.proxyless,
            old_of(|b| &b.proxyless),
            &next.proxyless,
        );
        swap(
            &mut self.load_assignments,
            old_of(|b| &b.load_assignments),
            &next.load_assignments,
        );
    }

    /// Takes out what `gone` had.
    fn remove(&mut self, gone: &Built) {
        swap(&mut self.clusters, &gone.clusters, &[]);
        swap(&mut self.proxyless, &gone.proxyless, &[]);
        swap(&mut self.load_assignments, &gone.load_assignments, &[]);
    }
}

/// The views of the admitted services' outbound model: `last` when the model is unchanged
/// (its variants are reused as they are).
fn outbound_views(catalog: &Catalog, last: Option<Arc<Views>>, encodes: Counter) -> Arc<Views> {
    let domain = &catalog.mesh().domain;
    let model = OutboundModel::new(admitted_services(catalog).map(|s| s.object()), domain);
    match last {
        Some(views) if views.content_hash() == model.content_hash() => views,
        _ => Arc::new(Views::new(Arc::new(model), encodes)),
    }
}

/// Replaces `old` with `next` in `edit`, unless they are the very same resources.
fn swap(edit: &mut Edit, old: &[Arc<Resource>], next: &[Arc<Resource>]) {
    let same = old.len() == next.len() && old.iter().zip(next).all(|(a, b)| Arc::ptr_eq(a, b));
    if same {
        return;
    }
    old.iter().for_each(|r| edit.remove(&r.name));
    next.iter().for_each(|r| edit.put(r.clone()));
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
    last: Option<Last>,
}

impl SnapshotBuilder {
    /// A builder that counts serializations in `encodes`.
    pub fn new(encodes: Counter) -> Self {
        SnapshotBuilder {
            by_service: HashMap::new(),
            encodes,
            views: None,
            special: None,
            last: None,
        }
    }

    /// The snapshot of `catalog` as it is now.
    pub fn build(&mut self, serial: u64, catalog: &Catalog) -> Snapshot {
        let mesh = catalog.mesh();
        // The catalog hashed each object when it arrived; here only those hashes are combined.
        let inputs = MeshInputs {
            translation: content_hash(&mesh.translation_inputs()),
            domain: content_hash(&mesh.domain),
        };
        let last = self.last.take();
        if last.is_none() {
            // No sets to edit: every resource goes in anew.
            self.by_service.clear();
        }
        // A changed mesh config already means everything to the catalog's log; checked here
        // too, as what the resources are built from.
        let mark = last.as_ref().filter(|l| l.mesh == inputs).map(|l| l.mark);
        let since = catalog.changes().since(mark);
        let mut edits = Edits::of(last.as_ref());
        let everything = since == Since::Everything;
        match since {
            Since::Services(keys) => {
                for key in &keys {
                    self.update(key, catalog, inputs, &mut edits);
                }
            }
            Since::Everything => {
                // The listeners and routes of the outbound model are built on another core
                // meanwhile: on a first build they take about as long as the services.
                let (last_views, encodes) = (self.views.clone(), self.encodes.clone());
                let views = std::thread::scope(|scope| {
                    let views = scope.spawn(|| {
                        let views = outbound_views(catalog, last_views, encodes);
                        views.prepare(mesh);
                        views
                    });
                    let gone: Vec<ObjectKey> = (self.by_service.keys())
                        .filter(|k| catalog.service(k).is_none())
                        .cloned()
                        .collect();
                    for key in gone.iter().chain(catalog.services().map(|s| &s.key)) {
                        self.update(key, catalog, inputs, &mut edits);
                    }
                    views
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e))
                });
                self.views = Some(views);
                for special in self.special_clusters(mesh) {
                    edits.clusters.put(special);
                }
            }
        }
        let views = match &self.views {
            Some(views) if !edits.services_changed || everything => views.clone(),
            _ => {
                let views = outbound_views(catalog, self.views.clone(), self.encodes.clone());
                self.views = Some(views.clone());
                views
            }
        };
        let finish = |edit: Edit, last: Option<&Arc<Resources>>| {
            let next = edit.finish();
            // The same content keeps the same set, and with it what streams memoized of it.
            match last {
                Some(last) if last.version == next.version => last.clone(),
                _ => Arc::new(next),
            }
        };
        let clusters = finish(edits.clusters, last.as_ref().map(|l| &l.clusters));
        let load_assignments = finish(
            edits.load_assignments,
            last.as_ref().map(|l| &l.load_assignments),
        );
        let proxyless = finish(edits.proxyless, last.as_ref().map(|l| &l.proxyless));
        self.last = Some(Last {
            mark: catalog.changes().mark(),
            mesh: inputs,
            clusters: clusters.clone(),
            load_assignments: load_assignments.clone(),
            proxyless: proxyless.clone(),
        });
        Snapshot::from_sets(
            serial,
            mesh.clone(),
            vec![
                (ResourceType::Cluster, clusters),
                (ResourceType::Endpoint, load_assignments),
            ],
        )
        .with_views(
            views,
            (mesh.lb_policy != LbPolicy::RoundRobin).then_some(proxyless),
        )
    }

    /// Brings the resources of the service `key` up to date in `edits`: translated and
    /// encoded again where its inputs changed, taken out if it is gone or no longer admitted.
    fn update(
        &mut self,
        key: &ObjectKey,
        catalog: &Catalog,
        inputs: MeshInputs,
        edits: &mut Edits,
    ) {
        let mesh = catalog.mesh();
        let previous = self.by_service.remove(key);
        let admitted = catalog
            .service(key)
            .filter(|s| mesh.admits(catalog.namespace(&s.key.namespace).map(|ns| &ns.labels)));
        let Some(service) = admitted else {
            if let Some(gone) = previous {
                edits.remove(&gone);
                edits.services_changed = true;
            }
            return;
        };
        // Looked up once, read twice (hashes, then translated if changed).
        let slices: Vec<&Hashed<EndpointSlice>> = catalog.slices_of(key).collect();
        // Clusters depend on the service and the mesh config; assignments on the service,
        // its slices and the domain (part of their names).
        let cluster_inputs = hash_of(|h| {
            h.write_u64(service.content_hash());
            h.write_u64(inputs.translation);
        });
        let endpoint_inputs = hash_of(|h| {
            h.write_u64(service.content_hash());
            slices.iter().for_each(|s| h.write_u64(s.content_hash()));
            h.write_u64(inputs.domain);
        });
        let built = match previous {
            Some(b)
                if b.cluster_inputs == cluster_inputs && b.endpoint_inputs == endpoint_inputs =>
            {
                b
            }
            previous => {
                edits.services_changed |=
                    previous.as_ref().map(|b| b.service) != Some(service.content_hash());
                let built = self.translate(
                    service,
                    &slices,
                    mesh,
                    (cluster_inputs, endpoint_inputs),
                    previous.as_ref(),
                );
                edits.replace(previous.as_ref(), &built);
                built
            }
        };
        self.by_service.insert(key.clone(), built);
    }

    /// Translates `service` and encodes what of it changed since `previous`.
    fn translate(
        &self,
        service: &Hashed<Service>,
        slices: &[&Hashed<EndpointSlice>],
        mesh: &MeshConfig,
        (cluster_inputs, endpoint_inputs): (u64, u64),
        previous: Option<&Built>,
    ) -> Built {
        let config = translate_service(service, slices.iter().map(|s| s.object()), mesh);
        let old_clusters = previous
            .filter(|b| b.cluster_inputs == cluster_inputs)
            .map(|b| (b.clusters.clone(), b.proxyless.clone()));
        let old_assignments = previous
            .filter(|b| b.endpoint_inputs == endpoint_inputs)
            .map(|b| b.load_assignments.clone());
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
        let load_assignments = old_assignments.unwrap_or_else(|| {
            config
                .load_assignments
                .iter()
                .map(|l| self.encode(ResourceType::Endpoint, &l.cluster_name, l))
                .collect()
        });
        Built {
            service: service.content_hash(),
            cluster_inputs,
            endpoint_inputs,
            clusters,
            proxyless,
            load_assignments,
        }
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

#[cfg(test)]
mod tests;
