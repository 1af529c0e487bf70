//! The manifest-directory source: every `*.yaml` / `*.yml` below a directory, watched.
//!
//! Each scan reads all files and sends one atomic [`CatalogEvent::Reset`]. A file that does
//! not parse, or holds an invalid object, is reported (path, document index, reason) and its
//! **last good content keeps being used**; a file never seen good contributes nothing. The
//! task never exits or panics on bad input.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{convert, SourceError, SourceStatus};
use crate::catalog::{CatalogEvent, Object, ObjectRef};
use crate::readiness::ReadyGuard;
use crate::revision::Revision;

/// Namespace given to namespaced objects whose manifest names none (as `kubectl` does).
const DEFAULT_NAMESPACE: &str = "default";

/// How long to wait after a file event for the rest of an editor's writes; a changed file is
/// taken once it read the same on two scans this far apart.
const SETTLE: Duration = Duration::from_millis(50);

/// How long a file that lost all its objects must hold still before that counts.
const EMPTIED_HOLD: Duration = Duration::from_secs(1);

/// Metrics of the directory source.
#[derive(Clone, Debug, Default)]
pub struct DirMetrics {
    invalid: Gauge,
    errors: Counter,
    scans: Counter,
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
    }
}

#[derive(Default)]
struct FileState {
    /// Objects of the last good read of this file.
    good: Vec<Object>,
    /// Problems of the latest read, if it was bad.
    errors: Vec<SourceError>,
    /// Hash of the content last taken: an unchanged file is not parsed again.
    content_hash: Option<u64>,
    /// A new content seen once, and since when: taken when seen again unchanged.
    pending: Option<(u64, std::time::Instant)>,
}

/// Reads a manifest directory and remembers the last good content of every file.
pub struct DirSource {
    root: PathBuf,
    mesh_config_map: String,
    files: BTreeMap<PathBuf, FileState>,
    scanned: bool,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Objects of every file (last good content of bad files).
    pub objects: Vec<Object>,
    /// Current problems.
    pub errors: Vec<SourceError>,
    /// False when the directory itself could not be read (nothing was learnt).
    pub complete: bool,
    /// Some file changed but has not held still yet: scan again shortly.
    pub unsettled: bool,
}

impl DirSource {
    /// A source for `root` serving `revision`; nothing is read until [`DirSource::scan`].
    pub fn new(root: impl Into<PathBuf>, revision: &Revision) -> Self {
        DirSource {
            root: root.into(),
            mesh_config_map: convert::mesh_config_map_name(revision),
            files: BTreeMap::new(),
            scanned: false,
        }
    }

    /// Reads every manifest file again and parses those whose content changed and has held
    /// still since the previous scan (a file caught mid-write is not taken; see
    /// [`Scan::unsettled`]). The first scan takes every file as it is.
    pub fn scan(&mut self) -> Scan {
        let first = !self.scanned;
        self.scanned = true;
        let mut errors = Vec::new();
        let paths = match manifest_files(&self.root, &mut errors) {
            Ok(paths) => paths,
            Err(e) => {
                // The directory itself is unreadable: keep everything we had.
                errors.push(SourceError {
                    path: self.root.display().to_string(),
                    document: None,
                    reason: format!("cannot read the manifest directory: {e}"),
                });
                let mut scan = self.collect(errors);
                scan.complete = false;
                return scan;
            }
        };
        self.files.retain(|p, _| paths.contains(p));
        let mut unsettled = false;
        for path in paths {
            let state = self.files.entry(path.clone()).or_default();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    state.content_hash = None;
                    state.errors = vec![SourceError {
                        path: path.display().to_string(),
                        document: None,
                        reason: format!("cannot read: {e}"),
                    }];
                    continue;
                }
            };
            let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
            if Some(hash) == state.content_hash {
                state.pending = None;
                continue;
            }
            let parsed = parse_file(&path, &text, &self.mesh_config_map);
            // A file that had objects and now has none is usually being rewritten
            // (`> file` truncates first): it must hold still longer before it counts.
            let emptied = !state.good.is_empty() && matches!(&parsed, Ok(o) if o.is_empty());
            let hold = if emptied {
                EMPTIED_HOLD
            } else {
                Duration::ZERO
            };
            let settled = first
                || matches!(state.pending, Some((h, since)) if h == hash && since.elapsed() >= hold);
            if !settled {
                if state.pending.is_none_or(|(h, _)| h != hash) {
                    state.pending = Some((hash, std::time::Instant::now()));
                }
                unsettled = true;
                continue;
            }
            state.pending = None;
            state.content_hash = Some(hash);
            match parsed {
                Ok(objects) => {
                    state.good = objects;
                    state.errors.clear();
                }
                Err(file_errors) => state.errors = file_errors,
            }
        }
        let mut scan = self.collect(errors);
        scan.unsettled = unsettled;
        scan
    }

    fn collect(&self, mut errors: Vec<SourceError>) -> Scan {
        let mut objects = Vec::new();
        let mut defined_in: HashMap<ObjectRef, &Path> = HashMap::new();
        for (path, state) in &self.files {
            for object in &state.good {
                if let Some(first) = defined_in.insert(object.reference(), path) {
                    errors.push(SourceError {
                        path: path.display().to_string(),
                        document: None,
                        reason: format!(
                            "{} is also defined in {}; the definition in the file that sorts last wins",
                            object.reference(),
                            first.display()
                        ),
                    });
                }
            }
            objects.extend(state.good.iter().cloned());
            errors.extend(state.errors.iter().cloned());
        }
        Scan {
            objects,
            errors,
            complete: true,
            unsettled: false,
        }
    }
}

/// Runs the source until `shutdown`: an initial scan, then a scan after every change. `ready`
/// is dropped once the first complete scan is queued.
pub async fn run(
    root: PathBuf,
    revision: Revision,
    events: mpsc::Sender<CatalogEvent>,
    status: SourceStatus,
    metrics: DirMetrics,
    shutdown: CancellationToken,
    ready: ReadyGuard,
) {
    let mut ready = Some(ready);
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    // Held here so the channel stays open even when the watcher (and its sender) is gone.
    let _wake_tx = wake_tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (ours included) raise access events; only changes matter.
        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            // A full channel already holds a wake-up; dropping this one loses nothing.
            let _ = wake_tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&root, RecursiveMode::Recursive).map(|_| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(dir = %root.display(), error = %e, "cannot watch the manifest directory; rescanning every 5 s instead");
            None
        }
    };
    let mut source = DirSource::new(root, &revision);
    let mut last_sent: Option<Vec<Object>> = None;
    let mut last_errors: Vec<SourceError> = Vec::new();
    loop {
        let scan = source.scan();
        metrics.scans.inc();
        let retry_after = if !scan.complete && last_sent.is_none() {
            // Nothing learnt yet: never report an unreadable directory as an empty mesh.
            Some(Duration::from_secs(1))
        } else if scan.unsettled {
            Some(SETTLE)
        } else if _watcher.is_none() {
            Some(Duration::from_secs(5))
        } else {
            None
        };
        for e in scan.errors.iter().filter(|e| !last_errors.contains(e)) {
            metrics.errors.inc();
            tracing::warn!(error = %e, "manifest rejected; its last good content stays served");
        }
        metrics.invalid.set(scan.errors.len() as i64);
        status.set_errors("dir", scan.errors.clone());
        last_errors = scan.errors;
        if (scan.complete || last_sent.is_some()) && last_sent.as_ref() != Some(&scan.objects) {
            let first = last_sent.is_none();
            last_sent = Some(scan.objects.clone());
            if events
                .send(CatalogEvent::Reset(scan.objects))
                .await
                .is_err()
            {
                return;
            }
            if first {
                // Queued above: the publisher finds it when it sees the guard gone.
                drop(ready.take());
            }
        }
        let rescan = async {
            match retry_after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.recv() => tokio::time::sleep(SETTLE).await,
            _ = rescan => {}
        }
        while wake.try_recv().is_ok() {}
    }
}

/// Every `*.yaml` / `*.yml` below `root` (hidden entries and symlinked directories skipped).
/// An unreadable subdirectory or entry is reported in `errors` and skipped; only an
/// unreadable `root` is an error.
fn manifest_files(root: &Path, errors: &mut Vec<SourceError>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if dir == root => return Err(e),
            Err(e) => {
                errors.push(SourceError {
                    path: dir.display().to_string(),
                    document: None,
                    reason: format!("cannot read this directory, skipped: {e}"),
                });
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue; // editor swap files, hidden directories
            }
            // file_type() does not follow symlinks: a symlinked directory is not walked (no
            // loops); a symlinked file is read like any file.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one file: all its objects, or every problem found in it.
fn parse_file(
    path: &Path,
    text: &str,
    mesh_config_map: &str,
) -> Result<Vec<Object>, Vec<SourceError>> {
    let at = |document: Option<usize>, reason: String| SourceError {
        path: path.display().to_string(),
        document,
        reason,
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                errors.push(at(Some(index), format!("not valid YAML: {e}")));
                break; // the parser cannot resynchronise after a syntax error
            }
        };
        match read_object(value, mesh_config_map) {
            Ok(Some(object)) => objects.push(object),
            Ok(None) => {}
            Err(reason) => errors.push(at(Some(index), reason)),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// One YAML document to an object; `None` for empty documents and kinds we do not use.
/// The ConfigMap named `mesh_config_map` (any namespace) is the revision's mesh config.
fn read_object(
    value: serde_yaml_ng::Value,
    mesh_config_map: &str,
) -> Result<Option<Object>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("not a Kubernetes object: apiVersion and kind are required".to_string());
    };
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => Object::Namespace(
            convert::namespace(&decode(value, &kind)?).map_err(|e| invalid(&kind, e))?,
        ),
        ("v1", "Service") => Object::Service(
            convert::service(&decode(value, &kind)?, DEFAULT_NAMESPACE)
                .map_err(|e| invalid(&kind, e))?,
        ),
        ("discovery.k8s.io/v1", "EndpointSlice") => Object::EndpointSlice(
            convert::endpoint_slice(&decode(value, &kind)?, DEFAULT_NAMESPACE)
                .map_err(|e| invalid(&kind, e))?,
        ),
        ("v1", "ConfigMap")
            if value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str())
                == Some(mesh_config_map) =>
        {
            Object::Mesh(
                convert::mesh_config(&decode(value, &kind)?).map_err(|e| invalid(&kind, e))?,
            )
        }
        _ => {
            tracing::debug!(%api_version, %kind, "ignoring a kind revplane does not use");
            return Ok(None);
        }
    };
    Ok(Some(object))
}

fn decode<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    kind: &str,
) -> Result<T, String> {
    serde_yaml_ng::from_value(value).map_err(|e| format!("invalid {kind}: {e}"))
}

fn invalid(kind: &str, e: convert::ObjectError) -> String {
    format!("invalid {kind}: {e}")
}

#[cfg(test)]
mod tests;
