//! The outbound model: every admitted service port as a client sees it (name, port, protocol,
//! cluster, virtual IPs), built once per snapshot and shared by every listener and route
//! variant (sidecar NONE, sidecar REDIRECT, proxyless), so each variant is a pure function of
//! it and its [`OutboundModel::content_hash`] tells whether any of them can have changed.
//!
//! It holds nothing about endpoints: an endpoint change never touches LDS or RDS.

use std::net::IpAddr;

use super::cluster::cluster_name;
use super::protocol::{protocol, Protocol};
use crate::catalog::{Service, ServiceKind};

/// Ports of the sidecar's own listeners and of the control plane: never an outbound listener
/// (15000 admin, 15001 virtualOutbound, 15006 inbound, 15010 xDS, 15014 monitoring, 15017
/// webhook, 15021 health, 15090 Prometheus).
pub const RESERVED_PORTS: [u16; 8] = [15000, 15001, 15006, 15010, 15014, 15017, 15021, 15090];

/// Whether `port` is one of [`RESERVED_PORTS`].
pub fn is_reserved(port: u16) -> bool {
    RESERVED_PORTS.contains(&port)
}

/// One service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundPort {
    /// Namespace of the service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// `svc.ns.svc.<domain>`.
    pub fqdn: String,
    /// Service port number.
    pub port: u16,
    /// What the port carries.
    pub protocol: Protocol,
    /// `outbound|<port>||<fqdn>`.
    pub cluster: String,
    /// The service's virtual IPs (none for headless and ExternalName services).
    pub cluster_ips: Vec<IpAddr>,
    /// How the service is reached.
    pub kind: ServiceKind,
}

impl OutboundPort {
    /// `ns/name:port (PROTOCOL)`, how conflict reports name a service port.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}:{} ({})",
            self.namespace,
            self.service,
            self.port,
            self.protocol.as_str()
        )
    }

    /// The DNS names a client may use for the service, without port: the FQDN, the short name
    /// `svc` (only for a caller in the service's namespace), `svc.ns` and `svc.ns.svc`.
    pub fn host_names(&self, caller_namespace: Option<&str>) -> Vec<String> {
        let (svc, ns) = (&self.service, &self.namespace);
        let mut names = vec![self.fqdn.clone()];
        if caller_namespace == Some(ns.as_str()) {
            names.push(svc.clone());
        }
        names.push(format!("{svc}.{ns}"));
        names.push(format!("{svc}.{ns}.svc"));
        names
    }

    /// Whether proxyless gRPC clients get this port: HTTP or HTTP/2 of an EDS-backed service
    /// (ClusterIP or headless; grpc cannot use an ExternalName's DNS cluster).
    pub fn is_proxyless(&self) -> bool {
        self.protocol.is_http() && !matches!(self.kind, ServiceKind::ExternalName(_))
    }
}

/// Every admitted service port, sorted by (port, namespace, name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutboundModel {
    /// Cluster DNS domain the FQDNs end in.
    pub domain: String,
    /// Ports sorted by (port, namespace, service name).
    pub ports: Vec<OutboundPort>,
}

impl OutboundModel {
    /// The model of `services` (a service's ports keep their order where they tie).
    pub fn new<'a>(services: impl Iterator<Item = &'a Service>, domain: &str) -> OutboundModel {
        let mut ports: Vec<OutboundPort> = services
            .flat_map(|service| {
                service.ports.iter().map(move |port| OutboundPort {
                    namespace: service.key.namespace.clone(),
                    service: service.key.name.clone(),
                    fqdn: format!(
                        "{}.{}.svc.{domain}",
                        service.key.name, service.key.namespace
                    ),
                    port: port.port,
                    protocol: protocol(port),
                    cluster: cluster_name(service, port.port, domain),
                    cluster_ips: service.cluster_ips.clone(),
                    kind: service.kind.clone(),
                })
            })
            .collect();
        ports.sort_by(|a, b| {
            (a.port, &a.namespace, &a.service).cmp(&(b.port, &b.namespace, &b.service))
        });
        OutboundModel {
            domain: domain.to_string(),
            ports,
        }
    }

    /// A hash of the whole model (xxh3, like every content hash here): equal models, equal
    /// hashes, so a caller can skip rebuilding listeners and routes.
    pub fn content_hash(&self) -> u64 {
        crate::catalog::content_hash(self)
    }

    /// The ports grouped by port number, each group in (namespace, name) order.
    pub fn by_port(&self) -> impl Iterator<Item = &[OutboundPort]> {
        self.ports.chunk_by(|a, b| a.port == b.port)
    }
}

/// Something left out, and why (shown in /debug/config and logged by the caller).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conflict {
    /// The listener (or, for a domain, the route configuration) where it happened.
    pub listener: String,
    /// What kept the place (a service port as `ns/name:port (PROTOCOL)`, or a virtual host).
    pub kept: String,
    /// What was left out.
    pub dropped: String,
    /// Why, in words an operator can act on.
    pub reason: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: left out {} (kept {}): {}",
            self.listener, self.dropped, self.kept, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::service;
    use crate::catalog::ServicePort;

    #[test]
    fn ports_are_sorted_by_port_then_namespace_then_name() {
        let a = service("shop", "web", &[("http", 80), ("grpc", 9000)]);
        let b = service("bank", "ledger", &[("tcp", 80)]);
        let c = service("shop", "api", &[("http", 80)]);
        let model = OutboundModel::new([&a, &b, &c].into_iter(), "cluster.local");
        let order: Vec<_> = model
            .ports
            .iter()
            .map(|p| (p.port, p.namespace.as_str(), p.service.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (80, "bank", "ledger"),
                (80, "shop", "api"),
                (80, "shop", "web"),
                (9000, "shop", "web")
            ]
        );
        let web = &model.ports[2];
        assert_eq!(web.fqdn, "web.shop.svc.cluster.local");
        assert_eq!(web.cluster, "outbound|80||web.shop.svc.cluster.local");
        assert_eq!(web.protocol, Protocol::Http);
        assert_eq!(model.ports[3].protocol, Protocol::Http2);
        assert_eq!(model.ports[0].protocol, Protocol::Tcp);
        let groups: Vec<usize> = model.by_port().map(<[_]>::len).collect();
        assert_eq!(groups, [3, 1]);
    }

    #[test]
    fn content_hash_is_deterministic_and_sees_every_field() {
        let mut web = service("shop", "web", &[("http", 80)]);
        let hash = |s: &Service| OutboundModel::new(std::iter::once(s), "cluster.local");
        let base = hash(&web).content_hash();
        assert_eq!(base, hash(&web.clone()).content_hash());
        web.cluster_ips = vec!["10.96.0.1".parse().unwrap()];
        let with_ip = hash(&web).content_hash();
        assert_ne!(base, with_ip);
        web.ports[0] = ServicePort {
            app_protocol: Some("grpc".into()),
            ..web.ports[0].clone()
        };
        assert_ne!(with_ip, hash(&web).content_hash(), "protocol counts");
        let other_domain = OutboundModel::new(std::iter::once(&web), "example.org");
        assert_ne!(hash(&web).content_hash(), other_domain.content_hash());
    }

    #[test]
    fn host_names_give_the_short_name_only_to_the_same_namespace() {
        let web = service("shop", "web", &[("http", 80)]);
        let model = OutboundModel::new(std::iter::once(&web), "cluster.local");
        let p = &model.ports[0];
        assert_eq!(
            p.host_names(Some("shop")),
            [
                "web.shop.svc.cluster.local",
                "web",
                "web.shop",
                "web.shop.svc"
            ]
        );
        let other = ["web.shop.svc.cluster.local", "web.shop", "web.shop.svc"];
        assert_eq!(p.host_names(Some("bank")), other);
        assert_eq!(p.host_names(None), other);
        assert_eq!(
            p.describe(),
            "shop/web:80 (HTTP)",
            "how reports name a port"
        );
    }

    #[test]
    fn reserved_ports() {
        for p in [15000, 15001, 15006, 15010, 15014, 15017, 15021, 15090] {
            assert!(is_reserved(p), "{p}");
        }
        for p in [80, 15002, 15443, 9090] {
            assert!(!is_reserved(p), "{p}");
        }
    }
}
