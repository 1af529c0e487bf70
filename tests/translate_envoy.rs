//! End-to-end tier, configuration only: the listeners, routes and clusters that translation
//! builds for a sidecar (NONE and REDIRECT) are accepted by the real Envoy 1.40.
//!
//! Each case writes a static bootstrap (binary protobuf, exactly the prost messages
//! translation returns) and runs `envoy --mode validate`: listeners as served (RDS over ADS),
//! and again with each RDS reference replaced by its route configuration inline, so Envoy
//! checks the routes too. A control case proves validation would catch a repeated domain.

mod common;

use std::process::Command;

use envoy_types::pb::envoy::config::bootstrap::v3::{bootstrap, Bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, grpc_service, ApiConfigSource, ApiVersion, GrpcService, Node,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use revplane::catalog::{build, Catalog, Object, Service, ServiceKind};
use revplane::translate::cluster::{blackhole_cluster, dns_cluster, passthrough_cluster};
use revplane::translate::listener::{sidecar_listeners, Interception};
use revplane::translate::outbound::OutboundModel;
use revplane::translate::route::sidecar_routes;
use revplane::translate::{admitted_services, translate, MeshConfig};

/// Every kind of port translation handles, conflicts and a reserved port included.
fn services() -> Vec<Service> {
    let with = |mut s: Service, ips: &[&str]| {
        s.cluster_ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        s
    };
    let mut headless = build::service("shop", "db", &[("http-status", 8080), ("tcp-db", 3306)]);
    headless.kind = ServiceKind::Headless;
    let mut external = build::service("shop", "pay", &[("http", 8081), ("https", 443)]);
    external.kind = ServiceKind::ExternalName("api.example.com".into());
    vec![
        with(
            build::service("shop", "web", &[("http", 80), ("grpc", 9000)]),
            &["10.96.0.1", "fd00::1"],
        ),
        with(
            build::service("shop", "api", &[("http-api", 80)]),
            &["10.96.0.2"],
        ),
        // Claims web's cluster IP: its domain goes, its virtual host stays.
        with(
            build::service("shop", "twin", &[("http", 80)]),
            &["10.96.0.1"],
        ),
        with(
            build::service("bank", "ledger", &[("tcp", 5432)]),
            &["10.96.0.3"],
        ),
        with(
            build::service("bank", "replica", &[("tcp", 5432)]),
            &["10.96.0.4"],
        ),
        // TCP after HTTP on 80: left out in NONE, its own listener in REDIRECT.
        with(
            build::service("shop", "raw", &[("tcp", 80)]),
            &["10.96.0.5"],
        ),
        with(
            build::service("shop", "odd", &[("http", 15021)]),
            &["10.96.0.6"],
        ),
        headless,
        external,
    ]
}

struct Config {
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
    clusters: Vec<Cluster>,
}

fn config(interception: Interception) -> Config {
    let mut catalog = Catalog::default();
    for s in services() {
        catalog.apply(Object::Service(s));
    }
    let mesh = MeshConfig::default();
    let model = OutboundModel::new(
        admitted_services(&catalog).map(|s| s.object()),
        &mesh.domain,
    );
    let (listeners, conflicts) = sidecar_listeners(&model, &interception);
    assert!(
        !conflicts.is_empty(),
        "the services above conflict somewhere"
    );
    let (routes, _) = sidecar_routes(&model, Some("shop"));
    let mut clusters = translate(&catalog).clusters;
    clusters.push(passthrough_cluster(&mesh));
    clusters.push(blackhole_cluster());
    Config {
        listeners,
        routes,
        clusters,
    }
}

/// A bootstrap with `config` static, EDS and RDS over an ADS cluster `xds`; with `inline`,
/// every RDS reference is replaced by its route configuration.
fn bootstrap(config: &Config, inline: bool) -> Bootstrap {
    let mut listeners = config.listeners.clone();
    if inline {
        for chain in listeners.iter_mut().flat_map(|l| &mut l.filter_chains) {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
                let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                    panic!("HCM without RDS")
                };
                let route = config
                    .routes
                    .iter()
                    .find(|r| r.name == rds.route_config_name)
                    .unwrap_or_else(|| panic!("no route config {:?}", rds.route_config_name));
                hcm.route_specifier = Some(RouteSpecifier::RouteConfig(route.clone()));
                *any = Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: hcm.encode_to_vec(),
                };
            }
        }
    }
    let grpc_port = build::service("x", "x", &[("grpc", 15010)]).ports[0].clone();
    let xds = Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        ..dns_cluster(
            "xds".into(),
            "127.0.0.1",
            &grpc_port,
            &MeshConfig::default(),
        )
    };
    let mut clusters = config.clusters.clone();
    clusters.push(xds);
    Bootstrap {
        node: Some(Node {
            id: "sidecar~127.0.0.1~validate.shop~shop.svc.cluster.local".into(),
            cluster: "validate.shop".into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "xds".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `envoy --mode validate` on `bootstrap`; returns whether Envoy accepted it, and its
/// output.
fn validate(bootstrap: &Bootstrap) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    let out = Command::new(common::envoy::envoy_binary())
        .args(["--mode", "validate", "-l", "warning", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_accepted(interception: Interception) {
    let config = config(interception);
    for inline in [false, true] {
        let (ok, out) = validate(&bootstrap(&config, inline));
        assert!(
            ok,
            "{interception:?} inline={inline}: Envoy refused:\n{out}"
        );
        assert!(out.contains("OK"), "{out}");
        assert!(
            !out.to_lowercase().contains("deprecated"),
            "{interception:?} inline={inline}: deprecated fields:\n{out}"
        );
    }
}

#[test]
fn envoy_accepts_the_none_layout() {
    assert_accepted(Interception::None {
        bind: Interception::DEFAULT_BIND,
    });
}

#[test]
fn envoy_accepts_the_redirect_layout() {
    assert_accepted(Interception::Redirect {
        virtual_outbound: Interception::DEFAULT_VIRTUAL_OUTBOUND,
    });
}

#[test]
fn envoy_would_refuse_a_repeated_domain() {
    let mut config = config(Interception::None {
        bind: Interception::DEFAULT_BIND,
    });
    let eighty = config.routes.iter_mut().find(|r| r.name == "80").unwrap();
    let first = eighty.virtual_hosts[0].domains[0].clone();
    eighty.virtual_hosts[1].domains.push(first);
    let (ok, out) = validate(&bootstrap(&config, true));
    assert!(!ok, "validation must catch what dedupe prevents:\n{out}");
    assert!(out.contains("Only unique values for domains"), "{out}");
}
