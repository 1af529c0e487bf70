//! Proxyless gRPC clients (gRFC A27): what grpc-core's xDS resolver asks for and accepts.
//!
//! A client dialling `xds:///<host>:<port>` asks LDS for the resource `<host>:<port>` exactly,
//! so every name a client may use gets an API listener of that name: `<fqdn>:<port>`,
//! `svc.ns.svc:<port>`, `svc.ns:<port>` and, for callers in the Service's namespace,
//! `svc:<port>`. Each listener's connection manager takes RDS named like the cluster
//! (`outbound|<port>||<fqdn>`, as Istio's grpcgen does); that route has one virtual host
//! answering to every name form (grpc matches the whole authority, port included) and one
//! route to the EDS cluster, without retry policy. Only HTTP and HTTP/2 ports of ClusterIP
//! and headless Services: grpc cannot use an ExternalName's DNS cluster.

#[cfg(test)]
mod tests;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, Route, RouteAction, RouteConfiguration,
    VirtualHost,
};

use super::filters::proxyless_hcm;
use super::outbound::OutboundModel;
use super::route::{prefix_slash, with_ports};

/// API listeners for a proxyless client in `caller_namespace` (None: no short names), one per
/// name a client may ask for, sorted by name.
pub fn proxyless_listeners(model: &OutboundModel, caller_namespace: Option<&str>) -> Vec<Listener> {
    let mut listeners = Vec::new();
    for p in model.ports.iter().filter(|p| p.is_proxyless()) {
        let hcm = proxyless_hcm(&p.cluster);
        for host in p.host_names(caller_namespace) {
            listeners.push(Listener {
                name: format!("{host}:{}", p.port),
                api_listener: Some(ApiListener {
                    api_listener: Some(hcm.clone()),
                }),
                ..Default::default()
            });
        }
    }
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    listeners.dedup_by(|a, b| a.name == b.name);
    listeners
}

/// One route configuration per proxyless port, named like its cluster, in the model's order,
/// each made when the iterator reaches it.
pub fn proxyless_routes(model: &OutboundModel) -> impl Iterator<Item = RouteConfiguration> + '_ {
    model
        .ports
        .iter()
        .filter(|p| p.is_proxyless())
        .map(|p| RouteConfiguration {
            name: p.cluster.clone(),
            virtual_hosts: vec![VirtualHost {
                name: format!("{}:{}", p.fqdn, p.port),
                // Every name form, the short one included: only clients that were given a
                // listener naming this route ever match it.
                domains: with_ports(p.host_names(Some(&p.namespace)), p.port),
                routes: vec![Route {
                    name: "default".to_string(),
                    r#match: Some(prefix_slash()),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(p.cluster.clone())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
}

/// The sidecar cluster as a proxyless client takes it: EDS clusters only (grpc-core refuses
/// other discovery types, so ExternalName, Passthrough and BlackHole clusters give `None`),
/// with `ROUND_ROBIN` (grpc-core refuses any other policy but `RING_HASH`).
pub fn proxyless_cluster(cluster: &Cluster) -> Option<Cluster> {
    let eds = ClusterDiscoveryType::Type(DiscoveryType::Eds as i32);
    if cluster.cluster_discovery_type != Some(eds) {
        return None;
    }
    Some(Cluster {
        lb_policy: LbPolicy::RoundRobin as i32,
        ..cluster.clone()
    })
}
