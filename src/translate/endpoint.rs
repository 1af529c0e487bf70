//! EndpointSlices → Envoy `ClusterLoadAssignment`.
//!
//! Rules (as kube-proxy applies them): only ready, non-terminating endpoints; a slice port is
//! matched to the service port **by name**; several slices of one service are merged and
//! duplicate addresses dropped (grpc-core rejects a whole assignment that repeats one); the
//! result is sorted so equal inputs give byte-equal output. The endpoints sit in one locality
//! of weight 1, which proxyless gRPC clients need to see them at all.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddressKind, socket_address::PortSpecifier, Address, Locality,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};

use envoy_types::pb::google::protobuf::UInt32Value;

use crate::catalog::{EndpointSlice, ServicePort};

/// The load assignment of one service port from the service's slices.
pub fn load_assignment<'a>(
    cluster_name: String,
    port: &ServicePort,
    slices: impl Iterator<Item = &'a EndpointSlice>,
) -> ClusterLoadAssignment {
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for slice in slices {
        let Some(slice_port) = slice.ports.iter().find(|p| p.name == port.name) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().filter(|e| e.ready && !e.terminating) {
            addresses.extend(
                endpoint
                    .addresses
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, slice_port.port)),
            );
        }
    }
    addresses.sort_unstable();
    addresses.dedup();
    let lb_endpoints = addresses
        .into_iter()
        .map(|a| lb_endpoint(ip_string(a.ip()), a.port()))
        .collect();
    with_endpoints(cluster_name, lb_endpoints)
}

/// The text of an IP address. IPv4 (the common case, once per endpoint) is written into a
/// string allocated once at its final size, where `to_string` grows it as it writes.
fn ip_string(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity("255.255.255.255".len());
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, octet);
    }
    text
}

fn push_decimal(text: &mut String, n: u8) {
    if n >= 100 {
        text.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        text.push(char::from(b'0' + n / 10 % 10));
    }
    text.push(char::from(b'0' + n % 10));
}

/// The inline load assignment of a DNS cluster: one host name and port.
pub fn dns_load_assignment(cluster_name: String, host: &str, port: u16) -> ClusterLoadAssignment {
    with_endpoints(cluster_name, vec![lb_endpoint(host.to_string(), port)])
}

fn with_endpoints(cluster_name: String, lb_endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name,
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                // grpc-core skips a locality without a weight (without an error); Envoy
                // ignores both unless locality-weighted load balancing is on.
                locality: Some(Locality::default()),
                load_balancing_weight: Some(UInt32Value { value: 1 }),
                lb_endpoints,
                ..Default::default()
            }]
        },
        ..Default::default()
    }
}

fn lb_endpoint(address: String, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address,
                    port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `host:port` of every endpoint of a load assignment, in order (for tests and debug output).
pub fn socket_addresses(la: &ClusterLoadAssignment) -> Vec<String> {
    la.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                AddressKind::SocketAddress(sa) => match sa.port_specifier {
                    Some(PortSpecifier::PortValue(p)) => Some(format!("{}:{p}", sa.address)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::slice;

    fn port(name: &str) -> ServicePort {
        ServicePort {
            name: name.into(),
            port: 80,
            app_protocol: None,
        }
    }

    fn addrs(port_name: &str, slices: &[EndpointSlice]) -> Vec<String> {
        socket_addresses(&load_assignment(
            "c".into(),
            &port(port_name),
            slices.iter(),
        ))
    }

    #[test]
    fn ports_are_matched_by_name_not_number() {
        let s = slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080), ("metrics", 9090)],
            &[("10.0.0.1", true, false)],
        );
        assert_eq!(addrs("http", std::slice::from_ref(&s)), ["10.0.0.1:8080"]);
        assert_eq!(
            addrs("metrics", std::slice::from_ref(&s)),
            ["10.0.0.1:9090"]
        );
        assert!(
            addrs("grpc", &[s]).is_empty(),
            "no port of that name: no endpoints"
        );
        let unnamed = slice(
            "shop",
            "web-2",
            "web",
            &[("", 8000)],
            &[("10.0.0.2", true, false)],
        );
        assert_eq!(addrs("", &[unnamed]), ["10.0.0.2:8000"]);
    }

    #[test]
    fn not_ready_and_terminating_endpoints_are_left_out() {
        let s = slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080)],
            &[
                ("10.0.0.1", true, false),
                ("10.0.0.2", false, false),
                ("10.0.0.3", false, true),
                ("10.0.0.4", true, true),
            ],
        );
        assert_eq!(addrs("http", &[s]), ["10.0.0.1:8080"]);
    }

    #[test]
    fn multiple_slices_are_merged_sorted_and_deduplicated() {
        let a = slice(
            "shop",
            "web-a",
            "web",
            &[("http", 8080)],
            &[("10.0.0.9", true, false), ("10.0.0.1", true, false)],
        );
        let b = slice(
            "shop",
            "web-b",
            "web",
            &[("http", 8080)],
            &[("10.0.0.1", true, false), ("fd00::1", true, false)],
        );
        assert_eq!(
            addrs("http", &[a, b]),
            ["10.0.0.1:8080", "10.0.0.9:8080", "fd00::1:8080"]
        );
    }

    #[test]
    fn an_address_listed_twice_is_sent_once() {
        let mut a = slice(
            "shop",
            "web-a",
            "web",
            &[("http", 8080)],
            &[("10.0.0.2", true, false), ("10.0.0.1", true, false)],
        );
        // One endpoint repeating its address, and the same address in a second endpoint.
        a.endpoints[0].addresses.push("10.0.0.2".parse().unwrap());
        a.endpoints.push(a.endpoints[1].clone());
        let b = slice(
            "shop",
            "web-b",
            "web",
            &[("http", 8080)],
            &[("10.0.0.2", true, false)],
        );
        assert_eq!(addrs("http", &[a, b]), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    }

    #[test]
    fn endpoints_sit_in_one_locality_of_weight_one() {
        let s = slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080)],
            &[("10.0.0.1", true, false), ("10.0.0.2", true, false)],
        );
        let la = load_assignment("c".into(), &port("http"), std::iter::once(&s));
        assert_eq!(la.endpoints.len(), 1);
        let group = &la.endpoints[0];
        assert_eq!(group.locality, Some(Locality::default()));
        assert_eq!(group.load_balancing_weight, Some(UInt32Value { value: 1 }));
        assert_eq!(group.lb_endpoints.len(), 2);
        let dns = dns_load_assignment("c".into(), "api.example.com", 443);
        assert_eq!(
            dns.endpoints[0].load_balancing_weight,
            Some(UInt32Value { value: 1 })
        );
    }

    #[test]
    fn a_service_without_slices_has_an_empty_assignment() {
        let la = load_assignment("c".into(), &port("http"), std::iter::empty());
        assert_eq!(la.cluster_name, "c");
        assert!(la.endpoints.is_empty());
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.0.9.99",
            "192.168.100.255",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
