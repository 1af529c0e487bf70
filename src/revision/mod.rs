//! Revision names, the proxy identity read from xDS node metadata, and the revision gate.
//!
//! This module decides, from the first `DiscoveryRequest` of a stream, whether this server
//! may serve the proxy (DESIGN.md §1). It owns no I/O: the xDS server turns a [`Rejection`]
//! into a gRPC status, a metric and a log line.

pub mod selection;
pub mod tags;

use std::fmt;
use std::str::FromStr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};

/// Revision assumed for a proxy whose node metadata carries no `REVISION` key.
pub const DEFAULT_REVISION: &str = "default";

/// Node metadata key naming the revision a proxy was injected for.
pub const REVISION_KEY: &str = "REVISION";

/// A control-plane revision name: a DNS-1123 label (`stable`, `canary`, `1-25-0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(String);

/// Why a string is not a revision name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid revision name {name:?}: {reason}; a revision is a DNS-1123 label: 1-63 lowercase \
     letters, digits or '-', starting and ending with a letter or digit (e.g. stable, canary, 1-25-0)"
)]
pub struct InvalidRevision {
    /// The rejected input.
    pub name: String,
    /// What rule it broke.
    pub reason: &'static str,
}

impl Revision {
    /// The revision name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `default` revision, assumed when a proxy names none.
    pub fn default_revision() -> Self {
        Revision(DEFAULT_REVISION.to_string())
    }
}

impl FromStr for Revision {
    type Err = InvalidRevision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidRevision {
            name: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > 63 {
            return Err(invalid("it is longer than 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "it contains a character other than a-z, 0-9 or '-'",
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(invalid("it starts or ends with '-'"));
        }
        Ok(Revision(s.to_string()))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is on the other end of an admitted stream, as read from its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Envoy node id (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` for sidecars).
    pub node_id: String,
    /// Envoy node cluster (service cluster).
    pub cluster: String,
    /// The revision the proxy was injected for.
    pub revision: Revision,
    /// `NAMESPACE` metadata, if set.
    pub namespace: Option<String>,
    /// `POD_NAME` metadata, if set.
    pub pod_name: Option<String>,
    /// `SERVICE_ACCOUNT` metadata, if set.
    pub service_account: Option<String>,
    /// `OUTBOUND_LISTENER_ADDRESS` metadata (`ip:port`), if set.
    pub outbound_listener_address: Option<String>,
    /// `INTERCEPTION_MODE` metadata (`REDIRECT` | `NONE`), if set.
    pub interception_mode: Option<String>,
    /// Whether the client is a proxyless gRPC client (metadata `GENERATOR: grpc`, or a node
    /// `user_agent_name` starting with `gRPC`), not an Envoy.
    pub proxyless: bool,
}

/// Why a stream was refused at its start (DESIGN.md §1 table).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The first request carried no `node`.
    #[error("the first DiscoveryRequest of a stream must carry `node`; this one has none")]
    MissingNode,
    /// `REVISION` is present but not a string or not a valid revision name.
    #[error("node {node_id:?}: node metadata REVISION is not a valid revision: {detail}")]
    BadRevision {
        /// Node id of the proxy.
        node_id: String,
        /// What was wrong with the value.
        detail: String,
    },
    /// The proxy belongs to another revision.
    #[error(
        "node {node_id:?} belongs to revision {proxy:?} but this control plane serves revision \
         {server:?}; point the proxy at the {proxy} control plane or re-inject it for {server}"
    )]
    RevisionMismatch {
        /// Node id of the proxy.
        node_id: String,
        /// The proxy's revision.
        proxy: String,
        /// The server's revision.
        server: String,
    },
}

impl Rejection {
    /// The `reason` label of `revplane_xds_rejected_streams_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingNode => "missing_node",
            Rejection::BadRevision { .. } => "bad_revision",
            Rejection::RevisionMismatch { .. } => "revision_mismatch",
        }
    }

    /// Node id the rejection is about (empty when there was no node).
    pub fn node_id(&self) -> &str {
        match self {
            Rejection::MissingNode => "",
            Rejection::BadRevision { node_id, .. }
            | Rejection::RevisionMismatch { node_id, .. } => node_id,
        }
    }

    /// The gRPC status a refused stream ends with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Rejection::MissingNode | Rejection::BadRevision { .. } => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Rejection::RevisionMismatch { .. } => {
                tonic::Status::permission_denied(self.to_string())
            }
        }
    }
}

/// Admits only proxies of one revision.
#[derive(Clone, Debug)]
pub struct RevisionGate {
    revision: Revision,
}

impl RevisionGate {
    /// A gate for the server's own revision.
    pub fn new(revision: Revision) -> Self {
        RevisionGate { revision }
    }

    /// The revision this gate admits.
    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    /// Decides on the node of a stream's first request.
    pub fn admit(&self, node: Option<&Node>) -> Result<ProxyIdentity, Rejection> {
        let node = node.ok_or(Rejection::MissingNode)?;
        let identity = identity_of(node)?;
        if identity.revision != self.revision {
            return Err(Rejection::RevisionMismatch {
                node_id: identity.node_id,
                proxy: identity.revision.0,
                server: self.revision.0.clone(),
            });
        }
        Ok(identity)
    }

    /// Checks that a later request's node (if any) names the same revision as the stream's.
    pub fn recheck(&self, node: Option<&Node>) -> Result<(), Rejection> {
        match node {
            None => Ok(()),
            Some(node) => self.admit(Some(node)).map(|_| ()),
        }
    }
}

/// Reads the identity of a proxy from its node, validating `REVISION`.
pub fn identity_of(node: &Node) -> Result<ProxyIdentity, Rejection> {
    let metadata = node.metadata.as_ref();
    let revision = match metadata.and_then(|m| m.fields.get(REVISION_KEY)) {
        None => Revision::default_revision(),
        Some(value) => match &value.kind {
            Some(Kind::StringValue(s)) => {
                s.parse()
                    .map_err(|e: InvalidRevision| Rejection::BadRevision {
                        node_id: node.id.clone(),
                        detail: e.to_string(),
                    })?
            }
            _ => {
                return Err(Rejection::BadRevision {
                    node_id: node.id.clone(),
                    detail: "REVISION must be a string".to_string(),
                })
            }
        },
    };
    Ok(ProxyIdentity {
        node_id: node.id.clone(),
        cluster: node.cluster.clone(),
        revision,
        namespace: string_field(metadata, "NAMESPACE"),
        pod_name: string_field(metadata, "POD_NAME"),
        service_account: string_field(metadata, "SERVICE_ACCOUNT"),
        outbound_listener_address: string_field(metadata, "OUTBOUND_LISTENER_ADDRESS"),
        interception_mode: string_field(metadata, "INTERCEPTION_MODE"),
        proxyless: string_field(metadata, "GENERATOR").is_some_and(|g| g == "grpc")
            || node
                .user_agent_name
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("grpc")),
    })
}

fn string_field(metadata: Option<&Struct>, key: &str) -> Option<String> {
    match metadata?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
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
}
