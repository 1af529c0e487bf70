//! REDIRECT: virtualOutbound, wildcard HTTP listeners, TCP listeners per cluster IP.

use super::*;

#[test]
fn redirect_layout() {
    let (listeners, cs) = sidecar_listeners(&model(&mesh()), &REDIRECT);
    let passthrough = "default tcp:PassthroughCluster";
    assert_eq!(
        table(&listeners),
        [
            row(
                "0.0.0.0_50051",
                "0.0.0.0:50051",
                &["rds:50051", passthrough]
            ),
            row("0.0.0.0_80", "0.0.0.0:80", &["rds:80", passthrough]),
            row("0.0.0.0_8080", "0.0.0.0:8080", &["rds:8080", passthrough]),
            row(
                "10.96.0.3_5432",
                "10.96.0.3:5432",
                &["tcp:outbound|5432||ledger.bank.svc.cluster.local"]
            ),
            row(
                "fd00::3_5432",
                "fd00::3:5432",
                &["tcp:outbound|5432||ledger.bank.svc.cluster.local"]
            ),
            row(
                "virtualOutbound",
                "0.0.0.0:15001",
                &["tcp:BlackHoleCluster", "tcp:PassthroughCluster"]
            ),
        ]
    );
    assert_eq!(
        conflicts(&cs),
        [
            (
                "virtualOutbound",
                "PassthroughCluster",
                "shop/pay:443 (TCP)"
            ),
            (
                "virtualOutbound",
                "PassthroughCluster",
                "shop/db:3306 (TCP)"
            ),
        ],
        "in port order"
    );
    assert!(cs[0].reason.contains("ExternalName"), "{}", cs[0].reason);
    assert!(cs[1].reason.contains("headless"), "{}", cs[1].reason);
    for l in listeners.iter().filter(|l| l.name != VIRTUAL_OUTBOUND) {
        assert_eq!(
            l.bind_to_port,
            Some(BoolValue { value: false }),
            "{}",
            l.name
        );
        assert_eq!(l.use_original_dst, None);
        assert_eq!(l.traffic_direction, TrafficDirection::Outbound as i32);
        assert_eq!(l.listener_filters_timeout, Some(Duration::default()));
        assert!(l.continue_on_listener_filters_timeout);
    }
}

#[test]
fn redirect_http_listener_inspects_and_passes_the_rest_through() {
    let (listeners, _) = sidecar_listeners(&model(&mesh()), &REDIRECT);
    let l = listeners.iter().find(|l| l.name == "0.0.0.0_80").unwrap();
    assert_eq!(l.listener_filters.len(), 1);
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.http_inspector"
    );
    let Some(listener_filter::ConfigType::TypedConfig(inspector)) =
        &l.listener_filters[0].config_type
    else {
        panic!("inspector without typed_config")
    };
    assert_eq!(inspector.type_url, HttpInspector::type_url());
    let m = l.filter_chains[0].filter_chain_match.as_ref().unwrap();
    assert_eq!(m.application_protocols, ["http/1.0", "http/1.1", "h2c"]);
    assert_eq!(m.transport_protocol, "raw_buffer");
    assert_eq!(
        m.destination_port, None,
        "the hand-off already chose the port"
    );
    assert_eq!(first_hcm(l).stat_prefix, "outbound_0.0.0.0_80");
    let default = l.default_filter_chain.as_ref().unwrap();
    assert_eq!(default.name, "PassthroughFilterChain");
    assert_eq!(listener_clusters(l), ["PassthroughCluster"]);
    let tcp = listeners
        .iter()
        .find(|l| l.name == "10.96.0.3_5432")
        .unwrap();
    assert!(tcp.listener_filters.is_empty());
    assert!(tcp.default_filter_chain.is_none());
    assert_eq!(
        listener_clusters(tcp),
        ["outbound|5432||ledger.bank.svc.cluster.local"]
    );
}

#[test]
fn virtual_outbound_hands_off_by_original_destination() {
    let custom = Interception::Redirect {
        virtual_outbound: "127.0.0.1:25001".parse().unwrap(),
    };
    for (interception, addr, port) in [
        (REDIRECT, "0.0.0.0:15001", 15001),
        (custom, "127.0.0.1:25001", 25001),
    ] {
        let (listeners, _) = sidecar_listeners(&model(&[]), &interception);
        assert_eq!(listeners.len(), 1);
        let vo = &listeners[0];
        assert_eq!(
            (vo.name.as_str(), address(vo).as_str()),
            (VIRTUAL_OUTBOUND, addr)
        );
        assert_eq!(vo.use_original_dst, Some(BoolValue { value: true }));
        assert_eq!(vo.bind_to_port, None, "virtualOutbound binds");
        assert!(vo.listener_filters.is_empty());
        assert_eq!(vo.traffic_direction, TrafficDirection::Outbound as i32);
        let names: Vec<_> = vo.filter_chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
        );
        let own = vo.filter_chains[0].filter_chain_match.as_ref().unwrap();
        assert_eq!(own.destination_port, Some(UInt32Value { value: port }));
        assert!(vo.filter_chains[1].filter_chain_match.is_none());
        assert_eq!(
            listener_clusters(vo),
            ["BlackHoleCluster", "PassthroughCluster"]
        );
    }
    let services = [svc("shop", "loop", &[("tcp", 25001)], &["10.96.0.7"])];
    let (listeners, cs) = sidecar_listeners(&model(&services), &custom);
    assert_eq!(
        listeners.len(),
        1,
        "virtualOutbound's own port gets no listener"
    );
    assert_eq!(
        conflicts(&cs),
        [(
            "0.0.0.0_25001",
            "the sidecar's own listener",
            "shop/loop:25001 (TCP)"
        )]
    );
}

#[test]
fn redirect_keeps_tcp_per_cluster_ip_so_ports_are_shared() {
    let services = [
        svc("shop", "web", &[("http", 80)], &["10.96.0.1"]),
        svc("shop", "raw", &[("tcp", 80)], &["10.96.0.2"]),
        svc("shop", "pg-a", &[("tcp", 5432)], &["10.96.0.3"]),
        svc("shop", "pg-b", &[("tcp", 5432)], &["10.96.0.4"]),
        svc("shop", "pg-c", &[("tcp", 5432)], &["10.96.0.4"]),
    ];
    let (listeners, cs) = sidecar_listeners(&model(&services), &REDIRECT);
    let names: Vec<_> = listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0.0.0.0_80",
            "10.96.0.2_80",
            "10.96.0.3_5432",
            "10.96.0.4_5432",
            "virtualOutbound"
        ]
    );
    assert_eq!(
        conflicts(&cs),
        [(
            "10.96.0.4_5432",
            "shop/pg-b:5432 (TCP)",
            "shop/pg-c:5432 (TCP)"
        )],
        "only a shared cluster IP conflicts"
    );
}
