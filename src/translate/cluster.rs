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

use super::protocol::{protocol, Protocol};
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

/// The cluster that forwards a connection to its original destination (REDIRECT sidecars'
/// catch-all and HTTP listeners' default chain send unknown destinations here).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// The cluster with no endpoints: a connection sent here is closed.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// `PassthroughCluster`: ORIGINAL_DST with the mesh's connect timeout (Istio's
/// `buildDefaultPassthroughCluster`).
pub fn passthrough_cluster(mesh: &MeshConfig) -> Cluster {
    Cluster {
        name: PASSTHROUGH_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        connect_timeout: Some(duration(mesh.connect_timeout)),
        lb_policy: EnvoyLb::ClusterProvided as i32,
        ..Default::default()
    }
}

/// `BlackHoleCluster`: STATIC without endpoints (virtualOutbound's own port goes there, so a
/// connection to 15001 cannot loop).
pub fn blackhole_cluster() -> Cluster {
    Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..Default::default()
    }
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
        connect_timeout: Some(duration(mesh.connect_timeout)),
        lb_policy: match mesh.lb_policy {
            LbPolicy::RoundRobin => EnvoyLb::RoundRobin,
            LbPolicy::LeastRequest => EnvoyLb::LeastRequest,
            LbPolicy::Random => EnvoyLb::Random,
        } as i32,
        ..Default::default()
    };
    if protocol(port) == Protocol::Http2 {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), http2_options());
    }
    cluster
}

/// A protobuf Duration.
fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
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

/// `{ads: {}, resource_api_version: V3}`: fetch over the same ADS stream.
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
    fn passthrough_and_blackhole_clusters() {
        let mesh = MeshConfig {
            connect_timeout: std::time::Duration::from_millis(2500),
            ..Default::default()
        };
        let p = passthrough_cluster(&mesh);
        assert_eq!(p.name, "PassthroughCluster");
        assert_eq!(
            p.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32
            ))
        );
        assert_eq!(p.lb_policy, EnvoyLb::ClusterProvided as i32);
        assert_eq!(
            p.connect_timeout,
            Some(Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        let b = blackhole_cluster();
        assert_eq!(b.name, "BlackHoleCluster");
        assert_eq!(
            b.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        assert!(b.load_assignment.is_none(), "no endpoints");
    }

    #[test]
    fn grpc_and_http2_ports_get_http2_upstreams() {
        let has_h2 = |p: ServicePort| {
            eds_cluster("c".into(), &p, &MeshConfig::default())
                .typed_extension_protocol_options
                .contains_key(HTTP_PROTOCOL_OPTIONS)
        };
        assert!(has_h2(port("grpc", None)));
        assert!(has_h2(port("grpc-admin", None)));
        assert!(has_h2(port("http2", None)));
        assert!(has_h2(port("web", Some("kubernetes.io/h2c"))));
        assert!(has_h2(port("web", Some("grpc-web"))));
        assert!(!has_h2(port("http", None)));
        assert!(!has_h2(port("grpc", Some("http"))), "appProtocol wins");
        assert!(
            !has_h2(port("h2c", None)),
            "h2c counts only as appProtocol kubernetes.io/h2c"
        );
        let dns = dns_cluster(
            "c".into(),
            "api.example.com",
            &port("grpc", None),
            &MeshConfig::default(),
        );
        assert!(dns
            .typed_extension_protocol_options
            .contains_key(HTTP_PROTOCOL_OPTIONS));
    }
}
