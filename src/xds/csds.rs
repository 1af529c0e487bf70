//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`) on the xDS port: where each
//! connected proxy of this instance stands, per resource type.
//!
//! An operator tool, not revision-gated: it answers anyone who can reach the xDS port. It
//! only reads the registry copies ([`ProxyRegistry`]), never a stream's own state, so it
//! cannot slow the xDS hot path; each request is one pass over the registry, and at most
//! [`CONCURRENT_REQUESTS`] requests are answered at once.
//!
//! What a `ClientConfig` holds, per proxy:
//! - `node`: id and the metadata `REVISION`, `NAMESPACE`, `POD_NAME`, `SERVICE_ACCOUNT` as
//!   the proxy sent them;
//! - one `generic_xds_configs` entry per type CDS, EDS, LDS, RDS (empty `name`):
//!   `version_info` of the last response sent, `config_status` and `client_status`
//!   ([`sync_status`](super::sync_status)), `error_state` with the last NACK (message,
//!   rejected version, time) until a later response is acknowledged, and `xds_config`, a
//!   `google.protobuf.Struct` with revplane's own view: `acked_version` and `nonce` (the
//!   empty string when there is none). revplane never sends resource contents.
//!
//! The server's identity (`revplane/<revision> <version>`, the `control_plane.identifier` of
//! every xDS response) is sent as the gRPC response header [`CONTROL_PLANE_HEADER`].
//!
//! `node_matchers` select proxies by exact node id (`node_id.exact`; several are OR-ed);
//! any other matcher is refused with `INVALID_ARGUMENT`.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::UpdateFailureState;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::NodeMatcher;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Timestamp, Value};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Response, Status, Streaming};

use super::proxies::{ProxyRegistry, ProxyStatus};
use super::sync_status::{client_status, SyncStatus};
use super::XdsContext;
use crate::revision::REVISION_KEY;
use crate::snapshot::ResourceType;

/// Response header naming the answering instance: `revplane/<revision> <version>`.
pub const CONTROL_PLANE_HEADER: &str = "revplane-control-plane";

/// Key of the acknowledged version in `xds_config`'s `Struct`.
pub const ACKED_VERSION_KEY: &str = "acked_version";

/// Key of the last response's nonce in `xds_config`'s `Struct`.
pub const NONCE_KEY: &str = "nonce";

/// CSDS requests answered at once; more wait their turn.
pub const CONCURRENT_REQUESTS: usize = 2;

/// Why a CSDS request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsdsError {
    /// A node matcher other than an exact node id.
    #[error(
        "node_matchers[{index}]: {what}; revplane selects proxies by exact node id only \
         (node_matchers[].node_id.exact), or all of them with no matcher"
    )]
    UnsupportedMatcher {
        /// Position of the matcher in the request.
        index: usize,
        /// What it asked for.
        what: &'static str,
    },
    /// More node matchers than [`MAX_NODE_MATCHERS`].
    #[error(
        "{0} node matchers; at most {MAX_NODE_MATCHERS} per request (send none to ask for every proxy)"
    )]
    TooManyMatchers(usize),
}

impl From<CsdsError> for Status {
    fn from(e: CsdsError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// Largest CSDS request accepted: room for [`MAX_NODE_MATCHERS`] node ids of a few hundred
/// bytes; anything larger is refused before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// The CSDS service of one instance.
#[derive(Clone, Debug)]
pub struct Csds {
    proxies: ProxyRegistry,
    control_plane: AsciiMetadataValue,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// The CSDS service for `ctx`'s proxies, as tonic serves it.
pub fn service(ctx: &XdsContext) -> ClientStatusDiscoveryServiceServer<Csds> {
    ClientStatusDiscoveryServiceServer::new(Csds::new(ctx))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

impl Csds {
    /// A service reading `ctx`'s registry.
    pub fn new(ctx: &XdsContext) -> Self {
        Csds {
            proxies: ctx.proxies.clone(),
            control_plane: ctx
                .control_plane_id
                .parse()
                .unwrap_or_else(|_| AsciiMetadataValue::from_static("revplane")),
            permits: Arc::new(Semaphore::new(CONCURRENT_REQUESTS)),
            shutdown: ctx.shutdown.clone(),
        }
    }

    async fn answer(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let wanted = selection(&request.node_matchers)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let proxies = match wanted {
            None => self.proxies.list(),
            Some(ids) => self.proxies.select(|id| ids.contains(id)),
        };
        Ok(ClientStatusResponse {
            config: proxies.iter().map(client_config).collect(),
        })
    }

    fn identify(&self, metadata: &mut MetadataMap) {
        metadata.insert(CONTROL_PLANE_HEADER, self.control_plane.clone());
    }
}

/// A response stream of `StreamClientStatus`.
pub type StatusStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<StatusStream>, Status> {
        let this = self.clone();
        let answers = request
            .into_inner()
            .then(move |request| {
                let this = this.clone();
                async move { this.answer(&request?).await }
            })
            // A long-lived stream must not hold the server's shutdown.
            .take_until(self.shutdown.clone().cancelled_owned());
        let mut response = Response::new(Box::pin(answers) as StatusStream);
        self.identify(response.metadata_mut());
        Ok(response)
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        let mut response = Response::new(self.answer(request.get_ref()).await?);
        self.identify(response.metadata_mut());
        Ok(response)
    }
}

/// Node matchers one request may carry: asking for more proxies than that at once is what
/// an empty list (every proxy) is for.
pub const MAX_NODE_MATCHERS: usize = 1000;

/// The node ids the matchers ask for; `None` for every proxy.
pub fn selection(
    matchers: &[NodeMatcher],
) -> Result<Option<std::collections::HashSet<String>>, CsdsError> {
    if matchers.is_empty() {
        return Ok(None);
    }
    if matchers.len() > MAX_NODE_MATCHERS {
        return Err(CsdsError::TooManyMatchers(matchers.len()));
    }
    let mut ids = std::collections::HashSet::with_capacity(matchers.len());
    for (index, m) in matchers.iter().enumerate() {
        let unsupported = |what| CsdsError::UnsupportedMatcher { index, what };
        if !m.node_metadatas.is_empty() {
            return Err(unsupported("node metadata matchers are not supported"));
        }
        let Some(id) = &m.node_id else {
            return Err(unsupported("no node_id matcher"));
        };
        if id.ignore_case {
            return Err(unsupported("ignore_case is not supported"));
        }
        match &id.match_pattern {
            Some(MatchPattern::Exact(exact)) => {
                ids.insert(exact.clone());
            }
            Some(_) => return Err(unsupported("only exact node ids are supported")),
            None => return Err(unsupported("node_id has no pattern")),
        }
    }
    Ok(Some(ids))
}

/// One proxy as CSDS shows it.
pub fn client_config(p: &ProxyStatus) -> ClientConfig {
    let metadata = [
        (REVISION_KEY, Some(&p.revision)),
        ("NAMESPACE", p.namespace.as_ref()),
        ("POD_NAME", p.pod_name.as_ref()),
        ("SERVICE_ACCOUNT", p.service_account.as_ref()),
    ];
    let node = Node {
        id: p.node_id.clone(),
        metadata: Some(Struct {
            fields: metadata
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), string_value(v?))))
                .collect(),
        }),
        ..Default::default()
    };
    let generic_xds_configs = ResourceType::ALL
        .into_iter()
        .map(|kind| {
            let t = p
                .types
                .iter()
                .find(|(k, _)| *k == kind.short())
                .map(|(_, t)| t);
            let own = Struct {
                fields: [
                    (ACKED_VERSION_KEY, t.and_then(|t| t.acked_version.as_ref())),
                    (NONCE_KEY, t.and_then(|t| t.nonce.as_ref())),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), string_value(v.map_or("", String::as_str))))
                .collect(),
            };
            GenericXdsConfig {
                type_url: kind.type_url().to_string(),
                version_info: t.and_then(|t| t.sent_version.clone()).unwrap_or_default(),
                xds_config: Some(Any {
                    type_url: "type.googleapis.com/google.protobuf.Struct".to_string(),
                    value: own.encode_to_vec(),
                }),
                config_status: SyncStatus::of(t).config_status() as i32,
                client_status: client_status(t) as i32,
                error_state: t
                    .and_then(|t| t.last_nack.as_ref())
                    .map(|n| UpdateFailureState {
                        details: n.message.clone(),
                        version_info: n.rejected_version.clone(),
                        last_update_attempt: Some(Timestamp {
                            seconds: i64::try_from(n.at).unwrap_or(i64::MAX),
                            nanos: 0,
                        }),
                        failed_configuration: None,
                    }),
                ..Default::default()
            }
        })
        .collect();
    ClientConfig {
        node: Some(node),
        generic_xds_configs,
        ..Default::default()
    }
}

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::proxies::{NackStatus, TypeStatus};
    use envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, StructMatcher};
    use envoy_types::pb::envoy::service::status::v3::ConfigStatus;

    fn exact(id: &str) -> NodeMatcher {
        NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(id.into())),
                ignore_case: false,
            }),
            node_metadatas: vec![],
        }
    }

    #[test]
    fn only_exact_node_ids_select() {
        assert_eq!(selection(&[]).unwrap(), None);
        assert_eq!(
            selection(&[exact("a"), exact("b")]).unwrap(),
            Some(["a".to_string(), "b".to_string()].into_iter().collect())
        );
        let many: Vec<NodeMatcher> = (0..=MAX_NODE_MATCHERS)
            .map(|i| exact(&i.to_string()))
            .collect();
        let status = Status::from(selection(&many).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("at most 1000"),
            "{}",
            status.message()
        );
        let prefix = NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix("sidecar~".into())),
                ignore_case: false,
            }),
            node_metadatas: vec![],
        };
        let err = selection(&[exact("a"), prefix]).unwrap_err();
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("node_matchers[1]")
                && status.message().contains("node_id.exact"),
            "{}",
            status.message()
        );
        let metadata = NodeMatcher {
            node_metadatas: vec![StructMatcher::default()],
            ..exact("a")
        };
        assert!(selection(&[metadata]).is_err());
        assert!(selection(&[NodeMatcher::default()]).is_err());
    }

    #[test]
    fn a_proxy_shows_its_node_and_every_type() {
        let p = ProxyStatus {
            node_id: "sidecar~1~web.shop~shop.svc.cluster.local".into(),
            revision: "canary".into(),
            namespace: Some("shop".into()),
            pod_name: Some("web".into()),
            service_account: None,
            connected_since: 0,
            types: vec![(
                "cds",
                TypeStatus {
                    sent_version: Some("v2".into()),
                    nonce: Some("3".into()),
                    acked_version: Some("v1".into()),
                    last_nack: Some(Box::new(NackStatus {
                        message: "bad".into(),
                        rejected_version: "v2".into(),
                        nonce: "3".into(),
                        at: 7,
                    })),
                    ..Default::default()
                },
            )],
        };
        let c = client_config(&p);
        let node = c.node.unwrap();
        assert_eq!(node.id, p.node_id);
        let fields = node.metadata.unwrap().fields;
        assert_eq!(fields.len(), 3, "unknown metadata left out: {fields:?}");
        assert_eq!(
            fields["REVISION"].kind,
            Some(Kind::StringValue("canary".into()))
        );
        let urls: Vec<&str> = c
            .generic_xds_configs
            .iter()
            .map(|g| g.type_url.as_str())
            .collect();
        assert_eq!(urls, ResourceType::ALL.map(ResourceType::type_url));
        let cds = &c.generic_xds_configs[0];
        assert_eq!(cds.version_info, "v2");
        assert_eq!(cds.config_status, ConfigStatus::Error as i32);
        assert_eq!(cds.client_status, ClientResourceStatus::Nacked as i32);
        let error = cds.error_state.as_ref().unwrap();
        assert_eq!(
            (error.details.as_str(), error.version_info.as_str()),
            ("bad", "v2")
        );
        let own = Struct::decode(cds.xds_config.as_ref().unwrap().value.as_slice()).unwrap();
        assert_eq!(
            own.fields[ACKED_VERSION_KEY].kind,
            Some(Kind::StringValue("v1".into()))
        );
        let eds = &c.generic_xds_configs[1];
        assert_eq!(eds.config_status, ConfigStatus::NotSent as i32);
        assert_eq!(eds.client_status, ClientResourceStatus::Unknown as i32);
        assert!(eds.error_state.is_none());
    }
}
