//! `/debug/config`: the snapshot as JSON, each resource summarized (a cluster's type and
//! load balancing, an assignment's endpoints, a listener's address and where its filter chains
//! send traffic, a route configuration's virtual hosts), and the per-proxy listener and route
//! variants built so far with what was left out of them.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::{Message, Name};
use serde_json::{json, Value};

use crate::snapshot::{ResourceType, Resources, Snapshot};
use crate::translate::endpoint::socket_addresses;
use crate::translate::listener::listener_clusters;

/// The snapshot as JSON: per type, its version and each resource's name, version and a summary.
pub fn snapshot_json(snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for kind in ResourceType::ALL {
        let resources = snapshot.resources(kind);
        let items: Vec<Value> = resources
            .by_name
            .values()
            .map(|r| {
                let mut item =
                    json!({ "name": &*r.name, "version": r.version, "bytes": r.body().len() });
                describe(kind, r.body(), &mut item);
                item
            })
            .collect();
        types.insert(
            kind.short().to_string(),
            json!({ "version": resources.version, "resources": items }),
        );
    }
    let mesh = &snapshot.mesh;
    let selectors: Vec<String> = mesh
        .discovery_selectors
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    json!({
        "serial": snapshot.serial,
        "mesh": {
            "domain": mesh.domain,
            "connect_timeout": humantime::format_duration(mesh.connect_timeout).to_string(),
            "lb_policy": format!("{:?}", mesh.lb_policy),
            "interception": format!("{:?}", mesh.interception),
            "discovery_selectors": selectors,
        },
        "types": types,
        "variants": variants_json(snapshot),
    })
}

fn describe(kind: ResourceType, body: &[u8], item: &mut Value) {
    match kind {
        ResourceType::Cluster => {
            if let Ok(c) = Cluster::decode(body) {
                let discovery = match c.cluster_discovery_type {
                    Some(cluster::ClusterDiscoveryType::Type(t)) => {
                        cluster::DiscoveryType::try_from(t)
                            .map(|t| t.as_str_name())
                            .unwrap_or("UNKNOWN")
                    }
                    _ => "CUSTOM",
                };
                let lb =
                    cluster::LbPolicy::try_from(c.lb_policy).map_or("UNKNOWN", |l| l.as_str_name());
                item["type"] = json!(discovery);
                item["lb_policy"] = json!(lb);
            }
        }
        ResourceType::Endpoint => {
            if let Ok(la) = ClusterLoadAssignment::decode(body) {
                item["endpoints"] = json!(socket_addresses(&la));
            }
        }
        ResourceType::Listener => {
            if let Ok(l) = Listener::decode(body) {
                describe_listener(&l, item);
            }
        }
        ResourceType::Route => {
            if let Ok(r) = RouteConfiguration::decode(body) {
                describe_routes(&r, item);
            }
        }
    }
}

fn describe_listener(l: &Listener, item: &mut Value) {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let address = l.address.as_ref().and_then(|a| match &a.address {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => Some(format!("{}:{p}", s.address)),
            _ => Some(s.address.clone()),
        },
        _ => None,
    });
    item["address"] = json!(address);
    item["bind_to_port"] = json!(l.bind_to_port.as_ref().is_none_or(|b| b.value));
    let hcms = l
        .filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) => Some(any),
            _ => None,
        })
        .chain(
            l.api_listener
                .iter()
                .filter_map(|a| a.api_listener.as_ref()),
        )
        .filter(|any| any.type_url == HttpConnectionManager::type_url())
        .filter_map(|any| HttpConnectionManager::decode(any.value.as_slice()).ok());
    let routes: Vec<String> = hcms
        .filter_map(|h| match h.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect();
    item["routes"] = json!(routes);
    item["tcp_clusters"] = json!(listener_clusters(l));
    item["api_listener"] = json!(l.api_listener.is_some());
}

fn describe_routes(r: &RouteConfiguration, item: &mut Value) {
    let hosts: Vec<Value> = r
        .virtual_hosts
        .iter()
        .map(|vh| {
            let clusters: Vec<&str> = vh
                .routes
                .iter()
                .filter_map(|route| match &route.action {
                    Some(Action::Route(a)) => match &a.cluster_specifier {
                        Some(route_action::ClusterSpecifier::Cluster(c)) => Some(c.as_str()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            json!({ "name": vh.name, "domains": vh.domains, "clusters": clusters })
        })
        .collect();
    item["virtual_hosts"] = json!(hosts);
}

fn names(resources: &Resources) -> Vec<&str> {
    resources.by_name.keys().map(|k| &**k).collect()
}

/// The per-proxy variants built so far: which proxies each is for, its version and
/// resource names, and what was left out (conflicts).
fn variants_json(snapshot: &Snapshot) -> Value {
    let Some(views) = snapshot.views() else {
        return json!([]);
    };
    let variants: Vec<Value> = views
        .status()
        .iter()
        .map(|v| {
            let conflicts: Vec<Value> = v
                .conflicts
                .iter()
                .map(|c| {
                    json!({
                        "listener": c.listener,
                        "kept": c.kept,
                        "dropped": c.dropped,
                        "reason": c.reason,
                    })
                })
                .collect();
            json!({
                "for": v.key,
                "version": v.resources.version,
                "resources": names(&v.resources),
                "conflicts": conflicts,
            })
        })
        .collect();
    json!(variants)
}
