//! Sidecar routes (RDS): one RouteConfiguration `"<port>"` per HTTP port, holding one virtual
//! host per HTTP Service on that port, as Istio (≤ 1.15, the layout DESIGN.md §4 fixes) lays
//! them out.
//!
//! A virtual host `<fqdn>:<port>` answers to each of these, with and without `:<port>`: the
//! FQDN, `svc` (callers in the Service's namespace only), `svc.ns`, `svc.ns.svc`, every cluster
//! IP (`[v6]` bracketed), and for a headless Service `*.`-prefixed forms of the DNS names (pod
//! hostnames). Envoy refuses a whole RouteConfiguration that repeats a domain, so the first
//! virtual host (by namespace, name) keeps it and the loser is reported. There is no
//! catch-all virtual host: an unknown `Host` gets Envoy's 404.

#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::route::v3::{
    retry_policy::{self, RetryHostPredicate},
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    Decorator, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use prost::Message;

use super::filters::{any, zero};
use super::outbound::{is_reserved, Conflict, OutboundModel, OutboundPort};
use crate::catalog::ServiceKind;

/// Istio's default `retry_on`.
pub const RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// Route configs `"<port>"` for a sidecar in `caller_namespace` (None: no short names), sorted
/// by name, and the domains left out.
pub fn sidecar_routes(
    model: &OutboundModel,
    caller_namespace: Option<&str>,
) -> (Vec<RouteConfiguration>, Vec<Conflict>) {
    let (routes, conflicts) = sidecar_route_plans(model, caller_namespace);
    (
        routes.into_iter().map(SidecarRoute::config).collect(),
        conflicts,
    )
}

/// What [`sidecar_routes`] gives, with each configuration's virtual hosts still to be made:
/// a large one is encoded one virtual host at a time ([`SidecarRoute::encode`]) instead of
/// holding thousands of them (each ~3.5 KB of message structs) at once.
pub fn sidecar_route_plans<'m>(
    model: &'m OutboundModel,
    caller_namespace: Option<&str>,
) -> (Vec<SidecarRoute<'m>>, Vec<Conflict>) {
    let mut routes = Vec::new();
    let mut conflicts = Vec::new();
    for group in model.by_port() {
        let port = group[0].port;
        if is_reserved(port) || !group.iter().any(|p| p.protocol.is_http()) {
            continue;
        }
        let name = port.to_string();
        // Every virtual host with the domains it asks for; then who keeps a repeated one.
        let wanted: Vec<(String, Vec<String>)> = group
            .iter()
            .filter(|p| p.protocol.is_http())
            .map(|p| {
                let host = format!("{}:{}", p.fqdn, p.port);
                (host, sidecar_domains(p, caller_namespace))
            })
            .collect();
        let kept = keep_first_owners(&wanted, &name, &mut conflicts);
        let mut hosts = Vec::with_capacity(wanted.len());
        for ((host, domains), (p, keep)) in wanted
            .into_iter()
            .zip(group.iter().filter(|p| p.protocol.is_http()).zip(kept))
        {
            let domains: Vec<String> = domains
                .into_iter()
                .zip(keep)
                .filter_map(|(d, keep)| keep.then_some(d))
                .collect();
            if !domains.is_empty() {
                hosts.push((p, host, domains));
            }
        }
        routes.push(SidecarRoute { name, hosts });
    }
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    (routes, conflicts)
}

/// One sidecar route configuration: its name, and each virtual host's port, name and the
/// domains it keeps.
pub struct SidecarRoute<'m> {
    /// The configuration's name (the port).
    pub name: String,
    hosts: Vec<(&'m OutboundPort, String, Vec<String>)>,
}

impl<'m> SidecarRoute<'m> {
    /// The configuration without its virtual hosts, and the virtual hosts, each made when
    /// the iterator reaches it.
    fn into_parts(self) -> (RouteConfiguration, impl Iterator<Item = VirtualHost> + 'm) {
        let head = RouteConfiguration {
            name: self.name,
            validate_clusters: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let hosts = self
            .hosts
            .into_iter()
            .map(|(p, name, domains)| VirtualHost {
                name,
                domains,
                routes: vec![default_route(p)],
                ..Default::default()
            });
        (head, hosts)
    }

    /// The whole configuration.
    pub fn config(self) -> RouteConfiguration {
        let (head, hosts) = self.into_parts();
        RouteConfiguration {
            virtual_hosts: hosts.collect(),
            ..head
        }
    }

    /// The configuration's name, its encoding (the bytes prost gives for [`Self::config`]),
    /// and the clusters it sends requests to (as [`route_clusters`] gives them). Only one
    /// virtual host exists at a time.
    pub fn encode(self) -> (String, Vec<u8>, Vec<String>) {
        let (head, hosts) = self.into_parts();
        // prost writes fields in the order the message declares them: `name` and
        // `virtual_hosts` come first, so the name alone, then each virtual host as field 2,
        // then every other field is the same encoding.
        let name = RouteConfiguration {
            name: head.name,
            ..Default::default()
        };
        let mut bytes = name.encode_to_vec();
        let mut clusters = Vec::new();
        for host in hosts {
            clusters.extend(host_clusters(&host));
            prost::encoding::message::encode(2, &host, &mut bytes);
        }
        let rest = RouteConfiguration {
            name: String::new(),
            ..head
        };
        rest.encode(&mut bytes).expect("a Vec grows as needed");
        clusters.sort_unstable();
        clusters.dedup();
        (name.name, bytes, clusters)
    }
}

/// Which domain of each virtual host it keeps: the first virtual host to ask for a domain has
/// it (a repeat within one virtual host is dropped quietly); a later one loses it, which is
/// reported in `conflicts` per (winner, loser) pair.
fn keep_first_owners(
    wanted: &[(String, Vec<String>)],
    listener: &str,
    conflicts: &mut Vec<Conflict>,
) -> Vec<Vec<bool>> {
    let mut owners: HashMap<&str, usize> =
        HashMap::with_capacity(wanted.iter().map(|(_, d)| d.len()).sum());
    let mut kept = Vec::with_capacity(wanted.len());
    for (index, (host, domains)) in wanted.iter().enumerate() {
        // Lost domains by the virtual host that kept them.
        let mut lost: Vec<(usize, Vec<&str>)> = Vec::new();
        let keep = domains
            .iter()
            .map(|domain| match owners.entry(domain) {
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    true
                }
                Entry::Occupied(owner) if *owner.get() == index => false,
                Entry::Occupied(owner) => {
                    match lost.iter_mut().find(|(o, _)| o == owner.get()) {
                        Some((_, ds)) => ds.push(domain),
                        None => lost.push((*owner.get(), vec![domain])),
                    }
                    false
                }
            })
            .collect();
        kept.push(keep);
        for (owner, ds) in lost {
            conflicts.push(Conflict {
                listener: listener.to_string(),
                kept: wanted[owner].0.clone(),
                dropped: host.clone(),
                reason: format!(
                    "domains {ds:?} already belong to the kept virtual host (the first \
                     by namespace/name); Envoy refuses a route configuration that repeats \
                     a domain"
                ),
            });
        }
    }
    kept
}

/// The domains of `p`'s virtual host for a caller in `caller_namespace`, each without and
/// then with `:<port>`.
pub fn sidecar_domains(p: &OutboundPort, caller_namespace: Option<&str>) -> Vec<String> {
    let names = p.host_names(caller_namespace);
    let mut hosts = names.clone();
    if p.kind == ServiceKind::Headless {
        hosts.extend(names.iter().map(|n| format!("*.{n}")));
    }
    hosts.extend(p.cluster_ips.iter().map(|ip| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }));
    with_ports(hosts, p.port)
}

/// Each host, then the host with `:<port>`.
pub(crate) fn with_ports(hosts: Vec<String>, port: u16) -> Vec<String> {
    let mut out = Vec::with_capacity(hosts.len() * 2);
    for h in hosts {
        let with_port = format!("{h}:{port}");
        out.push(h);
        out.push(with_port);
    }
    out
}

/// Istio's default outbound route: everything to the cluster, no timeout (gRPC deadlines
/// come from the `grpc-timeout` header, uncapped), Istio's default retry policy.
fn default_route(p: &OutboundPort) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(prefix_slash()),
        decorator: Some(Decorator {
            operation: format!("{}:{}/*", p.fqdn, p.port),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(p.cluster.clone())),
            timeout: zero(),
            retry_policy: Some(default_retry_policy()),
            max_stream_duration: Some(MaxStreamDuration {
                grpc_timeout_header_max: zero(),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `match: {prefix: "/"}`.
pub(crate) fn prefix_slash() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..Default::default()
    }
}

/// Istio's default retry policy: 2 retries on connect failure, refused stream, gRPC
/// unavailable/cancelled, each on another host when there is one.
fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: RETRY_ON.to_string(),
        num_retries: Some(UInt32Value { value: 2 }),
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(retry_host_predicate_config()),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    }
}

fn retry_host_predicate_config() -> retry_policy::retry_host_predicate::ConfigType {
    retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
        &PreviousHostsPredicate::default(),
    ))
}

/// The clusters a route configuration sends requests to (sorted, each once).
pub fn route_clusters(config: &RouteConfiguration) -> Vec<String> {
    let mut clusters: Vec<String> = config
        .virtual_hosts
        .iter()
        .flat_map(host_clusters)
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
}

/// The clusters one virtual host's routes send requests to, in route order.
fn host_clusters(host: &VirtualHost) -> impl Iterator<Item = String> + '_ {
    host.routes
        .iter()
        .filter_map(|r| match &r.action {
            Some(Action::Route(action)) => action.cluster_specifier.as_ref(),
            _ => None,
        })
        .flat_map(|spec| match spec {
            ClusterSpecifier::Cluster(name) => vec![name.clone()],
            ClusterSpecifier::WeightedClusters(w) => {
                w.clusters.iter().map(|c| c.name.clone()).collect()
            }
            _ => Vec::new(),
        })
}
