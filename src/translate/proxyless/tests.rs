use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::{Message, Name};

use super::*;
use crate::catalog::Service;
use crate::mesh::{LbPolicy as MeshLb, MeshConfig};
use crate::translate::cluster::{blackhole_cluster, dns_cluster, eds_cluster, passthrough_cluster};
use crate::translate::route::route_clusters;
use crate::translate::testing::{external, headless, model, svc};

fn services() -> Vec<Service> {
    vec![
        svc("demo", "greeter", &[("grpc", 50051)], &["10.96.0.5"]),
        svc("demo", "web", &[("http", 80), ("tcp", 5432)], &[]),
        headless("demo", "pods", &[("grpc", 50052)]),
        external("demo", "pay", &[("grpc", 443)], "api.example.com"),
    ]
}

fn names(listeners: &[Listener]) -> Vec<&str> {
    listeners.iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn every_name_a_client_may_dial_has_a_listener() {
    let all = model(&services());
    let in_demo = [
        "greeter.demo.svc.cluster.local:50051",
        "greeter.demo.svc:50051",
        "greeter.demo:50051",
        "greeter:50051",
        "pods.demo.svc.cluster.local:50052",
        "pods.demo.svc:50052",
        "pods.demo:50052",
        "pods:50052",
        "web.demo.svc.cluster.local:80",
        "web.demo.svc:80",
        "web.demo:80",
        "web:80",
    ];
    assert_eq!(names(&proxyless_listeners(&all, Some("demo"))), in_demo);
    let elsewhere: Vec<&str> = in_demo
        .iter()
        .copied()
        .filter(|n| n.matches('.').count() > 0)
        .collect();
    assert_eq!(
        names(&proxyless_listeners(&all, Some("other"))),
        elsewhere,
        "short names only for the caller's namespace"
    );
    assert_eq!(names(&proxyless_listeners(&all, None)), elsewhere);
}

#[test]
fn an_api_listener_takes_rds_named_like_the_cluster() {
    let listeners = proxyless_listeners(&model(&services()), Some("demo"));
    let l = listeners
        .iter()
        .find(|l| l.name == "greeter:50051")
        .unwrap();
    assert!(l.filter_chains.is_empty() && l.address.is_none());
    let any = l
        .api_listener
        .as_ref()
        .unwrap()
        .api_listener
        .as_ref()
        .unwrap();
    assert_eq!(any.type_url, HttpConnectionManager::type_url());
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no RDS")
    };
    assert_eq!(
        rds.route_config_name,
        "outbound|50051||greeter.demo.svc.cluster.local"
    );
    assert!(matches!(
        rds.config_source.unwrap().config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    let filters: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        ["envoy.filters.http.router"],
        "router, last and only"
    );
    assert!(hcm.http_filters[0].config_type.is_some());
    assert_eq!(hcm.xff_num_trusted_hops, 0);
}

#[test]
fn one_route_per_port_answering_to_every_name_form() {
    // In the model's order; a variant keeps them by name.
    let mut routes: Vec<_> = proxyless_routes(&model(&services())).collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<_> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "outbound|50051||greeter.demo.svc.cluster.local",
            "outbound|50052||pods.demo.svc.cluster.local",
            "outbound|80||web.demo.svc.cluster.local",
        ]
    );
    let greeter = &routes[0];
    assert_eq!(greeter.virtual_hosts.len(), 1);
    let vh = &greeter.virtual_hosts[0];
    assert_eq!(vh.name, "greeter.demo.svc.cluster.local:50051");
    assert_eq!(
        vh.domains,
        [
            "greeter.demo.svc.cluster.local",
            "greeter.demo.svc.cluster.local:50051",
            "greeter",
            "greeter:50051",
            "greeter.demo",
            "greeter.demo:50051",
            "greeter.demo.svc",
            "greeter.demo.svc:50051",
        ]
    );
    assert_eq!(vh.routes.len(), 1);
    let Some(Action::Route(action)) = &vh.routes[0].action else {
        panic!("not a route action")
    };
    assert!(action.retry_policy.is_none(), "grpc NACKs num_retries 0");
    assert_eq!(
        route_clusters(greeter),
        ["outbound|50051||greeter.demo.svc.cluster.local"]
    );
    // Every listener names a route that exists.
    for l in proxyless_listeners(&model(&services()), Some("demo")) {
        let any = l.api_listener.unwrap().api_listener.unwrap();
        let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("no RDS")
        };
        assert!(
            routes.iter().any(|r| r.name == rds.route_config_name),
            "{}",
            l.name
        );
    }
}

#[test]
fn proxyless_clusters_are_eds_and_round_robin_only() {
    let mesh = MeshConfig {
        lb_policy: MeshLb::LeastRequest,
        ..Default::default()
    };
    let greeter = &services()[0];
    let eds = eds_cluster("outbound|50051||g".into(), &greeter.ports[0], &mesh);
    let got = proxyless_cluster(&eds).unwrap();
    assert_eq!(got.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(
        Cluster {
            lb_policy: eds.lb_policy,
            ..got
        },
        eds,
        "nothing else changes"
    );
    let dns = dns_cluster("d".into(), "api.example.com", &greeter.ports[0], &mesh);
    assert_eq!(proxyless_cluster(&dns), None, "ExternalName");
    assert_eq!(proxyless_cluster(&passthrough_cluster(&mesh)), None);
    assert_eq!(proxyless_cluster(&blackhole_cluster()), None);
}
