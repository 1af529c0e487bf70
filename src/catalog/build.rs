//! Small builders of catalog objects for tests in this crate and its integration tests.

use super::*;

/// A ClusterIP service with `(name, port)` ports.
pub fn service(ns: &str, name: &str, ports: &[(&str, u16)]) -> Service {
    Service {
        key: ObjectKey::new(ns, name),
        kind: ServiceKind::ClusterIp,
        cluster_ips: Vec::new(),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort {
                name: n.to_string(),
                port: *p,
                app_protocol: None,
            })
            .collect(),
    }
}

/// A slice of `service` with `(name, port)` ports and `(ip, ready, terminating)` endpoints.
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, bool, bool)],
) -> EndpointSlice {
    EndpointSlice {
        key: ObjectKey::new(ns, name),
        service: service.to_string(),
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort {
                name: n.to_string(),
                port: *p,
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready, terminating)| Endpoint {
                addresses: vec![ip.parse().expect("test IP")],
                ready: *ready,
                terminating: *terminating,
            })
            .collect(),
    }
}
