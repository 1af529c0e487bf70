//! Revision names, node metadata and the gate's outcomes (DESIGN.md §1 table).

use super::*;
use envoy_types::pb::google::protobuf::Value;

fn node(id: &str, fields: &[(&str, Kind)]) -> Node {
    Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(v.clone()),
                        },
                    )
                })
                .collect(),
        }),
        ..Default::default()
    }
}

fn s(v: &str) -> Kind {
    Kind::StringValue(v.to_string())
}

#[test]
fn revision_names_follow_dns_1123_labels() {
    for ok in [
        "stable",
        "canary",
        "1-25-0",
        "default",
        "a",
        &"a".repeat(63),
    ] {
        assert!(ok.parse::<Revision>().is_ok(), "{ok} should be valid");
    }
    for bad in [
        "",
        "Canary",
        "-a",
        "a-",
        "a.b",
        "a_b",
        &"a".repeat(64),
        "rev 1",
    ] {
        let err = bad.parse::<Revision>().unwrap_err();
        assert!(err.to_string().contains("DNS-1123"), "{err}");
    }
}

#[test]
fn gate_admits_own_revision_and_reads_metadata() {
    let gate = RevisionGate::new("canary".parse().unwrap());
    let n = node(
        "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local",
        &[
            ("REVISION", s("canary")),
            ("NAMESPACE", s("shop")),
            ("POD_NAME", s("a")),
        ],
    );
    let id = gate.admit(Some(&n)).unwrap();
    assert_eq!(id.revision.as_str(), "canary");
    assert_eq!(id.namespace.as_deref(), Some("shop"));
    assert_eq!(id.pod_name.as_deref(), Some("a"));
    assert_eq!(id.service_account, None);
}

#[test]
fn gate_outcomes_match_the_contract() {
    let gate = RevisionGate::new("canary".parse().unwrap());
    let missing = gate.admit(None).unwrap_err();
    assert_eq!(missing.reason(), "missing_node");
    assert_eq!(missing.to_status().code(), tonic::Code::InvalidArgument);

    let bad = gate
        .admit(Some(&node("n1", &[("REVISION", s("Not_Valid"))])))
        .unwrap_err();
    assert_eq!(bad.reason(), "bad_revision");
    assert_eq!(bad.to_status().code(), tonic::Code::InvalidArgument);

    let not_string = gate
        .admit(Some(&node("n1", &[("REVISION", Kind::NumberValue(1.0))])))
        .unwrap_err();
    assert_eq!(not_string.reason(), "bad_revision");

    let other = gate
        .admit(Some(&node("n2", &[("REVISION", s("stable"))])))
        .unwrap_err();
    assert_eq!(other.reason(), "revision_mismatch");
    let status = other.to_status();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    for part in ["n2", "stable", "canary"] {
        assert!(status.message().contains(part), "{}", status.message());
    }
}

#[test]
fn proxyless_clients_are_told_apart_from_envoys() {
    let gate = RevisionGate::new(Revision::default_revision());
    let envoy = Node {
        user_agent_name: "envoy".into(),
        ..node("e", &[("INTERCEPTION_MODE", s("NONE"))])
    };
    let id = gate.admit(Some(&envoy)).unwrap();
    assert!(!id.proxyless);
    assert_eq!(id.interception_mode.as_deref(), Some("NONE"));
    let grpc = Node {
        user_agent_name: "gRPC Python".into(),
        ..node("g", &[])
    };
    assert!(gate.admit(Some(&grpc)).unwrap().proxyless);
    assert!(
        gate.admit(Some(&node("m", &[("GENERATOR", s("grpc"))])))
            .unwrap()
            .proxyless
    );
}

#[test]
fn missing_revision_means_default() {
    let canary = RevisionGate::new("canary".parse().unwrap());
    let unlabeled = node("n3", &[]);
    let err = canary.admit(Some(&unlabeled)).unwrap_err();
    assert!(matches!(err, Rejection::RevisionMismatch { ref proxy, .. } if proxy == "default"));
    let default = RevisionGate::new(Revision::default_revision());
    assert!(default.admit(Some(&unlabeled)).is_ok());
}

#[test]
fn recheck_allows_absent_node_and_refuses_a_switch() {
    let gate = RevisionGate::new("canary".parse().unwrap());
    assert!(gate.recheck(None).is_ok());
    assert!(gate
        .recheck(Some(&node("n", &[("REVISION", s("stable"))])))
        .is_err());
}

#[test]
fn oversized_node_ids_and_metadata_are_refused_with_a_short_message() {
    let gate = RevisionGate::new("canary".parse().unwrap());
    let huge = "n".repeat(1 << 20);
    let long_id = gate
        .admit(Some(&node(&huge, &[("REVISION", s("stable"))])))
        .unwrap_err();
    assert_eq!(long_id.reason(), "oversized_node");
    let status = long_id.to_status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().len() < 1024, "{}", status.message().len());
    assert!(status
        .message()
        .contains("node id is 1048576 bytes, over the 1024"));
    assert!(long_id.node_id().len() <= crate::echo::ECHO_BYTES);
    assert!(
        long_id.node().to_string().ends_with("... (1048576 bytes)"),
        "the log shows the start and the whole length"
    );
    assert!(status.message().contains("... (1048576 bytes)"));

    for key in READ_METADATA {
        let refused = gate
            .admit(Some(&node("n1", &[(key, s(&huge))])))
            .unwrap_err();
        assert_eq!(refused.reason(), "oversized_node", "{key}");
        let message = refused.to_status().message().to_string();
        assert!(
            message.contains(&format!("metadata {key} is 1048576 bytes")),
            "{message}"
        );
        assert!(message.len() < 1024);
    }
    let long_cluster = Node {
        cluster: huge.clone(),
        ..node("n1", &[("REVISION", s("canary"))])
    };
    assert_eq!(
        gate.admit(Some(&long_cluster)).unwrap_err().reason(),
        "oversized_node"
    );
    // Metadata revplane does not read may be as large as the request allows.
    let other = node("n1", &[("REVISION", s("canary")), ("LABELS", s(&huge))]);
    assert!(gate.admit(Some(&other)).is_ok());
    // At the limits, admitted.
    let at_limit = node(
        &"n".repeat(MAX_NODE_ID_BYTES),
        &[
            ("REVISION", s("canary")),
            ("POD_NAME", s(&"p".repeat(MAX_NODE_VALUE_BYTES))),
        ],
    );
    assert!(gate.admit(Some(&at_limit)).is_ok());
}

#[test]
fn echoed_client_values_are_truncated() {
    let gate = RevisionGate::new("canary".parse().unwrap());
    let long_id = "i".repeat(MAX_NODE_ID_BYTES);
    let mismatch = gate
        .admit(Some(&node(&long_id, &[("REVISION", s("stable"))])))
        .unwrap_err();
    let message = mismatch.to_status().message().to_string();
    assert!(message.contains("... (1024 bytes)"), "{message}");
    assert!(message.len() < 600, "{}", message.len());
    let bad = gate
        .admit(Some(&node("n", &[("REVISION", s(&"X".repeat(1000)))])))
        .unwrap_err();
    let message = bad.to_status().message().to_string();
    assert!(message.contains("... (1000 bytes)"), "{message}");
    assert!(message.len() < 800, "{}", message.len());
}
