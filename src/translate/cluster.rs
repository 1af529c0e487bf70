//! Service port → Envoy `Cluster`.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy as EnvoyLb,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
    Http2ProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};

use super::{endpoint, LbPolicy, MeshConfig};
use crate::catalog::{Service, ServicePort};

/// Key of the upstream HTTP protocol options extension.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Istio's cluster name: `outbound|<port>||<svc>.<ns>.svc.<domain>`.
pub fn cluster_name(service: &Service, port: u16, domain: &str) -> String {
    format!(
        "outbound|{port}||{}.{}.svc.{domain}",
        service.key.name, service.key.namespace
    )
}

/// An EDS cluster whose endpoints come over ADS under the cluster's own name.
pub fn eds_cluster(name: String, port: &ServicePort, mesh: &MeshConfig) -> Cluster {
    Cluster {
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.clone(),
        }),
        ..base_cluster(name, DiscoveryType::Eds, port, mesh)
    }
}

/// A STRICT_DNS cluster to an external host (ExternalName services).
pub fn dns_cluster(name: String, host: &str, port: &ServicePort, mesh: &MeshConfig) -> Cluster {
    Cluster {
        load_assignment: Some(endpoint::dns_load_assignment(name.clone(), host, port.port)),
        dns_lookup_family: DnsLookupFamily::V4Preferred as i32,
        ..base_cluster(name, DiscoveryType::StrictDns, port, mesh)
    }
}

fn base_cluster(
    name: String,
    kind: DiscoveryType,
    port: &ServicePort,
    mesh: &MeshConfig,
) -> Cluster {
    let mut cluster = Cluster {
        name,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(Duration {
            seconds: mesh.connect_timeout.as_secs() as i64,
            nanos: mesh.connect_timeout.subsec_nanos() as i32,
        }),
        lb_policy: match mesh.lb_policy {
            LbPolicy::RoundRobin => EnvoyLb::RoundRobin,
            LbPolicy::LeastRequest => EnvoyLb::LeastRequest,
            LbPolicy::Random => EnvoyLb::Random,
        } as i32,
        ..Default::default()
    };
    if speaks_http2(port) {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), http2_options());
    }
    cluster
}

/// Istio's protocol selection: `appProtocol`, else the port name prefix before `-`.
pub fn speaks_http2(port: &ServicePort) -> bool {
    let protocol = match &port.app_protocol {
        Some(p) => p.as_str(),
        None => port.name.split('-').next().unwrap_or(""),
    };
    matches!(
        protocol.to_ascii_lowercase().as_str(),
        "grpc" | "grpc-web" | "http2" | "h2c" | "kubernetes.io/h2c"
    )
}

fn http2_options() -> Any {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    Any {
        type_url: HttpProtocolOptions::type_url(),
        value: options.encode_to_vec(),
    }
}

fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::service;

    fn port(name: &str, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.into(),
            port: 80,
            app_protocol: app.map(Into::into),
        }
    }

    #[test]
    fn eds_cluster_fetches_its_endpoints_over_ads_under_its_name() {
        let svc = service("shop", "web", &[("http", 80)]);
        let name = cluster_name(&svc, 80, "example.org");
        assert_eq!(name, "outbound|80||web.shop.svc.example.org");
        let mesh = MeshConfig {
            lb_policy: LbPolicy::LeastRequest,
            ..Default::default()
        };
        let c = eds_cluster(name.clone(), &svc.ports[0], &mesh);
        let eds = c.eds_cluster_config.unwrap();
        assert_eq!(eds.service_name, name);
        assert!(matches!(
            eds.eds_config.unwrap().config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(c.lb_policy, EnvoyLb::LeastRequest as i32);
        assert_eq!(c.connect_timeout.unwrap().seconds, 1);
        assert!(
            c.typed_extension_protocol_options.is_empty(),
            "http/1.1 by default"
        );
    }

    #[test]
    fn grpc_and_http2_ports_get_http2_upstreams() {
        assert!(speaks_http2(&port("grpc", None)));
        assert!(speaks_http2(&port("grpc-admin", None)));
        assert!(speaks_http2(&port("web", Some("kubernetes.io/h2c"))));
        assert!(!speaks_http2(&port("http", None)));
        assert!(
            !speaks_http2(&port("grpc", Some("http"))),
            "appProtocol wins"
        );
        let c = eds_cluster("c".into(), &port("grpc", None), &MeshConfig::default());
        assert!(c
            .typed_extension_protocol_options
            .contains_key(HTTP_PROTOCOL_OPTIONS));
    }
}
