//! Sidecar outbound listeners (LDS) in Istio's layout, so `config_dump` reads the same.
//!
//! - **NONE** (nothing redirects; a laptop and the tests): one listener `<bind>_<port>` bound
//!   on `<bind>:<port>` per service port number. HTTP ports share one HTTP connection manager
//!   chain taking RDS `"<port>"`; a TCP port gets a TCP proxy to its one service's cluster.
//!   Two services that cannot share a port (TCP+TCP, HTTP+TCP in either order): the first in
//!   (namespace, name) order keeps it, the others are left out and reported as [`Conflict`]s.
//! - **REDIRECT** (iptables sends outbound connections to 15001): `virtualOutbound` hands
//!   each connection by original destination to the listener of exactly `ip:port`, else of
//!   `0.0.0.0:port`, else keeps it (catch-all to `PassthroughCluster`). HTTP ports get
//!   `0.0.0.0_<port>` (HTTP inspector, HCM chain for `http/1.0`/`http/1.1`/`h2c`, passthrough default
//!   chain); TCP ports get `<clusterIP>_<port>` per virtual IP. None of these bind. A TCP port
//!   of a service without a virtual IP (headless, ExternalName) has no listener and is
//!   reported: its connections pass through.
//!
//! Ports of the sidecar and control plane ([`RESERVED_PORTS`](super::outbound::RESERVED_PORTS))
//! never get a listener. Nothing here depends on endpoints.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, socket_address::PortSpecifier, Address, SocketAddress,
    TrafficDirection,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::cluster::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};
use super::filters::{filter_clusters, http_inspector, sidecar_hcm, tcp_proxy, zero};
use super::outbound::{is_reserved, Conflict, OutboundModel, OutboundPort, RESERVED_PORTS};
use crate::catalog::ServiceKind;
use crate::mesh::InterceptionMode;

/// Name of the REDIRECT catch-all listener.
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";

/// How a sidecar's outbound connections reach its listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interception {
    /// iptables redirects every outbound connection to `virtual_outbound`.
    Redirect {
        /// Where `virtualOutbound` listens (`0.0.0.0:15001` unless the node says otherwise).
        virtual_outbound: SocketAddr,
    },
    /// Applications dial the listeners, which bind `bind:<port>`.
    None {
        /// The IP every outbound listener binds (`127.0.0.1` unless the node says otherwise).
        bind: IpAddr,
    },
}

impl Interception {
    /// Default address of `virtualOutbound`.
    pub const DEFAULT_VIRTUAL_OUTBOUND: SocketAddr =
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 15001);
    /// Default bind IP of NONE listeners.
    pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// The interception of a proxy from its node metadata: `INTERCEPTION_MODE` (`REDIRECT` or
    /// `NONE`; absent or anything else: `mesh_default`) and `OUTBOUND_LISTENER_ADDRESS` (an IP
    /// for NONE, `ip:port` for REDIRECT; absent or unparsable: the default address).
    pub fn resolve(
        mode: Option<&str>,
        outbound_address: Option<&str>,
        mesh_default: InterceptionMode,
    ) -> Interception {
        let mode = mode
            .and_then(InterceptionMode::parse)
            .unwrap_or(mesh_default);
        match mode {
            InterceptionMode::Redirect => Interception::Redirect {
                virtual_outbound: outbound_address
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(Self::DEFAULT_VIRTUAL_OUTBOUND),
            },
            InterceptionMode::None => Interception::None {
                bind: outbound_address
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(Self::DEFAULT_BIND),
            },
        }
    }
}

/// The outbound listeners of a sidecar, sorted by name, and what was left out.
pub fn sidecar_listeners(
    model: &OutboundModel,
    interception: &Interception,
) -> (Vec<Listener>, Vec<Conflict>) {
    let mut layout = Layout::default();
    match *interception {
        Interception::None { bind } => layout.none(model, bind),
        Interception::Redirect { virtual_outbound } => layout.redirect(model, virtual_outbound),
    }
    layout.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    (layout.listeners, layout.conflicts)
}

/// The clusters a listener's TCP proxies send connections to (sorted, each once); HTTP
/// connection managers name routes, not clusters (see `route::route_clusters`).
pub fn listener_clusters(listener: &Listener) -> Vec<String> {
    let mut clusters: Vec<String> = listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .flat_map(|chain| &chain.filters)
        .flat_map(filter_clusters)
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
}

#[derive(Default)]
struct Layout {
    listeners: Vec<Listener>,
    conflicts: Vec<Conflict>,
}

impl Layout {
    fn none(&mut self, model: &OutboundModel, bind: IpAddr) {
        for group in model.by_port() {
            let port = group[0].port;
            let name = listener_name(bind, port);
            if is_reserved(port) {
                self.reserved(&name, group);
                continue;
            }
            let first = &group[0];
            let http = first.protocol.is_http();
            for other in &group[1..] {
                if !(http && other.protocol.is_http()) {
                    self.conflicts.push(Conflict {
                        listener: name.clone(),
                        kept: first.describe(),
                        dropped: other.describe(),
                        reason: format!(
                            "{} and {} cannot share {}; the first service by namespace/name \
                             keeps the port",
                            first.protocol.as_str(),
                            other.protocol.as_str(),
                            SocketAddr::new(bind, port),
                        ),
                    });
                }
            }
            let filter = if http {
                sidecar_hcm(&name, &port.to_string())
            } else {
                tcp_proxy(&first.cluster)
            };
            let mut listener = outbound(name, SocketAddr::new(bind, port));
            listener.filter_chains = vec![chain(filter)];
            self.listeners.push(listener);
        }
    }

    fn redirect(&mut self, model: &OutboundModel, virtual_outbound: SocketAddr) {
        self.listeners
            .push(virtual_outbound_listener(virtual_outbound));
        let wildcard = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut vips: HashMap<String, &OutboundPort> = HashMap::new();
        for group in model.by_port() {
            let port = group[0].port;
            if is_reserved(port) || port == virtual_outbound.port() {
                self.reserved(&listener_name(wildcard, port), group);
                continue;
            }
            if group.iter().any(|p| p.protocol.is_http()) {
                self.listeners.push(http_wildcard_listener(port));
            }
            for p in group.iter().filter(|p| !p.protocol.is_http()) {
                if p.cluster_ips.is_empty() {
                    self.conflicts.push(Conflict {
                        listener: VIRTUAL_OUTBOUND.to_string(),
                        kept: PASSTHROUGH_CLUSTER.to_string(),
                        dropped: p.describe(),
                        reason: format!(
                            "a TCP port of a {} Service has no cluster IP to intercept on; \
                             connections to it pass through to their original destination",
                            kind_name(&p.kind)
                        ),
                    });
                    continue;
                }
                for ip in &p.cluster_ips {
                    let name = listener_name(*ip, port);
                    if let Some(owner) = vips.get(&name) {
                        self.conflicts.push(Conflict {
                            listener: name,
                            kept: owner.describe(),
                            dropped: p.describe(),
                            reason: format!("both Services have cluster IP {ip}"),
                        });
                        continue;
                    }
                    vips.insert(name.clone(), p);
                    let mut listener = outbound(name, SocketAddr::new(*ip, port));
                    listener.bind_to_port = Some(BoolValue { value: false });
                    listener.filter_chains = vec![chain(tcp_proxy(&p.cluster))];
                    self.listeners.push(listener);
                }
            }
        }
    }

    fn reserved(&mut self, listener: &str, group: &[OutboundPort]) {
        for p in group {
            self.conflicts.push(Conflict {
                listener: listener.to_string(),
                kept: "the sidecar's own listener".to_string(),
                dropped: p.describe(),
                reason: format!(
                    "port {} is reserved for the sidecar and control plane ({RESERVED_PORTS:?} \
                     and virtualOutbound's port); give the Service another port",
                    p.port
                ),
            });
        }
    }
}

/// `virtualOutbound`: original-destination hand-off; its own port goes to the black hole (a
/// connection to 15001 would loop), everything else passes through.
fn virtual_outbound_listener(address: SocketAddr) -> Listener {
    let blackhole = FilterChain {
        name: "virtualOutbound-blackhole".to_string(),
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(address.port()),
            }),
            ..Default::default()
        }),
        filters: vec![tcp_proxy(BLACKHOLE_CLUSTER)],
        ..Default::default()
    };
    let catch_all = FilterChain {
        name: "virtualOutbound-catchall-tcp".to_string(),
        filters: vec![tcp_proxy(PASSTHROUGH_CLUSTER)],
        ..Default::default()
    };
    Listener {
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains: vec![blackhole, catch_all],
        ..outbound(VIRTUAL_OUTBOUND.to_string(), address)
    }
}

/// `0.0.0.0_<port>` for the HTTP services on a port (REDIRECT): HTTP detected by the
/// inspector goes to the connection manager, anything else passes through.
fn http_wildcard_listener(port: u16) -> Listener {
    let name = listener_name(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let http = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            application_protocols: vec![
                "http/1.0".to_string(),
                "http/1.1".to_string(),
                "h2c".to_string(),
            ],
            transport_protocol: "raw_buffer".to_string(),
            ..Default::default()
        }),
        filters: vec![sidecar_hcm(&name, &port.to_string())],
        ..Default::default()
    };
    let passthrough = FilterChain {
        name: "PassthroughFilterChain".to_string(),
        filters: vec![tcp_proxy(PASSTHROUGH_CLUSTER)],
        ..Default::default()
    };
    Listener {
        bind_to_port: Some(BoolValue { value: false }),
        listener_filters: vec![http_inspector()],
        filter_chains: vec![http],
        default_filter_chain: Some(passthrough),
        ..outbound(
            name.clone(),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        )
    }
}

/// What every outbound listener has: name, address, direction, and listener filters that
/// never time out (a listener without filters never waits either).
fn outbound(name: String, address: SocketAddr) -> Listener {
    Listener {
        name,
        address: Some(socket_address(address)),
        traffic_direction: TrafficDirection::Outbound as i32,
        continue_on_listener_filters_timeout: true,
        listener_filters_timeout: zero(),
        ..Default::default()
    }
}

fn chain(filter: Filter) -> FilterChain {
    FilterChain {
        filters: vec![filter],
        ..Default::default()
    }
}

/// Istio's listener name: `<ip>_<port>`.
fn listener_name(ip: IpAddr, port: u16) -> String {
    format!("{ip}_{port}")
}

/// An Envoy socket address.
fn socket_address(address: SocketAddr) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(address.port()))),
            ..Default::default()
        })),
    }
}

fn kind_name(kind: &ServiceKind) -> &'static str {
    match kind {
        ServiceKind::ClusterIp => "ClusterIP",
        ServiceKind::Headless => "headless",
        ServiceKind::ExternalName(_) => "ExternalName",
    }
}
