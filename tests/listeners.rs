//! In-process tier of listeners and routes: each kind of proxy gets its own variant of LDS
//! and RDS (interception mode and listener address, namespace, proxyless), each variant is
//! encoded once however many streams share it, and `/debug/config` shows them.

mod common;

use common::*;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

fn first(type_url: &str, id: &str, metadata: &[(&str, &str)], names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node(id, metadata)),
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn listeners(r: &DiscoveryResponse) -> Vec<Listener> {
    assert_eq!(r.type_url, LDS);
    r.resources
        .iter()
        .map(|a| Listener::decode(a.value.as_slice()).unwrap())
        .collect()
}

fn routes(r: &DiscoveryResponse) -> Vec<RouteConfiguration> {
    assert_eq!(r.type_url, RDS);
    r.resources
        .iter()
        .map(|a| RouteConfiguration::decode(a.value.as_slice()).unwrap())
        .collect()
}

fn domains_of(route: &RouteConfiguration, host: &str) -> Vec<String> {
    route
        .virtual_hosts
        .iter()
        .find(|vh| vh.name == host)
        .map(|vh| vh.domains.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_sidecar_gets_the_listeners_of_its_interception_and_the_routes_of_its_namespace() {
    let server = start("canary", &example_mesh()).await;
    let shop = [
        ("REVISION", "canary"),
        ("NAMESPACE", "shop"),
        ("INTERCEPTION_MODE", "NONE"),
        ("OUTBOUND_LISTENER_ADDRESS", "127.0.0.9"),
    ];
    let mut client = AdsClient::open(&server, first(LDS, "sidecar~a", &shop, &[]))
        .await
        .unwrap();
    let names: Vec<String> = listeners(&client.recv().await.unwrap())
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(
        names.contains(&"127.0.0.9_80".to_string())
            && names.contains(&"127.0.0.9_9000".to_string()),
        "NONE listeners bind the given address: {names:?}"
    );
    assert!(!names.iter().any(|n| n == "virtualOutbound"));

    let mut rds = AdsClient::open(&server, first(RDS, "sidecar~a2", &shop, &["80"]))
        .await
        .unwrap();
    let route = routes(&rds.recv().await.unwrap()).remove(0);
    let frontend = domains_of(&route, "frontend.shop.svc.cluster.local:80");
    for domain in [
        "frontend",
        "frontend:80",
        "frontend.shop",
        "frontend.shop.svc.cluster.local:80",
    ] {
        assert!(
            frontend.contains(&domain.to_string()),
            "{domain} in {frontend:?}"
        );
    }
    // From another namespace, no short name.
    let payments = [("REVISION", "canary"), ("NAMESPACE", "payments")];
    let mut other = AdsClient::open(&server, first(RDS, "sidecar~b", &payments, &["80"]))
        .await
        .unwrap();
    let route = routes(&other.recv().await.unwrap()).remove(0);
    let frontend = domains_of(&route, "frontend.shop.svc.cluster.local:80");
    assert!(frontend.contains(&"frontend.shop".to_string()));
    assert!(!frontend.contains(&"frontend".to_string()), "{frontend:?}");

    // REDIRECT (the mesh default): virtualOutbound and listeners that do not bind.
    let redirect = [("REVISION", "canary"), ("NAMESPACE", "shop")];
    let mut r = AdsClient::open(&server, first(LDS, "sidecar~c", &redirect, &[]))
        .await
        .unwrap();
    let names: Vec<String> = listeners(&r.recv().await.unwrap())
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert!(names.contains(&"virtualOutbound".to_string()), "{names:?}");
    assert!(names.contains(&"0.0.0.0_80".to_string()), "{names:?}");

    // /debug/config shows the variants built so far and the listeners and routes.
    let config: serde_json::Value =
        serde_json::from_str(&admin_get(server.admin_addr, "/debug/config").await.1).unwrap();
    let variants: Vec<&str> = config["snapshot"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["for"].as_str().unwrap())
        .collect();
    for wanted in [
        "listeners NONE 127.0.0.9",
        "listeners REDIRECT 0.0.0.0:15001",
        "routes namespace shop",
        "routes namespace payments",
    ] {
        assert!(variants.contains(&wanted), "{wanted} in {variants:?}");
    }
    let lds = &config["snapshot"]["types"]["lds"]["resources"];
    assert!(
        lds.as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "0.0.0.0_80" && l["routes"][0] == "80"),
        "{lds}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_variant_is_encoded_once_however_many_proxies_share_it() {
    let server = start("canary", &example_mesh()).await;
    let meta = [
        ("REVISION", "canary"),
        ("NAMESPACE", "shop"),
        ("INTERCEPTION_MODE", "NONE"),
    ];
    let mut first_client = AdsClient::open(&server, first(LDS, "sidecar~1", &meta, &[]))
        .await
        .unwrap();
    let one = first_client.recv().await.unwrap();
    let encodes = server.publisher_metrics.encodes.get();
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = AdsClient::open(
            &server,
            first(LDS, &format!("sidecar~{}", i + 2), &meta, &[]),
        )
        .await
        .unwrap();
        let r = c.recv().await.unwrap();
        assert_eq!(r.version_info, one.version_info);
        assert_eq!(r.resources, one.resources);
        clients.push(c);
    }
    assert_eq!(
        server.publisher_metrics.encodes.get(),
        encodes,
        "20 more proxies of the same view encode nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_proxyless_client_gets_the_listener_it_names_and_its_route() {
    let server = start("canary", &example_mesh()).await;
    let grpc = [
        ("REVISION", "canary"),
        ("NAMESPACE", "shop"),
        ("GENERATOR", "grpc"),
    ];
    let target = "frontend.shop.svc.cluster.local:9090";
    let mut client = AdsClient::open(&server, first(LDS, "grpc~1", &grpc, &[target]))
        .await
        .unwrap();
    let got = listeners(&client.recv().await.unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, target);
    assert!(got[0].api_listener.is_some(), "an API listener");
    let route_name = "outbound|9090||frontend.shop.svc.cluster.local";
    let mut rds = AdsClient::open(&server, first(RDS, "grpc~2", &grpc, &[route_name]))
        .await
        .unwrap();
    let route = routes(&rds.recv().await.unwrap()).remove(0);
    assert_eq!(route.name, route_name);
    assert!(route.virtual_hosts[0].domains.contains(&target.to_string()));
    server.stop().await;
}
