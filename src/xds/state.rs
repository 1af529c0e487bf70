//! Per-stream xDS state: subscriptions, nonces, sent and acknowledged versions, NACKs.
//!
//! Pure data and rules (DESIGN.md §3), unit-tested without tonic. The stream task feeds it
//! requests and snapshots and sends whatever [`StreamState::response_for`] returns.

mod names;
mod order;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use names::Names;

use crate::echo::bounded;
use crate::snapshot::selections::Selected;
use crate::snapshot::views::View;
use crate::snapshot::{Resource, ResourceType, Resources, Snapshot};

/// Longest NACK message kept (for `/debug/proxies` and CSDS), in bytes; the rest is cut.
pub const MAX_NACK_MESSAGE_BYTES: usize = 4096;

/// Longest client-reported `version_info` kept, in bytes (revplane's own are under 30).
pub const MAX_VERSION_BYTES: usize = 256;

/// A NACK: the client rejected a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The version the client still holds (the one it reported, cut to
    /// [`MAX_VERSION_BYTES`]).
    pub version: String,
    /// Nonce of the rejected response.
    pub nonce: String,
    /// The client's error message, cut to [`MAX_NACK_MESSAGE_BYTES`].
    pub message: String,
    /// Length of the client's error message.
    pub message_bytes: usize,
    /// `version_info` of the rejected response.
    pub rejected_version: String,
    /// When it arrived.
    pub at: SystemTime,
}

/// What the client said about the last response in a request, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A first request or a subscription change: nothing acknowledged.
    None,
    /// The request carried a nonce that is not the latest; it was ignored whole.
    Stale,
    /// The latest response was accepted; `latency` since its snapshot was built.
    Ack {
        /// Time from snapshot build to this ACK, when known.
        since_build: Option<std::time::Duration>,
    },
    /// The latest response was rejected.
    Nack(Nack),
    /// The request names the latest response, which an earlier request already acknowledged
    /// or rejected: a repeat (or a subscription change after the answer). Only its
    /// subscription counts; the answer is not counted or logged again.
    Repeated,
}

/// One request, reduced to the fields the rules read.
#[derive(Clone, Debug, Default)]
pub struct RequestView<'a> {
    /// `version_info`.
    pub version: &'a str,
    /// `response_nonce`.
    pub nonce: &'a str,
    /// `resource_names` (empty when `same_names`).
    pub names: &'a [&'a str],
    /// The request names exactly what the previous request of its type named (the stream
    /// compared their fingerprints and did not read the names): the subscription stands.
    pub same_names: bool,
    /// `error_detail.message`, if `error_detail` is set.
    pub error: Option<&'a str>,
}

/// State of one resource type on one stream.
#[derive(Clone, Debug, Default)]
pub struct TypeState {
    /// A request for this type arrived.
    pub requested: bool,
    /// Subscribed to every resource (legacy empty list, or explicit `*`).
    pub wildcard: bool,
    /// Subscribed by an empty first request (legacy wildcard).
    legacy_wildcard: bool,
    /// Explicitly subscribed names (interned: shared with every stream subscribing to them).
    pub names: Names,
    /// The resources of this type the client holds: it was sent every subscribed resource
    /// in them, at their version (a handle shared with the snapshot, never a copy). Each
    /// response sends whatever differs from this, so afterwards the client holds the
    /// snapshot's resources and this becomes them.
    held: Option<Arc<Resources>>,
    /// Subscribed names the client does not hold even if `held` has them: subscribed since,
    /// or to be sent again (an assignment Envoy needs to finish warming a cluster). Usually
    /// empty; an empty B-tree set is smaller than an empty hash set, and every idle stream
    /// has four.
    unsent: BTreeSet<Box<str>>,
    /// The subscription changed since the last response was considered.
    dirty: bool,
    /// Nonce of the latest response.
    pub nonce: Option<String>,
    /// `version_info` of the latest response.
    pub sent_version: Option<String>,
    /// When the snapshot of the latest response was built.
    sent_built: Option<Instant>,
    /// Latest version the client acknowledged.
    pub acked_version: Option<String>,
    /// The latest response is not answered (ACK or NACK) yet.
    pub pending: bool,
    /// Latest NACK, kept until a later response is acknowledged (boxed: rare, and large
    /// next to the rest of an idle stream).
    pub last_nack: Option<Box<Nack>>,
}

/// A response to send.
#[derive(Clone, Debug)]
pub struct Response {
    /// Resource type.
    pub kind: ResourceType,
    /// `version_info`.
    pub version: String,
    /// `nonce`.
    pub nonce: String,
    /// Resources to include (shared by every stream sending the same whole set or list).
    pub resources: Selected,
}

/// All xDS state of one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    types: [TypeState; 4],
    responses: u64,
    /// Clusters gone from the snapshot that the client keeps because a listener or route it
    /// holds still sends traffic to them (make-before-break; usually empty).
    retained: Vec<Arc<Resource>>,
    /// How this proxy sees the config (its listener and route variants).
    view: View,
    /// The EDS response in flight re-sends assignments of new or changed clusters: listeners
    /// and routes wait for its answer.
    warming: bool,
    /// When the last CDS response went out: how long listeners and routes wait for the
    /// proxy to subscribe to the assignments of its new clusters.
    clusters_sent_at: Option<Instant>,
}

impl StreamState {
    /// The state of a new stream of a proxy with `view`.
    pub fn new(view: View) -> Self {
        StreamState {
            view,
            ..Default::default()
        }
    }

    /// How this proxy sees the config.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// State of one type.
    pub fn get(&self, kind: ResourceType) -> &TypeState {
        &self.types[kind as usize]
    }

    /// Applies a request. Returns what it said about the last response and whether a
    /// response must be considered now (first request of the type or a subscription change).
    pub fn on_request(&mut self, kind: ResourceType, req: &RequestView<'_>) -> (Verdict, bool) {
        let ts = &mut self.types[kind as usize];
        let verdict = if req.nonce.is_empty() {
            Verdict::None
        } else if ts.nonce.as_deref() != Some(req.nonce) {
            return (Verdict::Stale, false);
        } else if !ts.pending {
            // Counted and logged once per response: a client repeating its NACK (or ACK) of
            // the same nonce is not another answer.
            Verdict::Repeated
        } else if let Some(message) = req.error {
            let nack = Nack {
                version: bounded(req.version, MAX_VERSION_BYTES),
                nonce: req.nonce.to_string(),
                message: bounded(message, MAX_NACK_MESSAGE_BYTES),
                message_bytes: message.len(),
                rejected_version: ts.sent_version.clone().unwrap_or_default(),
                at: SystemTime::now(),
            };
            ts.pending = false;
            ts.last_nack = Some(Box::new(nack.clone()));
            Verdict::Nack(nack)
        } else {
            ts.acked_version = Some(bounded(req.version, MAX_VERSION_BYTES));
            ts.pending = false;
            ts.last_nack = None;
            Verdict::Ack {
                since_build: ts.sent_built.map(|b| b.elapsed()),
            }
        };

        let first = !ts.requested;
        ts.requested = true;
        let changed = if req.same_names && !first {
            // The common ACK: the whole subscription repeated, unchanged.
            false
        } else if req.names.is_empty() {
            if first {
                ts.legacy_wildcard = true;
                ts.wildcard = true;
                true
            } else if !ts.legacy_wildcard {
                let had = ts.wildcard || !ts.names.is_empty();
                ts.wildcard = false;
                ts.names = Names::default();
                had
            } else {
                false
            }
        } else {
            ts.legacy_wildcard = false;
            let wildcard = req.names.contains(&"*");
            let mut wanted: Vec<&str> = req.names.iter().copied().filter(|n| *n != "*").collect();
            wanted.sort_unstable();
            wanted.dedup();
            let changed = first || wildcard != ts.wildcard || !ts.names.equals_sorted(&wanted);
            if changed {
                if wildcard && !ts.wildcard {
                    // The client held only its named resources: everything is new to it.
                    ts.held = None;
                }
                if !ts.wildcard && ts.held.is_some() {
                    let added = wanted.iter().filter(|n| !ts.names.contains(n));
                    ts.unsent.extend(added.map(|n| Box::from(*n)));
                }
                ts.wildcard = wildcard;
                ts.names = Names::of(&wanted);
            }
            changed
        };
        ts.dirty |= changed;
        (verdict, changed)
    }

    /// The response `kind` needs for `snapshot`, if any. `force` answers even when nothing
    /// changed (required after a first request or a subscription change of CDS/LDS).
    pub fn response_for(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        force: bool,
    ) -> Option<Response> {
        if order::waits_for_clusters(kind, &self.types, self.warming, self.clusters_sent_at) {
            // Sent once the proxy answered the clusters and assignments it was just sent.
            return None;
        }
        // Only a client already holding assignments needs any of them again after CDS.
        let rewarm_eds = kind == ResourceType::Cluster
            && self.types[ResourceType::Endpoint as usize].held.is_some();
        let resources = snapshot.resources_for(kind, &self.view);
        let retained = match kind {
            ResourceType::Cluster => order::retained(&self.types, &self.retained, &resources),
            _ => Vec::new(),
        };
        let retention_changed =
            kind == ResourceType::Cluster && !order::same_names(&retained, &self.retained);
        let ts = &mut self.types[kind as usize];
        let current = ts
            .held
            .as_ref()
            .is_some_and(|held| held.version == resources.version);
        if !ts.requested || (current && !ts.dirty && ts.unsent.is_empty() && !retention_changed) {
            return None;
        }
        // A first request or a subscription change is owed an answer, even when it had to
        // wait above.
        let owed = force || ts.dirty;
        ts.dirty = false;
        // Whatever is sent now, afterwards the client holds `resources`.
        let held = ts.held.replace(resources.clone());
        let unsent = std::mem::take(&mut ts.unsent);
        // Every subscribed resource of the snapshot (not needed for an EDS push to a client
        // that holds assignments: that takes only what changed).
        let wanted = || -> Selected {
            if ts.wildcard {
                resources.all()
            } else if let Some(list) = ts.names.list() {
                resources.select(list)
            } else {
                Selected::from([])
            }
        };
        // What the client holds: what it was last sent (`held`), and clusters kept for it.
        let kept_before = &self.retained;
        let holds = |name: &str| {
            held.as_ref()
                .and_then(|h| h.by_name.get(name))
                .or_else(|| kept_before.iter().find(|r| &*r.name == name))
        };
        let changed = |r: &Arc<Resource>| {
            unsent.contains(&*r.name)
                || holds(&r.name).is_none_or(|h| !Arc::ptr_eq(h, r) && h.version != r.version)
        };
        let mut rewarming: Vec<Arc<str>> = Vec::new();
        let send: Option<Selected> = 'send: {
            if kind.is_full_state() {
                let wanted = wanted();
                let held_count = match &held {
                    None => 0,
                    Some(h) if ts.wildcard => h.by_name.len() + kept_before.len(),
                    Some(h) => ts
                        .names
                        .iter()
                        .filter(|n| h.by_name.contains_key(*n))
                        .count(),
                };
                let differs = held_count != wanted.len() + retained.len()
                    || wanted.iter().chain(&retained).any(changed);
                if !differs && !owed {
                    break 'send None;
                }
                if rewarm_eds {
                    rewarming = wanted
                        .iter()
                        .filter(|r| changed(r))
                        .map(|r| r.name.clone())
                        .collect();
                }
                if retained.is_empty() {
                    break 'send Some(wanted);
                }
                let mut with_retained = wanted.to_vec();
                with_retained.extend(retained.iter().cloned());
                with_retained.sort_unstable_by(|a, b| a.name.cmp(&b.name));
                Some(with_retained.into())
            } else {
                let send: Selected = match &held {
                    // What changed since the set the client holds (shared by every stream
                    // holding it), filtered by this subscription, plus names subscribed since.
                    Some(held) => {
                        let subscribed = |name: &str| ts.wildcard || ts.names.contains(name);
                        let mut send: Vec<Arc<Resource>> = resources
                            .changed_since(held)
                            .iter()
                            .filter(|r| subscribed(&r.name) && !unsent.contains(&*r.name))
                            .cloned()
                            .collect();
                        let again = unsent.iter().filter(|n| subscribed(n));
                        send.extend(again.filter_map(|n| resources.by_name.get(&**n).cloned()));
                        send.sort_unstable_by(|a, b| a.name.cmp(&b.name));
                        send.into()
                    }
                    None => wanted(),
                };
                (!send.is_empty()).then_some(send)
            }
        };
        let version = order::version_with(&resources.version, &retained);
        if kind == ResourceType::Cluster {
            self.retained = retained;
        }
        if kind == ResourceType::Endpoint {
            // Assignments of new clusters the proxy has not subscribed to yet stay owed (while
            // the cluster exists): Envoy asks for them right after it takes the clusters.
            let ts = &mut self.types[kind as usize];
            let subscribed = |n: &str| ts.wildcard || ts.names.contains(n);
            let later: BTreeSet<Box<str>> = unsent
                .iter()
                .filter(|n| !subscribed(n) && resources.by_name.contains_key(&***n))
                .cloned()
                .collect();
            self.warming = send
                .as_ref()
                .is_some_and(|s| s.iter().any(|r| unsent.contains(&*r.name)));
            self.types[kind as usize].unsent = later;
        }
        let send = send?;
        if kind == ResourceType::Cluster {
            self.clusters_sent_at = Some(Instant::now());
        }
        let ts = &mut self.types[kind as usize];
        self.responses += 1;
        let nonce = self.responses.to_string();
        ts.nonce = Some(nonce.clone());
        ts.sent_version = Some(version.clone());
        ts.sent_built = Some(snapshot.built);
        ts.pending = true;
        let response = Response {
            kind,
            version,
            nonce,
            resources: send,
        };
        if !rewarming.is_empty() {
            // Envoy re-warms a changed cluster and waits for its assignment before using it;
            // its EDS request for an already subscribed name looks like an ACK. So the
            // assignment of every new or changed EDS cluster is sent again after the CDS
            // response (clusters without an assignment, e.g. DNS or passthrough, need none).
            let assignments = snapshot.resources_for(ResourceType::Endpoint, &self.view);
            let eds = &mut self.types[ResourceType::Endpoint as usize];
            eds.unsent.extend(
                rewarming
                    .iter()
                    .filter(|n| assignments.by_name.contains_key(&***n))
                    .map(|n| Box::from(&**n)),
            );
        }
        Some(response)
    }

    /// Responses a request made due: the requested type (always considered when `force`),
    /// then whatever other type it left pending, in push order.
    pub fn responses_after_request(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        force: bool,
    ) -> Vec<Response> {
        let mut out: Vec<Response> = self
            .response_for(kind, snapshot, force)
            .into_iter()
            .collect();
        out.extend(self.responses_for(snapshot));
        out
    }

    /// Responses for every type after a snapshot change, in CDS → EDS → LDS → RDS order.
    pub fn responses_for(&mut self, snapshot: &Snapshot) -> Vec<Response> {
        ResourceType::ALL
            .into_iter()
            .filter_map(|kind| self.response_for(kind, snapshot, false))
            .collect()
    }
}

#[cfg(test)]
mod tests;
