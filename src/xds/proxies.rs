//! The registry of connected proxies behind `/debug/proxies` and CSDS, and rate-limited
//! logging of refused streams.
//!
//! Each stream owns a [`ProxyEntry`]; dropping it removes the proxy. The registry only holds
//! status copies, written by the stream after each request or response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::Serialize;

use super::log_limit::LogLimiter;
use super::state::{StreamState, TypeState};
use crate::revision::{ProxyIdentity, Rejection};
use crate::snapshot::ResourceType;

/// What `/debug/proxies` and CSDS show of one resource type of one proxy.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TypeStatus {
    /// Subscribed to every resource of the type.
    pub wildcard: bool,
    /// Number of names subscribed explicitly (the names themselves are not copied here).
    pub subscribed_names: usize,
    /// `version_info` of the last response.
    pub sent_version: Option<String>,
    /// Nonce of the last response.
    pub nonce: Option<String>,
    /// Last version the proxy acknowledged.
    pub acked_version: Option<String>,
    /// The last response is neither acknowledged nor rejected yet.
    pub pending: bool,
    /// The last NACK, until a later response is acknowledged (boxed: rare).
    pub last_nack: Option<Box<NackStatus>>,
}

/// What the registry keeps of a proxy's last NACK.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NackStatus {
    /// The proxy's error message.
    pub message: String,
    /// `version_info` of the rejected response.
    pub rejected_version: String,
    /// Nonce of the rejected response.
    pub nonce: String,
    /// Seconds since the Unix epoch when the NACK arrived.
    pub at: u64,
}

impl From<&TypeState> for TypeStatus {
    fn from(t: &TypeState) -> Self {
        TypeStatus {
            wildcard: t.wildcard,
            subscribed_names: t.names.len(),
            sent_version: t.sent_version.clone(),
            nonce: t.nonce.clone(),
            acked_version: t.acked_version.clone(),
            pending: t.pending,
            last_nack: t.last_nack.as_ref().map(|n| {
                Box::new(NackStatus {
                    message: n.message.clone(),
                    rejected_version: n.rejected_version.clone(),
                    nonce: n.nonce.clone(),
                    at: unix_seconds(n.at),
                })
            }),
        }
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `/debug/proxies` shows of one proxy.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    /// Node id.
    pub node_id: String,
    /// Revision the proxy belongs to.
    pub revision: String,
    /// `NAMESPACE` metadata.
    pub namespace: Option<String>,
    /// `POD_NAME` metadata.
    pub pod_name: Option<String>,
    /// `SERVICE_ACCOUNT` metadata.
    pub service_account: Option<String>,
    /// Seconds since the Unix epoch when the stream was admitted.
    pub connected_since: u64,
    /// Per requested type (`cds`, `eds`, ...), ordered by name; shown as a map. A vector
    /// sized to the types requested: a B-tree map's first node is over 1 KiB, per proxy.
    #[serde(serialize_with = "as_map")]
    pub types: Vec<(&'static str, TypeStatus)>,
}

fn as_map<S: serde::Serializer>(
    types: &[(&'static str, TypeStatus)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(types.iter().map(|(k, v)| (k, v)))
}

/// Connected proxies by stream id.
#[derive(Clone, Debug, Default)]
pub struct ProxyRegistry {
    entries: Arc<DashMap<u64, Arc<Mutex<ProxyStatus>>>>,
    next_id: Arc<AtomicU64>,
}

/// One page of connected proxies ([`ProxyRegistry::page`]).
#[derive(Debug)]
pub struct Page {
    /// Proxies matching the filter, on every page.
    pub total: usize,
    /// This page's, ordered by node id.
    pub proxies: Vec<ProxyStatus>,
    /// The node id to ask for the next page after, when there is one.
    pub next: Option<String>,
}

fn lock(status: &Mutex<ProxyStatus>) -> std::sync::MutexGuard<'_, ProxyStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered proxy; dropping it unregisters.
#[derive(Debug)]
pub struct ProxyEntry {
    id: u64,
    status: Arc<Mutex<ProxyStatus>>,
    registry: ProxyRegistry,
}

impl ProxyRegistry {
    /// Registers an admitted proxy.
    pub fn register(&self, identity: &ProxyIdentity) -> ProxyEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let status = Arc::new(Mutex::new(ProxyStatus {
            node_id: identity.node_id.clone(),
            revision: identity.revision.to_string(),
            namespace: identity.namespace.clone(),
            pod_name: identity.pod_name.clone(),
            service_account: identity.service_account.clone(),
            connected_since: unix_seconds(SystemTime::now()),
            types: Default::default(),
        }));
        self.entries.insert(id, status.clone());
        ProxyEntry {
            id,
            status,
            registry: self.clone(),
        }
    }

    /// All connected proxies, ordered by node id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.select(|_| true)
    }

    /// The connected proxies whose node id `keep` accepts, ordered by node id. One pass
    /// over the registry; only the kept entries are copied.
    pub fn select(&self, keep: impl Fn(&str) -> bool) -> Vec<ProxyStatus> {
        let mut out: Vec<ProxyStatus> = self
            .entries
            .iter()
            .filter_map(|e| {
                let status = e.value().lock().unwrap_or_else(|p| p.into_inner());
                keep(&status.node_id).then(|| status.clone())
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Up to `limit` connected proxies (at least one) ordered by node id: those with node id
    /// `node` if given, and after node id `after` if given. Holds each lock only to compare
    /// a node id or copy one status; copies only the page.
    pub fn page(&self, node: Option<&str>, after: Option<&str>, limit: usize) -> Page {
        let mut total = 0;
        let mut ids: Vec<(String, Arc<Mutex<ProxyStatus>>)> = Vec::new();
        for e in self.entries.iter() {
            let status = lock(e.value());
            if node.is_some_and(|n| status.node_id != n) {
                continue;
            }
            total += 1;
            if after.is_some_and(|a| status.node_id.as_str() <= a) {
                continue;
            }
            ids.push((status.node_id.clone(), e.value().clone()));
        }
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Streams of one node id stay on one page, so `after` never skips one.
        let mut end = limit.max(1).min(ids.len());
        while end > 0 && end < ids.len() && ids[end].0 == ids[end - 1].0 {
            end += 1;
        }
        let next = (end < ids.len()).then(|| ids[end - 1].0.clone());
        let proxies = ids[..end].iter().map(|(_, s)| lock(s).clone()).collect();
        Page {
            total,
            proxies,
            next,
        }
    }

    /// Number of connected proxies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no proxy is connected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ProxyEntry {
    /// Copies the stream's state of `kind` into the registry.
    pub fn update(&self, kind: ResourceType, state: &StreamState) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let now = TypeStatus::from(state.get(kind));
        let types = &mut status.types;
        match types.binary_search_by(|(k, _)| (*k).cmp(kind.short())) {
            Ok(i) => types[i].1 = now,
            Err(i) => {
                types.reserve_exact(1);
                types.insert(i, (kind.short(), now));
            }
        }
    }
}

impl Drop for ProxyEntry {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.id);
    }
}

/// Logs each refused node at most once per interval (by a hash of reason and node id: fixed
/// memory per node), with a budget of lines per interval over all nodes; echoed values are
/// truncated.
#[derive(Debug)]
pub struct RejectionLog {
    limiter: LogLimiter,
}

/// Refusal lines logged per interval over all nodes.
const REJECTION_LINES_PER_INTERVAL: u32 = 100;

impl RejectionLog {
    /// A log that repeats a node's refusal at most every `interval`.
    pub fn new(interval: Duration) -> Self {
        RejectionLog {
            limiter: LogLimiter::new(interval, REJECTION_LINES_PER_INTERVAL),
        }
    }

    /// Logs `rejection` unless the same node was logged within the interval or the budget
    /// of lines is spent; returns whether it logged.
    pub fn log(&self, rejection: &Rejection, server: &str) -> bool {
        let subject = [
            rejection.reason().as_bytes(),
            rejection.node_id().as_bytes(),
        ];
        let Some(held_back) = self.limiter.allow(&subject) else {
            return false;
        };
        // The message names the node (cut short).
        tracing::warn!(
            reason = rejection.reason(),
            revision = server,
            held_back,
            "refused xDS stream: {rejection}"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_entries_go_away_with_their_stream() {
        let registry = ProxyRegistry::default();
        let identity =
            crate::revision::identity_of(&envoy_types::pb::envoy::config::core::v3::Node {
                id: "n1".into(),
                ..Default::default()
            })
            .unwrap();
        let entry = registry.register(&identity);
        assert_eq!(registry.list()[0].revision, "default");
        let state = StreamState::default();
        for kind in [
            ResourceType::Endpoint,
            ResourceType::Cluster,
            ResourceType::Endpoint,
        ] {
            entry.update(kind, &state);
        }
        let json = serde_json::to_value(&registry.list()[0]).unwrap();
        let types = json["types"].as_object().expect("types shown as a map");
        assert_eq!(types.keys().collect::<Vec<_>>(), ["cds", "eds"]);
        drop(entry);
        assert!(registry.is_empty());
    }

    #[test]
    fn rejections_are_logged_once_per_node_per_interval() {
        let log = RejectionLog::new(Duration::from_secs(60));
        let r = Rejection::RevisionMismatch {
            node_id: "n".into(),
            proxy: "stable".into(),
            server: "canary".into(),
        };
        assert!(log.log(&r, "canary"));
        assert!(!log.log(&r, "canary"));
        assert!(log.log(&Rejection::MissingNode, "canary"));
    }

    #[test]
    fn refusals_of_many_huge_node_ids_write_a_bounded_log() {
        let log = RejectionLog::new(Duration::from_secs(60));
        let text = crate::xds::log_limit::captured(|| {
            for i in 0..200 {
                let r = Rejection::RevisionMismatch {
                    node_id: format!("{i}{}", "n".repeat(64 * 1024)),
                    proxy: "stable".into(),
                    server: "canary".into(),
                };
                log.log(&r, "canary");
            }
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), REJECTION_LINES_PER_INTERVAL as usize);
        let longest = lines.iter().map(|l| l.len()).max().unwrap();
        assert!(longest < 2048, "a line of {longest} bytes");
        assert!(lines[0].contains("(65537 bytes)"), "{}", lines[0]);
    }
}
