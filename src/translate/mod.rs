//! Translation: pure functions from the catalog (and a revision's mesh config) to Envoy protos.
//!
//! Nothing here does I/O, knows a Kubernetes client or a gRPC server: every rule is a plain
//! function, unit-tested with builders.
//!
//! What each kind of Service becomes (one cluster per TCP service port, DESIGN.md §4):
//! - ClusterIP (and NodePort/LoadBalancer): an EDS cluster whose ClusterLoadAssignment holds the
//!   ready endpoints of the service's EndpointSlices.
//! - Headless (`clusterIP: None`): the same EDS cluster. Clients of a headless service reach the
//!   pods directly, which is what an EDS cluster over the pod addresses does.
//! - ExternalName: a `STRICT_DNS` cluster resolving `spec.externalName` on the port, with its
//!   endpoint inline and no ClusterLoadAssignment in EDS (there are no endpoints to watch).
//!
//! Listeners and routes come from an [`outbound::OutboundModel`] of the admitted services,
//! built once per snapshot: [`listener`] (sidecar LDS, REDIRECT or NONE), [`route`] (sidecar
//! RDS), [`proxyless`] (gRPC clients' LDS, RDS and CDS). [`protocol`] decides HTTP, HTTP/2 or
//! TCP for CDS and LDS alike.

pub mod cluster;
pub mod endpoint;
mod filters;
pub mod listener;
pub mod outbound;
pub mod protocol;
pub mod proxyless;
pub mod route;
#[cfg(test)]
mod testing;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

use crate::catalog::{Catalog, EndpointSlice, Hashed, Service, ServiceKind, ServicePort};

pub use crate::mesh::{LbPolicy, MeshConfig};

/// Config translated from a catalog state ([`translate`]: ordered by cluster name) or from
/// one service ([`translate_service`]: in the order of its ports).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// One cluster per TCP service port.
    pub clusters: Vec<Cluster>,
    /// One ClusterLoadAssignment per EDS cluster.
    pub load_assignments: Vec<ClusterLoadAssignment>,
}

/// The services the mesh config's discovery selectors admit.
pub fn admitted_services(catalog: &Catalog) -> impl Iterator<Item = &Hashed<Service>> {
    let mesh = catalog.mesh();
    catalog
        .services()
        .filter(move |s| mesh.admits(catalog.namespace(&s.key.namespace).map(|ns| &ns.labels)))
}

/// Translates one service with its slices.
pub fn translate_service<'a>(
    service: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    mesh: &MeshConfig,
) -> Translation {
    let mut out = Translation::default();
    for port in &service.ports {
        let name = cluster::cluster_name(service, port.port, &mesh.domain);
        out.push_port(name, service, port, slices.clone(), mesh);
    }
    out
}

/// Translates the whole catalog, shaped by its mesh config: only services of namespaces the
/// discovery selectors admit. (The publisher translates service by service through
/// `snapshot::SnapshotBuilder`, which skips unchanged services; this is the reference.)
pub fn translate(catalog: &Catalog) -> Translation {
    let mesh = catalog.mesh();
    // A Cluster is large: order the cluster names first, then translate each port straight
    // into place, rather than sorting the translated protos. The sort is stable, so ports
    // of equal names keep the catalog's order, as before.
    let mut ports: Vec<(String, &Service, &ServicePort)> = admitted_services(catalog)
        .flat_map(|service| {
            service.ports.iter().map(move |port| {
                let name = cluster::cluster_name(service, port.port, &mesh.domain);
                (name, service.object(), port)
            })
        })
        .collect();
    ports.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Translation {
        clusters: Vec::with_capacity(ports.len()),
        load_assignments: Vec::with_capacity(ports.len()),
    };
    for (name, service, port) in ports {
        let slices = catalog.slices_of(&service.key).map(Hashed::object);
        out.push_port(name, service, port, slices, mesh);
    }
    out
}

impl Translation {
    /// Appends the cluster (and assignment, for EDS) of one service port named `name`.
    fn push_port<'a>(
        &mut self,
        name: String,
        service: &Service,
        port: &ServicePort,
        slices: impl Iterator<Item = &'a EndpointSlice>,
        mesh: &MeshConfig,
    ) {
        match &service.kind {
            ServiceKind::ExternalName(host) => {
                self.clusters
                    .push(cluster::dns_cluster(name, host, port, mesh));
            }
            ServiceKind::ClusterIp | ServiceKind::Headless => {
                self.load_assignments
                    .push(endpoint::load_assignment(name.clone(), port, slices));
                self.clusters.push(cluster::eds_cluster(name, port, mesh));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::{service, slice};
    use crate::catalog::Object;

    #[test]
    fn one_cluster_per_port_and_a_load_assignment_even_without_slices() {
        let mut catalog = Catalog::default();
        catalog.apply(Object::Service(service(
            "shop",
            "web",
            &[("http", 80), ("admin", 9090)],
        )));
        let t = translate(&catalog);
        let names: Vec<_> = t.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "outbound|80||web.shop.svc.cluster.local",
                "outbound|9090||web.shop.svc.cluster.local"
            ]
        );
        assert_eq!(t.load_assignments.len(), 2);
        assert!(t.load_assignments.iter().all(|l| l.endpoints.is_empty()));
    }

    #[test]
    fn discovery_selectors_pick_namespaces_by_label() {
        use crate::catalog::Namespace;
        use crate::mesh::LabelSelector;
        let mut catalog = Catalog::default();
        catalog.apply(Object::Service(service("shop", "web", &[("http", 80)])));
        catalog.apply(Object::Service(service("batch", "job", &[("http", 80)])));
        let ns = |name: &str, labels: &[(&str, &str)]| {
            Object::Namespace(Namespace {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        catalog.apply(ns("shop", &[("mesh", "on")]));
        catalog.apply(ns("batch", &[]));
        assert_eq!(
            translate(&catalog).clusters.len(),
            2,
            "no selectors: everything"
        );
        catalog.apply(Object::Mesh(MeshConfig {
            discovery_selectors: vec![LabelSelector {
                match_labels: [("mesh".to_string(), "on".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }));
        let t = translate(&catalog);
        assert_eq!(t.clusters.len(), 1);
        assert!(t.clusters[0].name.contains("web.shop"));
        assert_eq!(t.load_assignments.len(), 1);
        catalog.apply(ns("batch", &[("mesh", "on")]));
        assert_eq!(
            translate(&catalog).clusters.len(),
            2,
            "relabeling brings services in"
        );
    }

    #[test]
    fn external_name_becomes_a_dns_cluster_without_eds() {
        let mut catalog = Catalog::default();
        let mut ext = service("shop", "payments-api", &[("https", 443)]);
        ext.kind = ServiceKind::ExternalName("api.example.com".into());
        catalog.apply(Object::Service(ext));
        catalog.apply(Object::EndpointSlice(slice(
            "shop",
            "stray",
            "payments-api",
            &[("https", 443)],
            &[("10.0.0.1", true, false)],
        )));
        let t = translate(&catalog);
        assert_eq!(t.clusters.len(), 1);
        assert!(t.load_assignments.is_empty());
        let la = t.clusters[0].load_assignment.as_ref().unwrap();
        assert_eq!(endpoint::socket_addresses(la), ["api.example.com:443"]);
    }
}
