//! Metrics of the directory source.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metrics of the directory source.
#[derive(Clone, Debug, Default)]
pub struct DirMetrics {
    pub(super) invalid: Gauge,
    pub(super) errors: Counter,
    pub(super) scans: Counter,
    pub(super) pending: Gauge,
    pub(super) parses: Counter,
    pub(super) file_events: Counter,
}

impl DirMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "source_invalid_documents",
            "Manifest files or documents currently rejected (their last good content is served)",
            self.invalid.clone(),
        );
        registry.register(
            "source_errors",
            "Problems found in source input, counted when they first appear",
            self.errors.clone(),
        );
        registry.register(
            "source_scans",
            "Scans of the manifest directory",
            self.scans.clone(),
        );
        registry.register(
            "source_pending_files",
            "Manifest files changed but not taken yet: still being written, or holding still before they count",
            self.pending.clone(),
        );
        registry.register(
            "source_parses",
            "Manifest file contents parsed (each new content once, off the async runtime)",
            self.parses.clone(),
        );
        registry.register(
            "source_file_events",
            "File events from the manifest directory's watcher: changes, and writers closing files (the source's own reads are none)",
            self.file_events.clone(),
        );
    }
}
