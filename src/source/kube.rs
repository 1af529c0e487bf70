//! The Kubernetes source: kube-runtime watchers for Namespaces, Services, EndpointSlices and
//! the revision's ConfigMap `revplane-<revision>`.
//!
//! Each watch converts objects into compact catalog objects as they arrive (the full API
//! objects, managedFields and all, are never kept). A list or re-list (start, watch restart,
//! `410 Gone`) is buffered and handed to the catalog as one [`CatalogEvent::Replace`], so an
//! outage or a re-list can never publish an empty or partial catalog. An object that does not
//! convert is reported and its last good version kept. Watch errors (unreachable apiserver,
//! forbidden) are logged and counted, and retried with backoff (0.5 s doubling to 2 s), never
//! in a hot loop; an expired resource version (`410 Gone`, as after an apiserver restart)
//! re-lists at once ([`watch`] has the rules). Each watch holds a
//! [`ReadyGuard`](crate::readiness::ReadyGuard) until its first list is queued.

mod index;
mod watch;

use std::fmt::Debug;
use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::convert::{self, SERVICE_NAME_LABEL};
use super::SourceStatus;
use crate::catalog::{CatalogEvent, Object, ObjectKind};
use crate::readiness::Readiness;
use crate::revision::Revision;
use watch::Watch;

/// Metrics of the Kubernetes source.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    watch_errors: Family<[(&'static str, &'static str); 1], Counter>,
    invalid_objects: Family<[(&'static str, &'static str); 1], Counter>,
    relists: Family<[(&'static str, &'static str); 1], Counter>,
    expired: Family<[(&'static str, &'static str); 1], Counter>,
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
        registry.register(
            "kube_expired_watches",
            "Watches whose resource version expired (410 Gone, as after an apiserver restart), \
             each followed by an immediate re-list, by resource",
            self.expired.clone(),
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

impl KubeSource {
    /// Registers one readiness guard per watch in `readiness` now, and returns the task that
    /// runs every watch until `shutdown` (each drops its guard after its first list).
    pub fn run(
        self,
        events: mpsc::Sender<CatalogEvent>,
        status: SourceStatus,
        metrics: KubeMetrics,
        readiness: &Readiness,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let cm_name = convert::mesh_config_map_name(&self.revision);
        let slices = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let config_map = watcher::Config::default().fields(&format!("metadata.name={cm_name}"));
        let watch = |resource: &'static str, kind: ObjectKind| Watch {
            resource,
            kind,
            events: events.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            ready: Some(readiness.block(format!("kube/{resource}"))),
        };
        let namespaces = watch("namespaces", ObjectKind::Namespace).run(
            connect(
                Api::<Namespace>::all(self.client.clone()),
                Default::default(),
            ),
            |ns| convert::namespace(ns).map(Object::Namespace),
        );
        let services = watch("services", ObjectKind::Service).run(
            connect(Api::<Service>::all(self.client.clone()), Default::default()),
            |svc| convert::service(svc, "default").map(Object::Service),
        );
        let endpoint_slices = watch("endpointslices", ObjectKind::EndpointSlice).run(
            connect(Api::<EndpointSlice>::all(self.client.clone()), slices),
            |s| convert::endpoint_slice(s, "default").map(Object::EndpointSlice),
        );
        let mesh = watch("configmaps", ObjectKind::Mesh).run(
            connect(
                Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace),
                config_map,
            ),
            |cm| convert::mesh_config(cm).map(Object::Mesh),
        );
        async move {
            tokio::join!(
                namespaces.instrument(tracing::info_span!("watch", resource = "namespaces")),
                services.instrument(tracing::info_span!("watch", resource = "services")),
                endpoint_slices
                    .instrument(tracing::info_span!("watch", resource = "endpointslices")),
                mesh.instrument(
                    tracing::info_span!("watch", resource = "configmaps", name = %cm_name)
                ),
            );
        }
    }
}

/// Makes fresh watcher streams of `api` (each starts with a list).
fn connect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl FnMut() -> futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    move || watcher(api.clone(), config.clone()).boxed()
}

/// Whether a watch error means the resource version expired (`410 Gone`): re-list, no failure.
fn is_expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
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
mod tests;
