use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType;
use envoy_types::pb::google::protobuf::Duration;
use prost::Name;

use super::*;
use crate::catalog::Service;
use crate::translate::testing::{external, headless, model, svc};

/// A virtual host's name and domains.
type Host = (String, Vec<String>);

/// (route config, [(virtual host, domains)]) of every route configuration.
fn table(configs: &[RouteConfiguration]) -> Vec<(String, Vec<Host>)> {
    configs
        .iter()
        .map(|c| {
            let vhosts = c
                .virtual_hosts
                .iter()
                .map(|v| (v.name.clone(), v.domains.clone()))
                .collect();
            (c.name.clone(), vhosts)
        })
        .collect()
}

fn domains_of(service: Service, caller: Option<&str>) -> Vec<String> {
    sidecar_domains(&model(&[service]).ports[0], caller)
}

#[test]
fn domain_table() {
    let web = || svc("shop", "web", &[("http", 80)], &["10.96.0.1", "fd00::1"]);
    let fqdn = "web.shop.svc.cluster.local";
    let cases: Vec<(&str, Service, Option<&str>, Vec<&str>)> = vec![
        (
            "same namespace: the short name too",
            web(),
            Some("shop"),
            vec![
                fqdn,
                "web.shop.svc.cluster.local:80",
                "web",
                "web:80",
                "web.shop",
                "web.shop:80",
                "web.shop.svc",
                "web.shop.svc:80",
                "10.96.0.1",
                "10.96.0.1:80",
                "[fd00::1]",
                "[fd00::1]:80",
            ],
        ),
        (
            "other namespace: no short name",
            web(),
            Some("bank"),
            vec![
                fqdn,
                "web.shop.svc.cluster.local:80",
                "web.shop",
                "web.shop:80",
                "web.shop.svc",
                "web.shop.svc:80",
                "10.96.0.1",
                "10.96.0.1:80",
                "[fd00::1]",
                "[fd00::1]:80",
            ],
        ),
        (
            "unknown caller namespace: no short name",
            svc("shop", "web", &[("http", 80)], &[]),
            None,
            vec![
                fqdn,
                "web.shop.svc.cluster.local:80",
                "web.shop",
                "web.shop:80",
                "web.shop.svc",
                "web.shop.svc:80",
            ],
        ),
        (
            "headless: pod hostnames under every DNS name, no IP",
            headless("shop", "db", &[("http", 8080)]),
            Some("shop"),
            vec![
                "db.shop.svc.cluster.local",
                "db.shop.svc.cluster.local:8080",
                "db",
                "db:8080",
                "db.shop",
                "db.shop:8080",
                "db.shop.svc",
                "db.shop.svc:8080",
                "*.db.shop.svc.cluster.local",
                "*.db.shop.svc.cluster.local:8080",
                "*.db",
                "*.db:8080",
                "*.db.shop",
                "*.db.shop:8080",
                "*.db.shop.svc",
                "*.db.shop.svc:8080",
            ],
        ),
        (
            "ExternalName: its own names",
            external("shop", "pay", &[("http", 80)], "api.example.com"),
            Some("bank"),
            vec![
                "pay.shop.svc.cluster.local",
                "pay.shop.svc.cluster.local:80",
                "pay.shop",
                "pay.shop:80",
                "pay.shop.svc",
                "pay.shop.svc:80",
            ],
        ),
    ];
    for (what, service, caller, want) in cases {
        assert_eq!(domains_of(service, caller), want, "{what}");
    }
}

#[test]
fn one_route_config_per_http_port_with_one_virtual_host_per_service() {
    let services = [
        svc(
            "shop",
            "web",
            &[("http", 80), ("grpc", 9000)],
            &["10.96.0.1"],
        ),
        svc("bank", "ledger", &[("http-api", 80), ("tcp", 5432)], &[]),
        svc("shop", "raw", &[("tcp", 80)], &[]),
        svc("shop", "big", &[("http2", 10000)], &[]),
        svc("shop", "odd", &[("http", 15021)], &[]),
    ];
    let (configs, conflicts) = sidecar_routes(&model(&services), Some("shop"));
    assert!(conflicts.is_empty(), "{conflicts:?}");
    let shape: Vec<(String, Vec<String>)> = table(&configs)
        .into_iter()
        .map(|(name, vhosts)| (name, vhosts.into_iter().map(|(v, _)| v).collect()))
        .collect();
    let row = |n: &str, v: &[&str]| (n.to_string(), v.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        shape,
        [
            row("10000", &["big.shop.svc.cluster.local:10000"]),
            row(
                "80",
                &[
                    "ledger.bank.svc.cluster.local:80",
                    "web.shop.svc.cluster.local:80"
                ]
            ),
            row("9000", &["web.shop.svc.cluster.local:9000"]),
        ],
        "TCP ports (5432) and reserved ports (15021) get none; raw's TCP port 80 adds nothing"
    );
    for c in &configs {
        assert_eq!(c.validate_clusters, Some(BoolValue { value: false }));
        assert!(!c.ignore_port_in_host_matching);
    }
    let eighty = &configs[1];
    assert!(eighty.virtual_hosts[1].domains.contains(&"web".to_string()));
    assert!(
        !eighty.virtual_hosts[0]
            .domains
            .contains(&"ledger".to_string()),
        "bank/ledger gets no short name for a caller in shop"
    );
    assert_eq!(
        route_clusters(eighty),
        [
            "outbound|80||ledger.bank.svc.cluster.local",
            "outbound|80||web.shop.svc.cluster.local"
        ]
    );
}

#[test]
fn the_default_route_is_istios() {
    let services = [svc("shop", "web", &[("grpc", 9000)], &[])];
    let (configs, _) = sidecar_routes(&model(&services), None);
    let route = &configs[0].virtual_hosts[0].routes[0];
    assert_eq!(route.name, "default");
    assert_eq!(route.r#match, Some(prefix_slash()));
    assert_eq!(
        route.decorator.as_ref().unwrap().operation,
        "web.shop.svc.cluster.local:9000/*"
    );
    let Some(Action::Route(action)) = &route.action else {
        panic!("not a route action")
    };
    assert_eq!(
        action.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9000||web.shop.svc.cluster.local".into()
        ))
    );
    assert_eq!(action.timeout, Some(Duration::default()));
    assert_eq!(
        action
            .max_stream_duration
            .as_ref()
            .unwrap()
            .grpc_timeout_header_max,
        Some(Duration::default())
    );
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!(
        retry.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(retry.num_retries, Some(UInt32Value { value: 2 }));
    assert_eq!(retry.host_selection_retry_max_attempts, 5);
    assert_eq!(retry.retry_host_predicate.len(), 1);
    let predicate = &retry.retry_host_predicate[0];
    assert_eq!(predicate.name, "envoy.retry_host_predicates.previous_hosts");
    let Some(ConfigType::TypedConfig(any)) = &predicate.config_type else {
        panic!("predicate without typed_config")
    };
    assert_eq!(any.type_url, PreviousHostsPredicate::type_url());
}

#[test]
fn a_repeated_domain_stays_with_the_first_virtual_host_and_is_reported() {
    // Two Services claiming one cluster IP (a hand-written manifest can say so).
    let services = [
        svc("shop", "b", &[("http", 80)], &["10.96.0.9"]),
        svc("shop", "a", &[("http", 80)], &["10.96.0.9", "10.96.0.10"]),
    ];
    let (configs, conflicts) = sidecar_routes(&model(&services), Some("shop"));
    let t = table(&configs);
    let (a, b) = (&t[0].1[0], &t[0].1[1]);
    assert_eq!(a.0, "a.shop.svc.cluster.local:80");
    assert!(a.1.contains(&"10.96.0.9:80".to_string()));
    assert!(!b.1.iter().any(|d| d.starts_with("10.96.0.9")), "{:?}", b.1);
    assert!(b.1.contains(&"b".to_string()), "b keeps its other domains");
    let all: Vec<&String> = t[0].1.iter().flat_map(|(_, d)| d).collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        all.len(),
        unique.len(),
        "no domain twice in one route config"
    );
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.listener, "80");
    assert_eq!(c.kept, "a.shop.svc.cluster.local:80");
    assert_eq!(c.dropped, "b.shop.svc.cluster.local:80");
    assert!(
        c.reason.contains("\"10.96.0.9\", \"10.96.0.9:80\""),
        "{}",
        c.reason
    );
}

#[test]
fn headless_and_external_name_http_ports_are_routed_too() {
    let services = [
        headless("shop", "db", &[("http", 8080)]),
        external("shop", "pay", &[("http", 8080)], "api.example.com"),
    ];
    let (configs, conflicts) = sidecar_routes(&model(&services), Some("shop"));
    assert!(
        conflicts.is_empty(),
        "wildcards do not collide: {conflicts:?}"
    );
    assert_eq!(
        route_clusters(&configs[0]),
        [
            "outbound|8080||db.shop.svc.cluster.local",
            "outbound|8080||pay.shop.svc.cluster.local"
        ]
    );
}

#[test]
fn a_configuration_encoded_one_virtual_host_at_a_time_is_the_whole_messages_encoding() {
    let services = [
        svc(
            "shop",
            "web",
            &[("http", 80), ("grpc", 9000)],
            &["10.96.0.1"],
        ),
        svc("bank", "ledger", &[("http-api", 80)], &["10.96.0.2"]),
        // Repeats web's cluster IP: a conflict, so a virtual host loses domains.
        svc("shop", "copy", &[("http", 80)], &["10.96.0.1"]),
        headless("shop", "db", &[("http", 80)]),
    ];
    let model = model(&services);
    let (whole, _) = sidecar_routes(&model, Some("shop"));
    let (plans, conflicts) = sidecar_route_plans(&model, Some("shop"));
    assert!(!conflicts.is_empty());
    assert_eq!(plans.len(), whole.len());
    for (plan, config) in plans.into_iter().zip(&whole) {
        let (name, bytes, clusters) = plan.encode();
        assert_eq!(name, config.name);
        assert_eq!(bytes, config.encode_to_vec(), "route config {name}");
        assert_eq!(clusters, route_clusters(config));
    }
    // An empty one too (no virtual host keeps a domain is impossible here, so build it).
    let empty = SidecarRoute {
        name: "81".to_string(),
        hosts: Vec::new(),
    };
    let expected = RouteConfiguration {
        name: "81".to_string(),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    assert_eq!(empty.encode().1, expected.encode_to_vec());
}
