//! The Envoy filters outbound listeners are made of: the HTTP connection manager (sidecar and
//! proxyless flavours), the TCP proxy, the router, and the listener filters, each with its
//! canonical name and a `typed_config` whose type URL comes from `prost::Name`.

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use prost::{Message, Name};

/// Name of the HTTP connection manager network filter.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// Name of the TCP proxy network filter.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
/// Name of the router HTTP filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Name of the HTTP inspector listener filter.
pub const HTTP_INSPECTOR_FILTER: &str = "envoy.filters.listener.http_inspector";

/// `message` packed into an `Any` with its canonical type URL.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A zero protobuf Duration (Envoy reads 0 as "no timeout" in every field set here).
pub fn zero() -> Option<Duration> {
    Some(Duration::default())
}

/// A TCP proxy to `cluster`, whose stats are named after the cluster (as Istio does).
pub fn tcp_proxy(cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&proxy))),
    }
}

/// The sidecar's HTTP connection manager: routes from RDS `route` over ADS (no initial fetch
/// timeout, so a listener waits for its routes), router only, no idle timeout for long gRPC
/// streams, paths normalized, the caller's address not trusted.
pub fn sidecar_hcm(listener: &str, route: &str) -> Filter {
    let mut config_source = ads();
    config_source.initial_fetch_timeout = zero();
    let hcm = HttpConnectionManager {
        stat_prefix: format!("outbound_{listener}"),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(config_source),
            route_config_name: route.to_string(),
        })),
        http_filters: vec![router()],
        use_remote_address: Some(BoolValue { value: false }),
        normalize_path: Some(BoolValue { value: true }),
        stream_idle_timeout: zero(),
        ..Default::default()
    };
    Filter {
        name: HCM_FILTER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

/// The HTTP connection manager of a proxyless gRPC API listener: RDS `route` over ADS and the
/// router, which is all grpc-core reads (gRFC A27).
pub fn proxyless_hcm(route: &str) -> Any {
    any(&HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route.to_string(),
        })),
        http_filters: vec![router()],
        ..Default::default()
    })
}

/// The HTTP inspector listener filter (detects HTTP/1.1 and h2c for ALPN matching).
pub fn http_inspector() -> ListenerFilter {
    ListenerFilter {
        name: HTTP_INSPECTOR_FILTER.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &HttpInspector::default(),
        ))),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: ROUTER_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The clusters a network filter sends connections to (a TCP proxy's; none for others).
pub fn filter_clusters(filter: &Filter) -> Vec<String> {
    let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Vec::new();
    };
    if any.type_url != TcpProxy::type_url() {
        return Vec::new();
    }
    match TcpProxy::decode(any.value.as_slice())
        .ok()
        .and_then(|p| p.cluster_specifier)
    {
        Some(ClusterSpecifier::Cluster(name)) => vec![name],
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            w.clusters.into_iter().map(|c| c.name).collect()
        }
        None => Vec::new(),
    }
}
