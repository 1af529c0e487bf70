//! NONE: listeners bound on 127.0.0.1 (or OUTBOUND_LISTENER_ADDRESS), one per port.

use super::*;

#[test]
fn none_binds_one_listener_per_port_on_localhost() {
    let (listeners, cs) = sidecar_listeners(&model(&mesh()), &NONE);
    assert_eq!(
        table(&listeners),
        [
            row(
                "127.0.0.1_3306",
                "127.0.0.1:3306",
                &["tcp:outbound|3306||db.shop.svc.cluster.local"]
            ),
            row(
                "127.0.0.1_443",
                "127.0.0.1:443",
                &["tcp:outbound|443||pay.shop.svc.cluster.local"]
            ),
            row("127.0.0.1_50051", "127.0.0.1:50051", &["rds:50051"]),
            row(
                "127.0.0.1_5432",
                "127.0.0.1:5432",
                &["tcp:outbound|5432||ledger.bank.svc.cluster.local"]
            ),
            row("127.0.0.1_80", "127.0.0.1:80", &["rds:80"]),
            row("127.0.0.1_8080", "127.0.0.1:8080", &["rds:8080"]),
        ]
    );
    assert!(cs.is_empty(), "{cs:?}");
    for l in &listeners {
        assert_eq!(l.bind_to_port, None, "{}: binds", l.name);
        assert_eq!(l.use_original_dst, None);
        assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
        assert!(l.listener_filters.is_empty(), "no inspector in NONE");
        assert_eq!(l.listener_filters_timeout, Some(Duration::default()));
        assert!(l.continue_on_listener_filters_timeout);
        assert!(l.default_filter_chain.is_none());
        assert_eq!(l.filter_chains.len(), 1);
        assert!(l.filter_chains[0].filter_chain_match.is_none());
    }
}

#[test]
fn the_connection_manager_takes_rds_over_ads_and_routes_only() {
    let (listeners, _) = sidecar_listeners(&model(&mesh()), &NONE);
    let l = listeners.iter().find(|l| l.name == "127.0.0.1_80").unwrap();
    assert_eq!(
        l.filter_chains[0].filters[0].name,
        crate::translate::filters::HCM_FILTER
    );
    let hcm = first_hcm(l);
    assert_eq!(hcm.stat_prefix, "outbound_127.0.0.1_80");
    assert_eq!(hcm.codec_type, CodecType::Auto as i32);
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no RDS")
    };
    assert_eq!(rds.route_config_name, "80");
    let source = rds.config_source.unwrap();
    assert!(matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(source.initial_fetch_timeout, Some(Duration::default()));
    assert_eq!(source.resource_api_version, 2, "V3");
    assert_eq!(hcm.http_filters.len(), 1);
    assert_eq!(hcm.http_filters[0].name, "envoy.filters.http.router");
    let Some(http_filter::ConfigType::TypedConfig(router)) = &hcm.http_filters[0].config_type
    else {
        panic!("router without typed_config")
    };
    assert_eq!(router.type_url, Router::type_url());
    assert_eq!(hcm.use_remote_address, Some(BoolValue { value: false }));
    assert_eq!(hcm.normalize_path, Some(BoolValue { value: true }));
    assert_eq!(hcm.stream_idle_timeout, Some(Duration::default()));
}

#[test]
fn none_conflicts_keep_the_first_service_by_namespace_and_name() {
    type Case = (
        &'static str,
        Vec<Service>,
        &'static [&'static str],
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            "HTTP + HTTP share one listener and one route",
            vec![
                svc("shop", "a", &[("http", 80)], &[]),
                svc("shop", "b", &[("http-admin", 80)], &[]),
            ],
            &["rds:80"],
            vec![],
        ),
        (
            "TCP + TCP: the first keeps the port",
            vec![
                svc("shop", "b", &[("tcp", 80)], &[]),
                svc("shop", "a", &[("tcp", 80)], &[]),
            ],
            &["tcp:outbound|80||a.shop.svc.cluster.local"],
            vec![("shop/a:80 (TCP)", "shop/b:80 (TCP)")],
        ),
        (
            "HTTP then TCP",
            vec![
                svc("shop", "a", &[("http", 80)], &[]),
                svc("shop", "b", &[("tcp", 80)], &[]),
            ],
            &["rds:80"],
            vec![("shop/a:80 (HTTP)", "shop/b:80 (TCP)")],
        ),
        (
            "TCP then HTTP and gRPC",
            vec![
                svc("shop", "a", &[("mongo", 80)], &[]),
                svc("shop", "b", &[("http", 80)], &[]),
                svc("shop", "c", &[("grpc", 80)], &[]),
            ],
            &["tcp:outbound|80||a.shop.svc.cluster.local"],
            vec![
                ("shop/a:80 (TCP)", "shop/b:80 (HTTP)"),
                ("shop/a:80 (TCP)", "shop/c:80 (HTTP2)"),
            ],
        ),
        (
            "namespace first, then name",
            vec![
                svc("shop", "a", &[("tcp", 80)], &[]),
                svc("bank", "z", &[("tcp", 80)], &[]),
            ],
            &["tcp:outbound|80||z.bank.svc.cluster.local"],
            vec![("bank/z:80 (TCP)", "shop/a:80 (TCP)")],
        ),
        (
            "HTTP, TCP, HTTP: only the TCP one is left out",
            vec![
                svc("shop", "a", &[("http", 80)], &[]),
                svc("shop", "b", &[("tcp", 80)], &[]),
                svc("shop", "c", &[("grpc-web", 80)], &[]),
            ],
            &["rds:80"],
            vec![("shop/a:80 (HTTP)", "shop/b:80 (TCP)")],
        ),
    ];
    for (what, services, want_chains, want_conflicts) in cases {
        let (listeners, cs) = sidecar_listeners(&model(&services), &NONE);
        assert_eq!(listeners.len(), 1, "{what}");
        assert_eq!(chains(&listeners[0]), want_chains, "{what}");
        let got: Vec<_> = cs
            .iter()
            .map(|c| (c.kept.as_str(), c.dropped.as_str()))
            .collect();
        assert_eq!(got, want_conflicts, "{what}");
        for c in &cs {
            assert_eq!(c.listener, "127.0.0.1_80", "{what}");
            assert!(
                c.reason.contains("cannot share 127.0.0.1:80"),
                "{what}: {}",
                c.reason
            );
        }
    }
}

#[test]
fn outbound_listener_address_replaces_localhost_in_names_and_addresses() {
    let bind = Interception::None {
        bind: "127.0.0.2".parse().unwrap(),
    };
    let (listeners, _) = sidecar_listeners(&model(&mesh()[..1]), &bind);
    assert_eq!(
        table(&listeners),
        [row("127.0.0.2_80", "127.0.0.2:80", &["rds:80"])]
    );
    assert_eq!(
        first_hcm(&listeners[0]).stat_prefix,
        "outbound_127.0.0.2_80"
    );
}
