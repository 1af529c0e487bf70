//! Conversion of Kubernetes objects (k8s-openapi types) into catalog objects.
//!
//! Shared by every source, so a manifest file and the API server are read by the same rules.
//! Validation happens here: an object that cannot be served correctly is an error with a
//! reason, never silently trimmed into something else.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

mod mesh;

pub use mesh::{mesh_config, mesh_config_map_name, parse_mesh, MESH_KEY};

use crate::catalog::{
    Endpoint, EndpointSlice, Namespace, ObjectKey, Service, ServiceKind, ServicePort, SlicePort,
};

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why an object cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// `metadata.name` is missing or empty.
    #[error("metadata.name is missing")]
    MissingName,
    /// A port number outside 1..=65535.
    #[error("{what} has port {port}, which is outside 1-65535")]
    BadPort {
        /// Which port.
        what: String,
        /// The number given.
        port: i32,
    },
    /// An address that is not an IP of the slice's family.
    #[error("endpoint address {address:?} is not a valid {family} address")]
    BadAddress {
        /// The address given.
        address: String,
        /// The slice's addressType.
        family: String,
    },
    /// A slice without the service-name label.
    #[error("EndpointSlice has no label {SERVICE_NAME_LABEL}, so it belongs to no Service")]
    NoServiceLabel,
    /// ExternalName without a host.
    #[error("Service of type ExternalName has no spec.externalName")]
    NoExternalName,
    /// The mesh config ConfigMap is invalid.
    #[error("invalid mesh config (data key `mesh`): {0}")]
    BadMeshConfig(String),
    /// A cluster IP that is not an IP address.
    #[error(
        "spec.clusterIP(s) entry {0:?} is not an IP address (write None for a headless Service)"
    )]
    BadClusterIp(String),
    /// Two service ports with the same name.
    #[error("Service has two ports named {0:?}; port names must be unique")]
    DuplicatePortName(String),
}

/// Converts a Namespace.
pub fn namespace(ns: &core::Namespace) -> Result<Namespace, ObjectError> {
    Ok(Namespace {
        name: name_of(&ns.metadata)?,
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    })
}

/// Converts a Service; `default_namespace` applies when metadata has none.
pub fn service(svc: &core::Service, default_namespace: &str) -> Result<Service, ObjectError> {
    let key = key_of(&svc.metadata, default_namespace)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = match spec.type_.as_deref() {
        Some("ExternalName") => match spec.external_name.clone().filter(|h| !h.is_empty()) {
            Some(host) => ServiceKind::ExternalName(host),
            None => return Err(ObjectError::NoExternalName),
        },
        _ if is_headless(&spec) => ServiceKind::Headless,
        _ => ServiceKind::ClusterIp,
    };
    let cluster_ips = match kind {
        ServiceKind::ClusterIp => cluster_ips(&spec)?,
        ServiceKind::Headless | ServiceKind::ExternalName(_) => Vec::new(),
    };
    let mut ports: Vec<ServicePort> = Vec::new();
    for p in spec.ports.unwrap_or_default() {
        if !is_tcp(p.protocol.as_deref()) {
            continue;
        }
        let name = p.name.unwrap_or_default();
        if ports.iter().any(|q| q.name == name) {
            return Err(ObjectError::DuplicatePortName(name));
        }
        ports.push(ServicePort {
            port: port_number(p.port, || format!("service port {name:?}"))?,
            name,
            app_protocol: p.app_protocol,
        });
    }
    Ok(Service {
        key,
        kind,
        cluster_ips,
        ports,
    })
}

/// Converts an EndpointSlice. FQDN slices yield no endpoints (they are not IP endpoints).
pub fn endpoint_slice(
    slice: &discovery::EndpointSlice,
    default_namespace: &str,
) -> Result<EndpointSlice, ObjectError> {
    let key = key_of(&slice.metadata, default_namespace)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or(ObjectError::NoServiceLabel)?;
    let family = slice.address_type.as_str();
    let mut ports = Vec::new();
    for p in slice.ports.clone().unwrap_or_default() {
        // A port without a number means "all ports"; we cannot route to that.
        let (Some(number), true) = (p.port, is_tcp(p.protocol.as_deref())) else {
            continue;
        };
        let name = p.name.unwrap_or_default();
        ports.push(SlicePort {
            port: port_number(number, || format!("EndpointSlice port {name:?}"))?,
            name,
        });
    }
    let mut endpoints = Vec::new();
    if family == "IPv4" || family == "IPv6" {
        for e in slice.endpoints.iter().flatten() {
            let mut addresses = Vec::with_capacity(e.addresses.len());
            for a in &e.addresses {
                let ip: IpAddr = match a.parse() {
                    Ok(ip @ IpAddr::V4(_)) if family == "IPv4" => ip,
                    Ok(ip @ IpAddr::V6(_)) if family == "IPv6" => ip,
                    _ => {
                        return Err(ObjectError::BadAddress {
                            address: a.clone(),
                            family: family.to_string(),
                        })
                    }
                };
                addresses.push(ip);
            }
            let conditions = e.conditions.clone().unwrap_or_default();
            endpoints.push(Endpoint {
                addresses,
                ready: conditions.ready.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
            });
        }
    }
    Ok(EndpointSlice {
        key,
        service,
        ports,
        endpoints,
    })
}

/// `clusterIP: None` (or `clusterIPs: [None]`, as a manifest may write it).
fn is_headless(spec: &core::ServiceSpec) -> bool {
    let first = spec
        .cluster_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .or(spec.cluster_ip.as_ref());
    first.map(String::as_str) == Some("None")
}

/// Every `spec.clusterIPs` entry, else `spec.clusterIP`; unset or empty gives none.
fn cluster_ips(spec: &core::ServiceSpec) -> Result<Vec<IpAddr>, ObjectError> {
    let texts: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let mut ips = Vec::with_capacity(texts.len());
    for text in texts.into_iter().filter(|t| !t.is_empty()) {
        let ip = text
            .parse()
            .map_err(|_| ObjectError::BadClusterIp(text.clone()))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

fn port_number(port: i32, what: impl FnOnce() -> String) -> Result<u16, ObjectError> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ObjectError::BadPort { what: what(), port }),
    }
}

fn name_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, ObjectError> {
    meta.name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(ObjectError::MissingName)
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    default_namespace: &str,
) -> Result<ObjectKey, ObjectError> {
    let namespace = meta
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_namespace.to_string());
    Ok(ObjectKey::new(namespace, name_of(meta)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn service_kinds_and_ports() {
        let svc: core::Service = yaml(
            "metadata: {name: web, namespace: shop}\nspec:\n  clusterIP: None\n  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, protocol: UDP}\n",
        );
        let s = service(&svc, "default").unwrap();
        assert_eq!(s.kind, ServiceKind::Headless);
        assert_eq!(s.ports.len(), 1, "UDP ports are left out");
        let ext: core::Service = yaml(
            "metadata: {name: ext}\nspec: {type: ExternalName, externalName: example.com, ports: [{port: 443}]}\n",
        );
        let e = service(&ext, "default").unwrap();
        assert_eq!(e.key, ObjectKey::new("default", "ext"));
        assert_eq!(e.kind, ServiceKind::ExternalName("example.com".into()));
    }

    #[test]
    fn cluster_ips_come_from_cluster_ips_else_cluster_ip() {
        let ips = |spec: &str| {
            let svc: core::Service = yaml(&format!("metadata: {{name: web}}\nspec: {spec}\n"));
            service(&svc, "d").map(|s| (s.kind, s.cluster_ips))
        };
        let v4: IpAddr = "10.96.0.10".parse().unwrap();
        let v6: IpAddr = "fd00::10".parse().unwrap();
        assert_eq!(
            ips("{clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, 'fd00::10']}"),
            Ok((ServiceKind::ClusterIp, vec![v4, v6])),
            "clusterIPs wins and holds every family"
        );
        assert_eq!(
            ips("{clusterIP: 10.96.0.10}"),
            Ok((ServiceKind::ClusterIp, vec![v4]))
        );
        assert_eq!(
            ips("{clusterIP: 10.96.0.10, clusterIPs: []}"),
            Ok((ServiceKind::ClusterIp, vec![v4]))
        );
        assert_eq!(ips("{}"), Ok((ServiceKind::ClusterIp, vec![])));
        assert_eq!(ips("{clusterIP: ''}"), Ok((ServiceKind::ClusterIp, vec![])));
        assert_eq!(
            ips("{clusterIP: None}"),
            Ok((ServiceKind::Headless, vec![]))
        );
        assert_eq!(
            ips("{clusterIPs: [None]}"),
            Ok((ServiceKind::Headless, vec![]))
        );
        assert_eq!(
            ips("{clusterIP: 10.0.0.300}"),
            Err(ObjectError::BadClusterIp("10.0.0.300".into()))
        );
    }

    #[test]
    fn invalid_objects_say_why() {
        let bad_port: core::Service =
            yaml("metadata: {name: web}\nspec: {ports: [{port: 70000}]}\n");
        assert!(matches!(
            service(&bad_port, "d"),
            Err(ObjectError::BadPort { port: 70000, .. })
        ));
        let no_label: discovery::EndpointSlice =
            yaml("metadata: {name: s}\naddressType: IPv4\nendpoints: []\n");
        assert_eq!(
            endpoint_slice(&no_label, "d"),
            Err(ObjectError::NoServiceLabel)
        );
        let bad_ip: discovery::EndpointSlice = yaml(
            "metadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: ['::1']}]\n",
        );
        assert!(matches!(
            endpoint_slice(&bad_ip, "d"),
            Err(ObjectError::BadAddress { .. })
        ));
    }

    #[test]
    fn endpoint_conditions_default_to_ready() {
        let s: discovery::EndpointSlice = yaml(
            "metadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- {addresses: [10.0.0.1]}\n- {addresses: [10.0.0.2], conditions: {ready: false, terminating: true}}\n",
        );
        let s = endpoint_slice(&s, "d").unwrap();
        assert!(s.endpoints[0].ready && !s.endpoints[0].terminating);
        assert!(!s.endpoints[1].ready && s.endpoints[1].terminating);
        assert_eq!(s.ports[0].port, 8080);
    }
}
