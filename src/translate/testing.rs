//! Builders and decoders shared by the listener, route and proxyless test tables.

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::{Message, Name};

use super::filters::filter_clusters;
use super::outbound::OutboundModel;
use crate::catalog::{build, Service, ServiceKind};

/// A ClusterIP service with `(port name, port)` ports and cluster IPs.
pub fn svc(ns: &str, name: &str, ports: &[(&str, u16)], ips: &[&str]) -> Service {
    Service {
        cluster_ips: ips.iter().map(|ip| ip.parse().expect("test IP")).collect(),
        ..build::service(ns, name, ports)
    }
}

/// A headless service.
pub fn headless(ns: &str, name: &str, ports: &[(&str, u16)]) -> Service {
    Service {
        kind: ServiceKind::Headless,
        ..build::service(ns, name, ports)
    }
}

/// An ExternalName service aliasing `host`.
pub fn external(ns: &str, name: &str, ports: &[(&str, u16)], host: &str) -> Service {
    Service {
        kind: ServiceKind::ExternalName(host.to_string()),
        ..build::service(ns, name, ports)
    }
}

/// The model of `services` under `cluster.local`.
pub fn model(services: &[Service]) -> OutboundModel {
    OutboundModel::new(services.iter(), "cluster.local")
}

/// `ip:port` of a listener.
pub fn address(l: &Listener) -> String {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", sa.address),
            _ => sa.address.clone(),
        },
        _ => String::new(),
    }
}

/// What a filter chain does, in one word: `rds:<route>` or `tcp:<cluster>`.
pub fn chain_summary(chain: &FilterChain) -> Vec<String> {
    chain
        .filters
        .iter()
        .map(|f| match decode_hcm(f) {
            Some(hcm) => format!("rds:{}", rds_name(&hcm)),
            None => format!("tcp:{}", filter_clusters(f).join(",")),
        })
        .collect()
}

/// Every chain of a listener (the default chain last, marked `default`), summarised.
pub fn chains(l: &Listener) -> Vec<String> {
    let mut out: Vec<String> = l.filter_chains.iter().flat_map(chain_summary).collect();
    if let Some(d) = &l.default_filter_chain {
        out.extend(chain_summary(d).into_iter().map(|s| format!("default {s}")));
    }
    out
}

/// The RDS route name of a connection manager.
pub fn rds_name(hcm: &HttpConnectionManager) -> String {
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => rds.route_config_name.clone(),
        _ => panic!("connection manager without RDS: {hcm:?}"),
    }
}

/// The connection manager of a listener's first chain.
pub fn first_hcm(l: &Listener) -> HttpConnectionManager {
    decode_hcm(&l.filter_chains[0].filters[0]).expect("an HTTP connection manager")
}

/// The HTTP connection manager inside a filter, if it is one.
pub fn decode_hcm(filter: &Filter) -> Option<HttpConnectionManager> {
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any))
            if any.type_url == HttpConnectionManager::type_url() =>
        {
            HttpConnectionManager::decode(any.value.as_slice()).ok()
        }
        _ => None,
    }
}
