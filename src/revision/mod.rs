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

use crate::echo::{cut, echo, Echo, ECHO_BYTES};

/// Revision assumed for a proxy whose node metadata carries no `REVISION` key.
pub const DEFAULT_REVISION: &str = "default";

/// Node metadata key naming the revision a proxy was injected for.
pub const REVISION_KEY: &str = "REVISION";

/// Longest node id admitted, in bytes. An Istio sidecar's
/// (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`) is at most about 700.
pub const MAX_NODE_ID_BYTES: usize = 1024;

/// Longest value admitted for the node cluster and each node metadata key revplane reads
/// ([`READ_METADATA`]), in bytes: they are Kubernetes names, a revision, an address, a mode.
pub const MAX_NODE_VALUE_BYTES: usize = 1024;

/// The node metadata keys revplane reads (and keeps for the stream's life); other keys are
/// never copied.
pub const READ_METADATA: [&str; 7] = [
    REVISION_KEY,
    "NAMESPACE",
    "POD_NAME",
    "SERVICE_ACCOUNT",
    "OUTBOUND_LISTENER_ADDRESS",
    "INTERCEPTION_MODE",
    "GENERATOR",
];

/// A control-plane revision name: a DNS-1123 label (`stable`, `canary`, `1-25-0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(String);

/// Why a string is not a revision name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid revision name {}: {reason}; a revision is a DNS-1123 label: 1-63 lowercase \
     letters, digits or '-', starting and ending with a letter or digit (e.g. stable, canary, 1-25-0)",
    echo(.name)
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
    /// The node id, the node cluster or a metadata value revplane reads is too long.
    #[error(
        "node {}: {field} is {bytes} bytes, over the {limit} this server accepts; node ids and \
         the node metadata revplane reads ({}) are short names: check the proxy's bootstrap",
        echo(.node_id).of_total(*.node_id_bytes),
        READ_METADATA.join(", ")
    )]
    OversizedNode {
        /// The start of the proxy's node id (at most [`ECHO_BYTES`]).
        node_id: String,
        /// Length of the whole node id.
        node_id_bytes: usize,
        /// What is too long (`node id`, `node cluster`, `metadata NAMESPACE`, ...).
        field: String,
        /// Its length.
        bytes: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// `REVISION` is present but not a string or not a valid revision name.
    #[error("node {}: node metadata REVISION is not a valid revision: {detail}", echo(.node_id))]
    BadRevision {
        /// Node id of the proxy.
        node_id: String,
        /// What was wrong with the value.
        detail: String,
    },
    /// The proxy belongs to another revision.
    #[error(
        "node {} belongs to revision {proxy:?} but this control plane serves revision \
         {server:?}; point the proxy at the {proxy} control plane or re-inject it for {server}",
        echo(.node_id)
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
            Rejection::OversizedNode { .. } => "oversized_node",
            Rejection::BadRevision { .. } => "bad_revision",
            Rejection::RevisionMismatch { .. } => "revision_mismatch",
        }
    }

    /// Node id the rejection is about, quoted for a log line and cut short.
    pub fn node(&self) -> Echo<'_> {
        match self {
            Rejection::OversizedNode {
                node_id,
                node_id_bytes,
                ..
            } => echo(node_id).of_total(*node_id_bytes),
            _ => echo(self.node_id()),
        }
    }

    /// Node id the rejection is about (empty when there was no node; only its start when
    /// the node was refused as oversized).
    pub fn node_id(&self) -> &str {
        match self {
            Rejection::MissingNode => "",
            Rejection::OversizedNode { node_id, .. }
            | Rejection::BadRevision { node_id, .. }
            | Rejection::RevisionMismatch { node_id, .. } => node_id,
        }
    }

    /// The gRPC status a refused stream ends with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Rejection::MissingNode
            | Rejection::OversizedNode { .. }
            | Rejection::BadRevision { .. } => tonic::Status::invalid_argument(self.to_string()),
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

/// Reads the identity of a proxy from its node, validating sizes and `REVISION`.
pub fn identity_of(node: &Node) -> Result<ProxyIdentity, Rejection> {
    check_sizes(node)?;
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

/// Refuses a node whose id, cluster or read metadata values are over their limits, before
/// anything of it is copied.
fn check_sizes(node: &Node) -> Result<(), Rejection> {
    let oversized = |field: String, bytes: usize, limit: usize| Rejection::OversizedNode {
        node_id: cut(&node.id, ECHO_BYTES).to_string(),
        node_id_bytes: node.id.len(),
        field,
        bytes,
        limit,
    };
    if node.id.len() > MAX_NODE_ID_BYTES {
        return Err(oversized(
            "node id".to_string(),
            node.id.len(),
            MAX_NODE_ID_BYTES,
        ));
    }
    if node.cluster.len() > MAX_NODE_VALUE_BYTES {
        return Err(oversized(
            "node cluster".to_string(),
            node.cluster.len(),
            MAX_NODE_VALUE_BYTES,
        ));
    }
    let metadata = node.metadata.as_ref();
    for key in READ_METADATA {
        if let Some(Kind::StringValue(s)) = metadata.and_then(|m| m.fields.get(key)?.kind.as_ref())
        {
            if s.len() > MAX_NODE_VALUE_BYTES {
                return Err(oversized(
                    format!("metadata {key}"),
                    s.len(),
                    MAX_NODE_VALUE_BYTES,
                ));
            }
        }
    }
    Ok(())
}

fn string_field(metadata: Option<&Struct>, key: &str) -> Option<String> {
    match metadata?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
