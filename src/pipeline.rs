//! The publisher task: owns the catalog, debounces changes, translates, and publishes
//! snapshots on a `tokio::sync::watch` channel, and beside them the [`InjectorView`] the
//! injection webhook reads (the mesh config and namespace labels, published at once, not
//! debounced: a pod created right after its namespace was labelled must see the label).
//!
//! Nothing is published before every source reported its initial sync (every
//! [`ReadyGuard`](crate::readiness::ReadyGuard) of the [`Readiness`] dropped), so streams
//! never see an empty snapshot that only means "not read yet". Debounce: a build starts once
//! events have been quiet for `quiet`, or `max` after the first unbuilt change, whichever is
//! first. A build (tens of milliseconds at 10,000 services) runs on tokio's blocking pool, not
//! on a runtime worker that streams and the admin server share; events wait in the channel
//! meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogEvent, Object, ObjectKind, ObjectRef};
use crate::mesh::MeshConfig;
use crate::readiness::Readiness;
use crate::snapshot::builder::SnapshotBuilder;
use crate::snapshot::{ResourceType, Snapshot};

/// The receiving side streams use: `None` until the first snapshot.
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// What the injection webhook reads of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectorView {
    /// The revision's mesh config in force.
    pub mesh: MeshConfig,
    /// Every namespace's labels, by name.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// The receiving side the injector uses: `None` until every source synced.
pub type InjectorViewReceiver = watch::Receiver<Option<Arc<InjectorView>>>;

impl InjectorView {
    fn of(catalog: &Catalog) -> InjectorView {
        InjectorView {
            mesh: catalog.mesh().clone(),
            namespaces: catalog
                .namespaces()
                .map(|ns| (ns.name.clone(), ns.labels.clone()))
                .collect(),
        }
    }
}

/// Whether an event can change what the injector reads.
fn touches_injector(event: &CatalogEvent) -> bool {
    match event {
        CatalogEvent::Apply(object) => matches!(object, Object::Namespace(_) | Object::Mesh(_)),
        CatalogEvent::Delete(object) => matches!(object, ObjectRef::Namespace(_) | ObjectRef::Mesh),
        CatalogEvent::Replace(kind, _) => matches!(kind, ObjectKind::Namespace | ObjectKind::Mesh),
        CatalogEvent::Reset(_) => true,
    }
}

/// Debounce between catalog changes and snapshot builds.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Quiet time after the last change.
    pub quiet: Duration,
    /// Longest delay after the first unbuilt change.
    pub max: Duration,
}

/// Publisher metrics.
#[derive(Clone, Debug)]
pub struct PublisherMetrics {
    /// Serializations of resources (encode-once: one per changed snapshot resource).
    pub encodes: Counter,
    builds: Counter,
    build_seconds: Histogram,
    clusters: Gauge,
    load_assignments: Gauge,
    published: Gauge<f64, AtomicU64>,
}

impl Default for PublisherMetrics {
    fn default() -> Self {
        PublisherMetrics {
            encodes: Counter::default(),
            builds: Counter::default(),
            build_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            clusters: Gauge::default(),
            load_assignments: Gauge::default(),
            published: Gauge::default(),
        }
    }
}

impl PublisherMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "snapshot_encodes",
            "Resources serialized while building snapshots",
            self.encodes.clone(),
        );
        registry.register(
            "snapshot_builds",
            "Snapshots built and published",
            self.builds.clone(),
        );
        registry.register(
            "snapshot_build_seconds",
            "Time to translate and encode one snapshot",
            self.build_seconds.clone(),
        );
        registry.register(
            "snapshot_clusters",
            "Clusters in the current snapshot",
            self.clusters.clone(),
        );
        registry.register(
            "snapshot_endpoint_sets",
            "ClusterLoadAssignments in the current snapshot",
            self.load_assignments.clone(),
        );
        registry.register(
            "snapshot_published_timestamp_seconds",
            "Unix time the current snapshot was published (push latency starts here)",
            self.published.clone(),
        );
    }
}

/// Owns the catalog and publishes snapshots.
pub struct Publisher {
    catalog: Catalog,
    builder: SnapshotBuilder,
    debounce: Debounce,
    readiness: Readiness,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    views: watch::Sender<Option<Arc<InjectorView>>>,
    metrics: PublisherMetrics,
    serial: u64,
}

impl Publisher {
    /// A publisher that publishes nothing while `readiness` has a task pending; returns it with
    /// the snapshot receiver.
    pub fn new(
        debounce: Debounce,
        readiness: Readiness,
        metrics: PublisherMetrics,
    ) -> (Publisher, SnapshotReceiver) {
        let (tx, rx) = watch::channel(None);
        let publisher = Publisher {
            catalog: Catalog::default(),
            builder: SnapshotBuilder::new(metrics.encodes.clone()),
            debounce,
            readiness,
            tx,
            views: watch::channel(None).0,
            metrics,
            serial: 0,
        };
        (publisher, rx)
    }

    /// Another receiver of the published snapshots.
    pub fn subscribe(&self) -> SnapshotReceiver {
        self.tx.subscribe()
    }

    /// A receiver of the injector's view.
    pub fn injector_views(&self) -> InjectorViewReceiver {
        self.views.subscribe()
    }

    fn publish_view(&self) {
        let view = InjectorView::of(&self.catalog);
        self.views.send_if_modified(|current| {
            if current.as_deref() == Some(&view) {
                return false;
            }
            *current = Some(Arc::new(view));
            true
        });
    }

    /// Runs until the event channel closes or `shutdown`.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<CatalogEvent>,
        shutdown: CancellationToken,
    ) {
        // (first unbuilt change, last change)
        let mut pending: Option<(Instant, Instant)> = None;
        let mut synced = false;
        loop {
            let deadline = pending
                .map(|(first, last)| (last + self.debounce.quiet).min(first + self.debounce.max));
            tokio::select! {
                // Shutdown first: never publish a first snapshot while streams are closing.
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.readiness.wait(), if !synced => {
                    // Each source dropped its guard after queueing what it read: take all of it.
                    while let Ok(event) = events.try_recv() {
                        self.catalog.handle(event);
                    }
                    synced = true;
                    tracing::info!(services = self.catalog.service_count(), "all sources synced");
                    pending = None;
                    self.publish().await;
                    self.publish_view();
                }
                _ = sleep_until(deadline), if synced => {
                    pending = None;
                    self.publish().await;
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        // The sources are gone; keep serving the last snapshot until shutdown
                        // rather than closing every stream.
                        tracing::error!("all sources stopped; serving the last snapshot");
                        shutdown.cancelled().await;
                        return;
                    };
                    let view = touches_injector(&event);
                    if self.catalog.handle(event) {
                        let now = Instant::now();
                        pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                        if view && synced {
                            self.publish_view();
                        }
                    }
                }
            }
        }
    }

    /// Builds on the blocking pool (the catalog and builder travel there and back) and
    /// publishes the snapshot if it differs from the current one.
    async fn publish(&mut self) {
        let started = std::time::Instant::now();
        let previous = self.tx.borrow().clone();
        let catalog = std::mem::take(&mut self.catalog);
        let fresh = SnapshotBuilder::new(self.metrics.encodes.clone());
        let mut builder = std::mem::replace(&mut self.builder, fresh);
        let serial = self.serial + 1;
        let built = tokio::task::spawn_blocking(move || {
            let snapshot = builder.build(serial, &catalog);
            (catalog, builder, snapshot)
        })
        .await;
        let (catalog, builder, snapshot) = match built {
            Ok(built) => built,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels a blocking task: nothing left to publish.
            Err(_) => return,
        };
        self.catalog = catalog;
        self.builder = builder;
        // The mesh config also shapes what is not in the default views (a proxy's default
        // interception mode, what the injector reads): a change of it alone is published.
        let unchanged = previous.as_ref().is_some_and(|p| {
            p.mesh == snapshot.mesh
                && p.views().map(|v| v.content_hash()) == snapshot.views().map(|v| v.content_hash())
                && ResourceType::ALL
                    .iter()
                    .all(|t| p.resources(*t).version == snapshot.resources(*t).version)
        });
        self.metrics
            .build_seconds
            .observe(started.elapsed().as_secs_f64());
        if unchanged {
            tracing::debug!("catalog changed but the config did not; nothing published");
            return;
        }
        self.serial += 1;
        let clusters = snapshot.resources(ResourceType::Cluster).by_name.len();
        let endpoint_sets = snapshot.resources(ResourceType::Endpoint).by_name.len();
        self.metrics.builds.inc();
        self.metrics.clusters.set(clusters as i64);
        self.metrics.load_assignments.set(endpoint_sets as i64);
        tracing::info!(
            serial = snapshot.serial,
            clusters,
            endpoint_sets,
            cds_version = %snapshot.resources(ResourceType::Cluster).version,
            eds_version = %snapshot.resources(ResourceType::Endpoint).version,
            "snapshot published"
        );
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        self.metrics
            .published
            .set(now.map_or(0.0, |d| d.as_secs_f64()));
        self.tx.send_replace(Some(Arc::new(snapshot)));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
