//! Listener tables: shared builders here, NONE and REDIRECT layouts in their own files.

mod none;
mod redirect;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::listener::v3::listener_filter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::google::protobuf::Duration;
use prost::Name;

use super::*;
use crate::catalog::Service;
use crate::translate::testing::{address, chains, external, first_hcm, headless, model, svc};

const NONE: Interception = Interception::None {
    bind: Interception::DEFAULT_BIND,
};
const REDIRECT: Interception = Interception::Redirect {
    virtual_outbound: Interception::DEFAULT_VIRTUAL_OUTBOUND,
};

/// (name, address, chains) of every listener.
fn table(listeners: &[Listener]) -> Vec<(String, String, Vec<String>)> {
    listeners
        .iter()
        .map(|l| (l.name.clone(), address(l), chains(l)))
        .collect()
}

fn row(name: &str, addr: &str, chains: &[&str]) -> (String, String, Vec<String>) {
    (
        name.to_string(),
        addr.to_string(),
        chains.iter().map(|c| c.to_string()).collect(),
    )
}

/// (listener, kept, dropped) of every conflict.
fn conflicts(cs: &[Conflict]) -> Vec<(&str, &str, &str)> {
    cs.iter()
        .map(|c| (c.listener.as_str(), c.kept.as_str(), c.dropped.as_str()))
        .collect()
}

fn mesh() -> Vec<Service> {
    vec![
        svc("shop", "web", &[("http", 80)], &["10.96.0.1"]),
        svc("shop", "greeter", &[("grpc", 50051)], &["10.96.0.2"]),
        svc(
            "bank",
            "ledger",
            &[("tcp", 5432)],
            &["10.96.0.3", "fd00::3"],
        ),
        headless("shop", "db", &[("tcp-db", 3306), ("http-status", 8080)]),
        external("shop", "pay", &[("https", 443)], "api.example.com"),
    ]
}

#[test]
fn reserved_ports_get_no_listener_in_either_mode() {
    let services = [svc(
        "shop",
        "odd",
        &[("http", 15001), ("tcp", 15090), ("http-ok", 80)],
        &["10.96.0.9"],
    )];
    for (interception, ok, bind) in [
        (NONE, "127.0.0.1_80", "127.0.0.1"),
        (REDIRECT, "0.0.0.0_80", "0.0.0.0"),
    ] {
        let (listeners, cs) = sidecar_listeners(&model(&services), &interception);
        assert!(listeners.iter().any(|l| l.name == ok));
        assert!(
            listeners
                .iter()
                .all(|l| !l.name.ends_with("_15001") && !l.name.ends_with("_15090")),
            "{listeners:?}"
        );
        let l15001 = format!("{bind}_15001");
        let l15090 = format!("{bind}_15090");
        assert_eq!(
            conflicts(&cs),
            [
                (
                    l15001.as_str(),
                    "the sidecar's own listener",
                    "shop/odd:15001 (HTTP)"
                ),
                (
                    l15090.as_str(),
                    "the sidecar's own listener",
                    "shop/odd:15090 (TCP)"
                ),
            ]
        );
        assert!(cs[0].reason.contains("reserved"), "{}", cs[0].reason);
    }
}

#[test]
fn interception_from_node_metadata_and_mesh_default() {
    use InterceptionMode as M;
    let none = |ip: &str| Interception::None {
        bind: ip.parse().unwrap(),
    };
    let redirect = |a: &str| Interception::Redirect {
        virtual_outbound: a.parse().unwrap(),
    };
    let table: &[(Option<&str>, Option<&str>, M, Interception)] = &[
        (None, None, M::Redirect, REDIRECT),
        (None, None, M::None, NONE),
        (Some("NONE"), None, M::Redirect, NONE),
        (Some("REDIRECT"), None, M::None, REDIRECT),
        (Some("TPROXY"), None, M::None, NONE),
        (Some("none"), None, M::Redirect, REDIRECT),
        (
            Some("NONE"),
            Some("127.0.0.5"),
            M::Redirect,
            none("127.0.0.5"),
        ),
        (Some("NONE"), Some("::1"), M::Redirect, none("::1")),
        (Some("NONE"), Some("127.0.0.5:80"), M::Redirect, NONE),
        (
            None,
            Some("127.0.0.1:25001"),
            M::Redirect,
            redirect("127.0.0.1:25001"),
        ),
        (None, Some("127.0.0.1"), M::Redirect, REDIRECT),
    ];
    for (mode, addr, default, want) in table {
        assert_eq!(
            Interception::resolve(*mode, *addr, *default),
            *want,
            "{mode:?} {addr:?} {default:?}"
        );
    }
}

#[test]
fn equal_models_give_equal_listeners_whatever_the_input_order() {
    let mut reversed = mesh();
    reversed.reverse();
    for interception in [NONE, REDIRECT] {
        assert_eq!(
            sidecar_listeners(&model(&mesh()), &interception),
            sidecar_listeners(&model(&reversed), &interception)
        );
    }
}
