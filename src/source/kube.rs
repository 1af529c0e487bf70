//! The Kubernetes source: kube-runtime watchers for Namespaces, Services, EndpointSlices and
//! the revision's ConfigMap `revplane-<revision>`.
//!
//! Each watch converts objects into compact catalog objects as they arrive (the full API
//! objects, managedFields and all, are never kept). A list or re-list (start, watch restart,
//! `410 Gone`) is buffered and handed to the catalog as one [`CatalogEvent::Replace`], so an
//! outage or a re-list can never publish an empty or partial catalog. An object that does not
//! convert is reported and its last good version kept. Watch errors (unreachable apiserver,
//! forbidden) are logged and counted, and retried with backoff (0.5 s doubling to 8 s), never
//! in a hot loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::convert::{self, ObjectError, SERVICE_NAME_LABEL};
use super::{SourceError, SourceStatus};
use crate::catalog::{CatalogEvent, Object, ObjectKind, ObjectRef};
use crate::revision::Revision;

/// Metrics of the Kubernetes source.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    watch_errors: Family<[(&'static str, &'static str); 1], Counter>,
    invalid_objects: Family<[(&'static str, &'static str); 1], Counter>,
    relists: Family<[(&'static str, &'static str); 1], Counter>,
}

impl KubeMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kube_watch_errors",
            "Failed list/watch calls to the Kubernetes API (retried with backoff), by resource",
            self.watch_errors.clone(),
        );
        registry.register(
            "kube_invalid_objects",
            "Objects rejected as invalid (their last good version is kept), by resource",
            self.invalid_objects.clone(),
        );
        registry.register(
            "kube_relists",
            "Completed lists (initial and re-lists) applied atomically, by resource",
            self.relists.clone(),
        );
    }
}

/// What the Kubernetes source watches.
#[derive(Clone)]
pub struct KubeSource {
    /// API client (in-cluster config or KUBECONFIG).
    pub client: Client,
    /// Revision served: selects the ConfigMap `revplane-<revision>`.
    pub revision: Revision,
    /// The control plane's own namespace (where its ConfigMap lives).
    pub namespace: String,
}

/// The number of initial syncs the publisher must wait for.
pub const WATCHES: usize = 4;

impl KubeSource {
    /// Runs every watch until `shutdown`.
    pub async fn run(
        self,
        events: mpsc::Sender<CatalogEvent>,
        status: SourceStatus,
        metrics: KubeMetrics,
        shutdown: CancellationToken,
    ) {
        let cm_name = convert::mesh_config_map_name(&self.revision);
        let slices = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let config_map = watcher::Config::default().fields(&format!("metadata.name={cm_name}"));
        let ctx = |resource: &'static str| Watch {
            resource,
            events: events.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::join!(
            ctx("namespaces")
                .run(
                    Api::<Namespace>::all(self.client.clone()),
                    watcher::Config::default(),
                    ObjectKind::Namespace,
                    |ns| convert::namespace(ns).map(Object::Namespace),
                )
                .instrument(tracing::info_span!("watch", resource = "namespaces")),
            ctx("services")
                .run(
                    Api::<Service>::all(self.client.clone()),
                    watcher::Config::default(),
                    ObjectKind::Service,
                    |svc| convert::service(svc, "default").map(Object::Service),
                )
                .instrument(tracing::info_span!("watch", resource = "services")),
            ctx("endpointslices")
                .run(
                    Api::<EndpointSlice>::all(self.client.clone()),
                    slices,
                    ObjectKind::EndpointSlice,
                    |s| convert::endpoint_slice(s, "default").map(Object::EndpointSlice),
                )
                .instrument(tracing::info_span!("watch", resource = "endpointslices")),
            ctx("configmaps")
                .run(
                    Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace),
                    config_map,
                    ObjectKind::Mesh,
                    |cm| convert::mesh_config(cm).map(Object::Mesh),
                )
                .instrument(tracing::info_span!("watch", resource = "configmaps", name = %cm_name)),
        );
    }
}

/// One watch loop's plumbing.
struct Watch {
    resource: &'static str,
    events: mpsc::Sender<CatalogEvent>,
    status: SourceStatus,
    metrics: KubeMetrics,
    shutdown: CancellationToken,
}

/// Objects of one watch by API reference, with the last good conversion of each.
#[derive(Default)]
struct WatchState {
    good: BTreeMap<ObjectRef, Object>,
    invalid: BTreeMap<String, SourceError>,
    watch_error: Option<SourceError>,
}

impl Watch {
    async fn run<K, F>(self, api: Api<K>, config: watcher::Config, kind: ObjectKind, convert: F)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        F: Fn(&K) -> Result<Object, ObjectError>,
    {
        let mut stream = watcher(api, config).boxed();
        let mut retry = RetryDelay::default();
        let mut state = WatchState::default();
        let mut relist: Option<BTreeMap<ObjectRef, Object>> = None;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut synced = false;
        let mut listed = false;
        let mut held_back = false;
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                event = stream.next() => match event { Some(e) => e, None => return },
            };
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    self.watch_failed(&mut state, &e);
                    // The watcher retries on the next poll: wait first.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(retry.next_delay()) => {}
                    }
                    continue;
                }
            };
            if matches!(event, Event::InitDone | Event::Apply(_) | Event::Delete(_)) {
                retry = RetryDelay::default();
            }
            if state.watch_error.take().is_some() {
                tracing::info!("watch recovered");
                self.publish_status(&state);
            }
            let send = match event {
                Event::Init => {
                    relist = Some(BTreeMap::new());
                    seen.clear();
                    None
                }
                Event::InitApply(obj) => {
                    let buffer = relist.get_or_insert_with(BTreeMap::new);
                    let id = id_of(&obj);
                    seen.insert(id.clone());
                    match self.convert(&mut state, &obj, &id, &convert) {
                        Some(object) => {
                            buffer.insert(object.reference(), object);
                        }
                        None => {
                            // Invalid now: keep its last good version, if any.
                            if let Some(old) = state.good.values().find(|o| matches_id(o, &id)) {
                                buffer.insert(old.reference(), old.clone());
                            }
                        }
                    }
                    None
                }
                Event::InitDone => {
                    let fresh = relist.take().unwrap_or_default();
                    state.good = fresh;
                    state.invalid.retain(|id, _| seen.contains(id));
                    self.metrics
                        .relists
                        .get_or_create(&[("resource", self.resource)])
                        .inc();
                    Some(CatalogEvent::Replace(
                        kind,
                        state.good.values().cloned().collect(),
                    ))
                }
                Event::Apply(obj) => {
                    let id = id_of(&obj);
                    self.convert(&mut state, &obj, &id, &convert).map(|object| {
                        state.good.insert(object.reference(), object.clone());
                        CatalogEvent::Apply(object)
                    })
                }
                Event::Delete(obj) => {
                    let id = id_of(&obj);
                    state.invalid.remove(&id);
                    let gone = state
                        .good
                        .iter()
                        .find(|(_, o)| matches_id(o, &id))
                        .map(|(r, _)| r.clone());
                    gone.map(|reference| {
                        state.good.remove(&reference);
                        CatalogEvent::Delete(reference)
                    })
                }
            };
            self.publish_status(&state);
            if let Some(event) = send {
                listed |= matches!(event, CatalogEvent::Replace(..));
                if self.events.send(event).await.is_err() {
                    return;
                }
            }
            if listed && !synced {
                // A revision's mesh config that exists but is invalid when the process starts
                // has no last good version: serving defaults (all namespaces, default policy)
                // would be a different config than the running replicas serve. Stay unready.
                if kind == ObjectKind::Mesh && !state.invalid.is_empty() {
                    if !held_back {
                        held_back = true;
                        tracing::error!("the revision's mesh config is invalid at start; not ready until it is fixed");
                    }
                    continue;
                }
                synced = true;
                tracing::info!(objects = state.good.len(), "initial list done");
                if self.events.send(CatalogEvent::Synced).await.is_err() {
                    return;
                }
            }
        }
    }

    fn convert<K: Resource, F>(
        &self,
        state: &mut WatchState,
        obj: &K,
        id: &str,
        convert: &F,
    ) -> Option<Object>
    where
        F: Fn(&K) -> Result<Object, ObjectError>,
    {
        match convert(obj) {
            Ok(object) => {
                state.invalid.remove(id);
                Some(object)
            }
            Err(e) => {
                self.metrics
                    .invalid_objects
                    .get_or_create(&[("resource", self.resource)])
                    .inc();
                tracing::warn!(object = %id, error = %e, "invalid object; its last good version stays served");
                state.invalid.insert(
                    id.to_string(),
                    SourceError {
                        path: format!("{}/{id}", self.resource),
                        document: None,
                        reason: e.to_string(),
                    },
                );
                None
            }
        }
    }

    fn watch_failed(&self, state: &mut WatchState, e: &watcher::Error) {
        self.metrics
            .watch_errors
            .get_or_create(&[("resource", self.resource)])
            .inc();
        let reason = describe_watch_error(e);
        tracing::warn!(error = %reason, "watch failed; the last good state stays served, retrying with backoff");
        state.watch_error = Some(SourceError {
            path: format!("kube watch {}", self.resource),
            document: None,
            reason,
        });
        self.publish_status(state);
    }

    fn publish_status(&self, state: &WatchState) {
        let errors = state
            .watch_error
            .iter()
            .chain(state.invalid.values())
            .cloned()
            .collect();
        self.status
            .set_errors(&format!("kube/{}", self.resource), errors);
    }
}

/// Delay before retrying a failed list or watch: 0.5 s doubling to 8 s, reset by the first
/// real progress (a completed list or a change). kube-runtime's own backoff is reset by any
/// event, including the `Init` that starts every list attempt, so a failing list would be
/// retried at its minimum delay forever; this one grows. The cap is short so that changes
/// made during an apiserver outage arrive within seconds of its return.
#[derive(Debug)]
struct RetryDelay {
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
    const MAX: Duration = Duration::from_secs(8);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25% jitter, so replicas that lost the same apiserver do not return in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        delay + delay.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// `namespace/name` (or `name`) of an API object, as the user would type it.
fn id_of<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

fn object_id(o: &Object) -> String {
    match o.reference() {
        ObjectRef::Namespace(name) => name,
        ObjectRef::Service(k) | ObjectRef::EndpointSlice(k) => {
            format!("{}/{}", k.namespace, k.name)
        }
        ObjectRef::Mesh => String::new(),
    }
}

fn matches_id(o: &Object, id: &str) -> bool {
    matches!(o, Object::Mesh(_)) || object_id(o) == id
}

/// A watch error in words an operator can act on.
fn describe_watch_error(e: &watcher::Error) -> String {
    let api_error = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        _ => None,
    };
    match api_error {
        Some(s) if s.code == 403 => format!(
            "forbidden: {}; grant revplane's service account the roles of its chart \
             (deploy/charts/revplane/templates/rbac.yaml)",
            s.message
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_to_a_cap() {
        let mut r = RetryDelay::default();
        let delays: Vec<Duration> = (0..7).map(|_| r.next_delay()).collect();
        let floors = [500, 1000, 2000, 4000, 8000, 8000, 8000];
        for (d, floor) in delays.iter().zip(floors) {
            let floor = Duration::from_millis(floor);
            assert!(
                *d >= floor && *d <= floor.mul_f64(1.25),
                "{d:?} vs {floor:?}"
            );
        }
    }
}
