//! One watch loop: watcher events into catalog events, with the retry rules.
//!
//! - A failed list or watch (apiserver unreachable, forbidden) is reported and retried after
//!   [`RetryDelay`] (0.5 s doubling to 2 s): never a hot loop, and a returning apiserver is
//!   found within about 2.5 s.
//! - `410 Gone` (the watch's resource version expired, as after an apiserver restart) is no
//!   failure: the watch re-lists at once. Only a second 410 within [`EXPIRY_STREAK`] waits
//!   (a list whose version expires at once must not become a loop of lists).
//! - The watch counts as recovered, and its problem leaves `/debug/config`, only once a list
//!   completed or a change arrived: a list attempt that starts and then fails again changes
//!   nothing that is reported.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::Resource;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::index::WatchIndex;
use super::{describe_watch_error, is_expired, KubeMetrics};
use crate::catalog::{CatalogEvent, Object, ObjectKind};
use crate::readiness::ReadyGuard;
use crate::source::convert::ObjectError;
use crate::source::{SourceError, SourceStatus};

/// A second `410 Gone` sooner than this after the previous one waits the retry delay.
pub(super) const EXPIRY_STREAK: Duration = Duration::from_secs(60);

/// A failure that repeats unchanged is logged again at most this often (it is counted in
/// `revplane_kube_watch_errors_total` every time).
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// One watch loop's plumbing.
pub(super) struct Watch {
    /// Plural resource name (`services`), for logs, metrics and `/debug/config`.
    pub resource: &'static str,
    /// The kind a completed list replaces.
    pub kind: ObjectKind,
    /// Where catalog events go.
    pub events: mpsc::Sender<CatalogEvent>,
    /// Where problems are reported.
    pub status: SourceStatus,
    /// Counters.
    pub metrics: KubeMetrics,
    /// Ends the loop.
    pub shutdown: CancellationToken,
    /// Done once the first list is queued (and, for the mesh config, valid).
    pub ready: Option<ReadyGuard>,
}

/// The failure a watch is in, until a list completes or a change arrives.
struct Failing {
    error: SourceError,
    logged_at: Instant,
    repeats: u64,
}

impl Watch {
    /// Runs until `shutdown` or until nobody receives events. `connect` makes a fresh watcher
    /// stream (in a new state: the next item starts a list).
    pub async fn run<K, S, F>(mut self, mut connect: impl FnMut() -> S, convert: F)
    where
        K: Resource,
        S: Stream<Item = watcher::Result<Event<K>>> + Unpin,
        F: Fn(&K) -> Result<Object, ObjectError>,
    {
        let mut stream = connect();
        let mut retry = RetryDelay::default();
        let mut expiry = RetryDelay::default();
        let mut last_expired: Option<Instant> = None;
        let mut index = WatchIndex::default();
        let mut failing: Option<Failing> = None;
        let mut held_back = false;
        let mut listed = false;
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                event = stream.next() => match event { Some(e) => e, None => return },
            };
            let event = match event {
                Ok(event) => event,
                Err(e) if is_expired(&e) => {
                    self.metrics
                        .expired
                        .get_or_create(&[("resource", self.resource)])
                        .inc();
                    let streak = last_expired.is_some_and(|t| t.elapsed() < EXPIRY_STREAK);
                    last_expired = Some(Instant::now());
                    if streak {
                        // Expiring again without progress (a list whose continue token keeps
                        // expiring): the watch is stale, so say so where operators look.
                        self.failed(&mut failing, &index, &e);
                        let delay = expiry.next_delay();
                        tracing::warn!(
                            ?delay,
                            "resource version expired again (410 Gone); re-listing after a delay"
                        );
                        if self.sleep(delay).await.is_err() {
                            return;
                        }
                    } else {
                        expiry = RetryDelay::default();
                        tracing::info!("resource version expired (410 Gone); re-listing now");
                    }
                    // A fresh watcher lists on its first poll, whatever state the old one
                    // was left in.
                    stream = connect();
                    continue;
                }
                Err(e) => {
                    self.failed(&mut failing, &index, &e);
                    if self.sleep(retry.next_delay()).await.is_err() {
                        return;
                    }
                    // Start over with a list, not a resumed watch: the next success is then a
                    // completed list (InitDone), which says the watch recovered even on a
                    // resource where nothing changes, and catches up at once with what
                    // changed while the apiserver was away.
                    stream = connect();
                    continue;
                }
            };
            let progress = matches!(event, Event::InitDone | Event::Apply(_) | Event::Delete(_));
            let send = match event {
                Event::Init => {
                    index.init();
                    None
                }
                Event::InitApply(obj) => {
                    let (id, converted) = self.convert(&obj, &convert);
                    index.init_apply(id, converted);
                    None
                }
                Event::InitDone => {
                    self.metrics
                        .relists
                        .get_or_create(&[("resource", self.resource)])
                        .inc();
                    Some(index.init_done(self.kind))
                }
                Event::Apply(obj) => {
                    let (id, converted) = self.convert(&obj, &convert);
                    index.apply(id, converted)
                }
                Event::Delete(obj) => index.delete(&id_of(&obj)),
            };
            if progress {
                retry = RetryDelay::default();
                if failing.take().is_some() {
                    tracing::info!("watch recovered");
                }
            }
            self.publish_status(failing.as_ref(), &index);
            if let Some(event) = send {
                listed |= matches!(event, CatalogEvent::Replace(..));
                if self.events.send(event).await.is_err() {
                    return;
                }
            }
            if listed && self.ready.is_some() {
                // A revision's mesh config that exists but is invalid when the process starts
                // has no last good version: serving defaults (all namespaces, default policy)
                // would be a different config than the running replicas serve. Stay unready.
                if self.kind == ObjectKind::Mesh && index.has_invalid() {
                    if !held_back {
                        held_back = true;
                        tracing::error!("the revision's mesh config is invalid at start; not ready until it is fixed");
                    }
                    continue;
                }
                tracing::info!(objects = index.len(), "initial list done");
                // Queued above: the publisher finds it when it sees the guard gone.
                if let Some(ready) = self.ready.take() {
                    ready.done();
                }
            }
        }
    }

    async fn sleep(&self, delay: Duration) -> Result<(), ()> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(()),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    fn convert<K: Resource, F>(&self, obj: &K, convert: &F) -> (String, Result<Object, SourceError>)
    where
        F: Fn(&K) -> Result<Object, ObjectError>,
    {
        let id = id_of(obj);
        let converted = convert(obj).map_err(|e| {
            self.metrics
                .invalid_objects
                .get_or_create(&[("resource", self.resource)])
                .inc();
            tracing::warn!(object = %id, error = %e, "invalid object; its last good version stays served");
            SourceError {
                path: format!("{}/{id}", self.resource),
                document: None,
                reason: e.to_string(),
            }
        });
        (id, converted)
    }

    fn failed(&self, failing: &mut Option<Failing>, index: &WatchIndex, e: &watcher::Error) {
        self.metrics
            .watch_errors
            .get_or_create(&[("resource", self.resource)])
            .inc();
        let reason = describe_watch_error(e);
        match failing {
            Some(f) if f.error.reason == reason => {
                f.repeats += 1;
                if f.logged_at.elapsed() >= REPEAT_LOG {
                    tracing::warn!(error = %reason, failed_attempts = f.repeats, "watch still failing; the last good state stays served, retrying with backoff");
                    f.logged_at = Instant::now();
                } else {
                    tracing::debug!(error = %reason, "watch failed again");
                }
            }
            _ => {
                tracing::warn!(error = %reason, "watch failed; the last good state stays served, retrying with backoff");
                *failing = Some(Failing {
                    error: SourceError {
                        path: format!("kube watch {}", self.resource),
                        document: None,
                        reason,
                    },
                    logged_at: Instant::now(),
                    repeats: 1,
                });
            }
        }
        self.publish_status(failing.as_ref(), index);
    }

    fn publish_status(&self, failing: Option<&Failing>, index: &WatchIndex) {
        let errors = failing
            .map(|f| &f.error)
            .into_iter()
            .chain(index.invalid())
            .cloned()
            .collect();
        self.status
            .set_errors(&format!("kube/{}", self.resource), errors);
    }
}

/// Delay before retrying a failed list or watch: 0.5 s doubling to 2 s (+ up to 25% jitter),
/// reset by the first real progress (a completed list or a change). kube-runtime's own
/// backoff is reset by any event, including the `Init` that starts every list attempt, so a
/// failing list would be retried at its minimum delay forever; this one grows. The cap is
/// short so that a returning apiserver is found within about 2.5 s; an apiserver that is down
/// sees one request per watch every 2 s.
#[derive(Debug)]
pub(super) struct RetryDelay {
    next: Duration,
}

impl Default for RetryDelay {
    fn default() -> Self {
        RetryDelay {
            next: Duration::from_millis(500),
        }
    }
}

impl RetryDelay {
    /// The longest delay (before jitter).
    pub const MAX: Duration = Duration::from_secs(2);

    /// The next delay, with up to 25% jitter so that replicas that lost the same apiserver
    /// do not return in step.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        delay + delay.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// `namespace/name` (or `name`) of an API object, as the user would type it.
pub(super) fn id_of<K: Resource>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}
