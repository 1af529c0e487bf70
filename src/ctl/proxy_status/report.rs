//! What the instances said, as `proxy-status` shows it: the report types and how a CSDS
//! answer ([`crate::xds::csds`]) reads back into them.

use envoy_types::pb::envoy::service::status::v3::{ClientConfig, ConfigStatus};
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use prost::Message;
use serde::Serialize;

use super::ProxyStatusError;
use crate::revision::REVISION_KEY;
use crate::snapshot::ResourceType;
use crate::xds::csds::{ACKED_VERSION_KEY, NONCE_KEY};
use crate::xds::sync_status::SyncStatus;

/// Everything the instances said.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Each instance asked, in the order given.
    pub instances: Vec<InstanceReport>,
    /// Every proxy of every instance, ordered by name, then instance.
    pub proxies: Vec<ProxyReport>,
}

/// One instance asked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InstanceReport {
    /// The address asked.
    pub address: String,
    /// Its revision, from its control plane identifier.
    pub revision: Option<String>,
    /// Its revplane version, from its control plane identifier.
    pub version: Option<String>,
    /// Proxies it reported.
    pub proxies: usize,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// One proxy as an instance reported it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProxyReport {
    /// `<POD_NAME>.<NAMESPACE>` when both are known, else the node id.
    pub name: String,
    /// Node id.
    pub node_id: String,
    /// `REVISION` of the proxy.
    pub revision: Option<String>,
    /// `NAMESPACE` of the proxy.
    pub namespace: Option<String>,
    /// `POD_NAME` of the proxy.
    pub pod_name: Option<String>,
    /// `SERVICE_ACCOUNT` of the proxy.
    pub service_account: Option<String>,
    /// The address of the instance serving it.
    pub instance: String,
    /// That instance's revplane version.
    pub version: Option<String>,
    /// Per type, CDS, EDS, LDS, RDS (shown as a map keyed `cds`, ...).
    #[serde(serialize_with = "as_map")]
    pub types: Vec<TypeReport>,
}

/// One resource type of one proxy.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TypeReport {
    /// `cds`, `eds`, `lds` or `rds`.
    #[serde(skip)]
    pub kind: &'static str,
    /// Where it stands.
    pub status: SyncStatus,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Last version the proxy acknowledged.
    pub acked_version: Option<String>,
    /// Nonce of the last response sent.
    pub nonce: Option<String>,
    /// The last NACK, until a later response is acknowledged.
    pub last_nack: Option<NackReport>,
}

/// A proxy's last NACK of a type.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NackReport {
    /// The proxy's error message.
    pub message: String,
    /// The version it rejected.
    pub rejected_version: String,
    /// Seconds since the Unix epoch when it arrived.
    pub at: Option<i64>,
}

fn as_map<S: serde::Serializer>(types: &[TypeReport], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(types.iter().map(|t| (t.kind, t)))
}
impl Report {
    pub(super) fn outcome(
        &self,
        asked: &[String],
        node: Option<&str>,
    ) -> Result<(), ProxyStatusError> {
        let failed: Vec<String> = self
            .instances
            .iter()
            .filter_map(|i| Some(format!("{}: {}", i.address, i.error.as_ref()?)))
            .collect();
        if !failed.is_empty() {
            return Err(ProxyStatusError::Unreachable {
                failed,
                total: self.instances.len(),
            });
        }
        match node {
            Some(node) if self.proxies.is_empty() => Err(ProxyStatusError::NotFound {
                node: node.to_string(),
                asked: asked.to_vec(),
            }),
            _ => Ok(()),
        }
    }
}

/// `revplane/<revision> <version>` → (revision, version).
pub fn parse_control_plane(id: &str) -> (Option<String>, Option<String>) {
    let Some(rest) = id.strip_prefix("revplane/") else {
        return (None, None);
    };
    let mut parts = rest.split_whitespace();
    let revision = parts.next().map(str::to_string);
    (revision, parts.next().map(str::to_string))
}

/// One proxy of a CSDS answer from `instance`.
pub fn proxy_report(config: &ClientConfig, instance: &str, version: Option<String>) -> ProxyReport {
    let node = config.node.clone().unwrap_or_default();
    let field = |key: &str| match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    };
    let (namespace, pod_name) = (field("NAMESPACE"), field("POD_NAME"));
    let name = match (&pod_name, &namespace) {
        (Some(pod), Some(ns)) => format!("{pod}.{ns}"),
        _ => node.id.clone(),
    };
    let types = ResourceType::ALL
        .into_iter()
        .map(|kind| {
            let config = config
                .generic_xds_configs
                .iter()
                .find(|g| g.type_url == kind.type_url());
            let Some(g) = config else {
                return TypeReport {
                    kind: kind.short(),
                    status: SyncStatus::Unknown,
                    sent_version: None,
                    acked_version: None,
                    nonce: None,
                    last_nack: None,
                };
            };
            let own = g
                .xds_config
                .as_ref()
                .and_then(|any| Struct::decode(any.value.as_slice()).ok())
                .unwrap_or_default();
            let own_field = |key: &str| match own.fields.get(key)?.kind.as_ref()? {
                Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            TypeReport {
                kind: kind.short(),
                status: SyncStatus::from_config_status(
                    ConfigStatus::try_from(g.config_status).unwrap_or(ConfigStatus::Unknown),
                ),
                sent_version: Some(g.version_info.clone()).filter(|v| !v.is_empty()),
                acked_version: own_field(ACKED_VERSION_KEY),
                nonce: own_field(NONCE_KEY),
                last_nack: g.error_state.as_ref().map(|e| NackReport {
                    message: e.details.clone(),
                    rejected_version: e.version_info.clone(),
                    at: e.last_update_attempt.as_ref().map(|t| t.seconds),
                }),
            }
        })
        .collect();
    ProxyReport {
        name,
        node_id: node.id.clone(),
        revision: field(REVISION_KEY),
        namespace,
        pod_name,
        service_account: field("SERVICE_ACCOUNT"),
        instance: instance.to_string(),
        version,
        types,
    }
}
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::xds::csds::client_config;
    use crate::xds::proxies::{NackStatus, ProxyStatus, TypeStatus};

    /// What the server sends, read back by the command.
    pub(in crate::ctl::proxy_status) fn sample(pod: Option<&str>) -> ProxyReport {
        let server_side = ProxyStatus {
            node_id: "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local".into(),
            revision: "canary".into(),
            namespace: Some("shop".into()),
            pod_name: pod.map(str::to_string),
            service_account: Some("web".into()),
            connected_since: 0,
            types: vec![
                (
                    "cds",
                    TypeStatus {
                        sent_version: Some("c2".into()),
                        acked_version: Some("c1".into()),
                        nonce: Some("4".into()),
                        last_nack: Some(Box::new(NackStatus {
                            message: "unknown cluster type".into(),
                            rejected_version: "c2".into(),
                            nonce: "4".into(),
                            at: 1_700_000_000,
                        })),
                        ..Default::default()
                    },
                ),
                (
                    "eds",
                    TypeStatus {
                        sent_version: Some("e1".into()),
                        acked_version: Some("e1".into()),
                        nonce: Some("2".into()),
                        ..Default::default()
                    },
                ),
            ],
        };
        proxy_report(
            &client_config(&server_side),
            "127.0.0.1:15010",
            Some("0.1.0".into()),
        )
    }

    #[test]
    fn a_csds_answer_reads_back_as_the_server_meant_it() {
        let p = sample(Some("web-1"));
        assert_eq!(p.name, "web-1.shop");
        assert_eq!(p.revision.as_deref(), Some("canary"));
        assert_eq!(p.service_account.as_deref(), Some("web"));
        let status: Vec<SyncStatus> = p.types.iter().map(|t| t.status).collect();
        assert_eq!(
            status,
            [
                SyncStatus::Nacked,
                SyncStatus::Synced,
                SyncStatus::NotSent,
                SyncStatus::NotSent
            ]
        );
        let cds = &p.types[0];
        assert_eq!(cds.sent_version.as_deref(), Some("c2"));
        assert_eq!(cds.acked_version.as_deref(), Some("c1"));
        assert_eq!(cds.nonce.as_deref(), Some("4"));
        let nack = cds.last_nack.as_ref().unwrap();
        assert_eq!(
            (
                nack.message.as_str(),
                nack.rejected_version.as_str(),
                nack.at
            ),
            ("unknown cluster type", "c2", Some(1_700_000_000))
        );
        assert_eq!(p.types[2].sent_version, None);
        assert_eq!(sample(None).name, p.node_id, "no pod name: the node id");
    }

    #[test]
    fn the_control_plane_identifier_names_revision_and_version() {
        assert_eq!(
            parse_control_plane("revplane/canary 0.1.0"),
            (Some("canary".into()), Some("0.1.0".into()))
        );
        assert_eq!(parse_control_plane("istiod"), (None, None));
    }

    #[test]
    fn failures_name_each_address_and_a_missing_node_names_what_was_asked() {
        let report = Report {
            instances: vec![
                InstanceReport {
                    address: "a:1".into(),
                    ..Default::default()
                },
                InstanceReport {
                    address: "b:2".into(),
                    error: Some("cannot connect: refused".into()),
                    ..Default::default()
                },
            ],
            proxies: vec![],
        };
        let err = report.outcome(&[], None).unwrap_err().to_string();
        assert_eq!(
            err,
            "could not ask 1 of 2 instance(s):\n  b:2: cannot connect: refused"
        );
        let fine = Report {
            instances: vec![report.instances[0].clone()],
            proxies: vec![],
        };
        assert!(fine.outcome(&["a:1".into()], None).is_ok());
        let err = fine
            .outcome(&["a:1".into()], Some("web.shop"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"web.shop\"") && err.contains("a:1"), "{err}");
    }
}
