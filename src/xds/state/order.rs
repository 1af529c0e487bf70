//! Make-before-break order on one ADS stream (DESIGN.md §3), as rules over the stream's
//! per-type state.
//!
//! - A listener or route is sent only once the proxy has answered the clusters it was sent
//!   just before and received the assignments of the new ones: a route never names a cluster
//!   the proxy has not warmed yet ([`waits_for_clusters`]).
//! - A cluster gone from the snapshot stays in what the proxy is sent while a listener or
//!   route it holds still sends traffic there, and until the listeners and routes that drop
//!   it are answered ([`retained`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use super::TypeState;
use crate::snapshot::{Resource, ResourceType, Resources};

const CDS: usize = ResourceType::Cluster as usize;
const EDS: usize = ResourceType::Endpoint as usize;
const LDS: usize = ResourceType::Listener as usize;
const RDS: usize = ResourceType::Route as usize;

/// Longest listeners and routes wait for the proxy to subscribe to the assignments of new
/// clusters (Envoy does at once; a proxy that never does must not hold them forever).
pub(super) const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// Whether a response of `kind` must wait: listeners and routes wait while clusters the
/// proxy was sent are unanswered, while assignments of new or changed clusters are owed
/// (not yet subscribed to, for at most [`SUBSCRIBE_WAIT`] after the clusters went out), and
/// while an EDS response carrying such assignments (`warming`) is unanswered. Plain endpoint
/// pushes do not hold them up.
pub(super) fn waits_for_clusters(
    kind: ResourceType,
    types: &[TypeState; 4],
    warming: bool,
    clusters_sent_at: Option<Instant>,
) -> bool {
    if !matches!(kind, ResourceType::Listener | ResourceType::Route) {
        return false;
    }
    let owed = !types[EDS].unsent.is_empty()
        && clusters_sent_at.is_some_and(|at| at.elapsed() < SUBSCRIBE_WAIT);
    types[CDS].pending || owed || (types[EDS].pending && warming)
}

/// The clusters to keep sending beyond `next` (the snapshot's): those the proxy holds that
/// `next` no longer has, while a listener or route it holds refers to them. While listeners
/// or routes are unanswered, nothing kept before is let go. Only a wildcard subscriber is
/// sent clusters it did not ask for by name; others keep none.
pub(super) fn retained(
    types: &[TypeState; 4],
    before: &[Arc<Resource>],
    next: &Resources,
) -> Vec<Arc<Resource>> {
    let cds = &types[CDS];
    let Some(held) = cds.held.as_ref().filter(|_| cds.wildcard) else {
        return Vec::new();
    };
    let refs: Vec<_> = [LDS, RDS]
        .iter()
        .filter_map(|t| types[*t].held.as_ref().map(|h| h.referenced_clusters()))
        .collect();
    // A rejected listener or route update leaves the proxy with its older ones, which may
    // still use what it holds: nothing goes until a later one is accepted.
    let answered = [LDS, RDS]
        .iter()
        .all(|t| !types[*t].pending && types[*t].last_nack.is_none());
    let keep = |r: &Arc<Resource>| {
        !next.by_name.contains_key(&r.name)
            && (!answered || refs.iter().any(|set| set.contains(&r.name)))
    };
    let mut kept: Vec<Arc<Resource>> = before.iter().filter(|r| keep(r)).cloned().collect();
    if held.version != next.version && !refs.is_empty() {
        let removed = next.removed_since(held);
        let referenced = |r: &&Arc<Resource>| refs.iter().any(|set| set.contains(&r.name));
        kept.extend(removed.iter().filter(referenced).cloned());
    }
    kept.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    kept.dedup_by(|a, b| a.name == b.name);
    kept
}

/// Whether two sets of kept clusters are the same clusters.
pub(super) fn same_names(a: &[Arc<Resource>], b: &[Arc<Resource>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
}

/// The `version_info` of a response: the snapshot's version of the type, marked when it
/// also carries kept clusters (so it still names exactly what was sent).
pub(super) fn version_with(version: &str, kept: &[Arc<Resource>]) -> String {
    if kept.is_empty() {
        return version.to_string();
    }
    let mut hasher = Xxh3::new();
    for r in kept {
        hasher.update(r.name.as_bytes());
        hasher.update(&[0]);
        hasher.update(r.version.as_bytes());
    }
    format!("{version}+{:08x}", hasher.digest() as u32)
}
