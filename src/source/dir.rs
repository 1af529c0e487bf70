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
use crate::revision::Revision;

/// Namespace given to namespaced objects whose manifest names none (as `kubectl` does).
const DEFAULT_NAMESPACE: &str = "default";

/// How long to wait after a file event for the rest of an editor's writes.
const SETTLE: Duration = Duration::from_millis(50);

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
    /// Hash of the content last parsed: an unchanged file is not parsed again.
    content_hash: Option<u64>,
}

/// Reads a manifest directory and remembers the last good content of every file.
pub struct DirSource {
    root: PathBuf,
    mesh_config_map: String,
    files: BTreeMap<PathBuf, FileState>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Objects of every file (last good content of bad files).
    pub objects: Vec<Object>,
    /// Current problems.
    pub errors: Vec<SourceError>,
}

impl DirSource {
    /// A source for `root` serving `revision`; nothing is read until [`DirSource::scan`].
    pub fn new(root: impl Into<PathBuf>, revision: &Revision) -> Self {
        DirSource {
            root: root.into(),
            mesh_config_map: convert::mesh_config_map_name(revision),
            files: BTreeMap::new(),
        }
    }

    /// Reads every manifest file again and parses those whose content changed.
    pub fn scan(&mut self) -> Scan {
        let mut errors = Vec::new();
        let paths = match manifest_files(&self.root) {
            Ok(paths) => paths,
            Err(e) => {
                // The directory itself is unreadable: keep everything we had.
                errors.push(SourceError {
                    path: self.root.display().to_string(),
                    document: None,
                    reason: format!("cannot read the manifest directory: {e}"),
                });
                return self.collect(errors);
            }
        };
        self.files.retain(|p, _| paths.contains(p));
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
            let hash = Some(xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
            if hash == state.content_hash {
                continue;
            }
            state.content_hash = hash;
            match parse_file(&path, &text, &self.mesh_config_map) {
                Ok(objects) => {
                    state.good = objects;
                    state.errors.clear();
                }
                Err(file_errors) => state.errors = file_errors,
            }
        }
        self.collect(errors)
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
        Scan { objects, errors }
    }
}

/// Runs the source until `shutdown`: an initial scan, then a scan after every change.
pub async fn run(
    root: PathBuf,
    revision: Revision,
    events: mpsc::Sender<CatalogEvent>,
    status: SourceStatus,
    metrics: DirMetrics,
    shutdown: CancellationToken,
) {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
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
            tracing::error!(dir = %root.display(), error = %e, "cannot watch the manifest directory; changes will not be picked up");
            None
        }
    };
    let mut source = DirSource::new(root, &revision);
    let mut last_sent: Option<Vec<Object>> = None;
    let mut last_errors: Vec<SourceError> = Vec::new();
    loop {
        let scan = source.scan();
        metrics.scans.inc();
        for e in scan.errors.iter().filter(|e| !last_errors.contains(e)) {
            metrics.errors.inc();
            tracing::warn!(error = %e, "manifest rejected; its last good content stays served");
        }
        metrics.invalid.set(scan.errors.len() as i64);
        status.set_errors("dir", scan.errors.clone());
        last_errors = scan.errors;
        if last_sent.as_ref() != Some(&scan.objects) {
            let first = last_sent.is_none();
            last_sent = Some(scan.objects.clone());
            if events
                .send(CatalogEvent::Reset(scan.objects))
                .await
                .is_err()
            {
                return;
            }
            if first && events.send(CatalogEvent::Synced).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            woke = wake.recv() => if woke.is_none() { return },
        }
        tokio::time::sleep(SETTLE).await;
        while wake.try_recv().is_ok() {}
    }
}

fn manifest_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue; // editor swap files, hidden directories
            }
            if path.is_dir() {
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
mod tests {
    use super::*;

    fn rev() -> Revision {
        "canary".parse().unwrap()
    }

    #[test]
    fn the_revisions_own_config_map_is_its_mesh_config() {
        let dir = tempfile::tempdir().unwrap();
        let cm = |name: &str, mesh: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: revplane}}\ndata:\n  mesh: |\n    {mesh}\n")
        };
        std::fs::write(
            dir.path().join("canary.yaml"),
            cm("revplane-canary", "lbPolicy: RANDOM"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("stable.yaml"),
            cm("revplane-stable", "lbPolicy: LEAST_REQUEST"),
        )
        .unwrap();
        let mut source = DirSource::new(dir.path(), &rev());
        let scan = source.scan();
        assert_eq!(scan.objects.len(), 1, "only the canary's own mesh config");
        assert!(
            matches!(&scan.objects[0], Object::Mesh(m) if m.lb_policy == crate::mesh::LbPolicy::Random)
        );
        std::fs::write(
            dir.path().join("canary.yaml"),
            cm("revplane-canary", "lbPolicy: NONE"),
        )
        .unwrap();
        let scan = source.scan();
        assert!(
            matches!(&scan.objects[0], Object::Mesh(m) if m.lb_policy == crate::mesh::LbPolicy::Random),
            "last good kept"
        );
        assert!(
            scan.errors[0].reason.contains("invalid mesh config"),
            "{}",
            scan.errors[0].reason
        );
    }

    const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n";

    #[test]
    fn reads_multi_document_files_and_ignores_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let scan = DirSource::new(dir.path(), &rev()).scan();
        assert!(scan.errors.is_empty(), "{:?}", scan.errors);
        assert_eq!(scan.objects.len(), 1);
    }

    #[test]
    fn a_bad_file_keeps_its_last_good_content_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.yaml");
        std::fs::write(&file, GOOD).unwrap();
        let mut source = DirSource::new(dir.path(), &rev());
        let good = source.scan();
        assert_eq!(good.objects.len(), 1);

        let bad_port = GOOD.replace("port: 80", "port: 0");
        std::fs::write(&file, &bad_port).unwrap();
        let scan = source.scan();
        assert_eq!(scan.objects, good.objects, "last good content is kept");
        assert_eq!(scan.errors.len(), 1);
        assert_eq!(scan.errors[0].document, Some(0));
        assert!(scan.errors[0].path.ends_with("shop.yaml"));
        assert!(
            scan.errors[0].reason.contains("outside 1-65535"),
            "{}",
            scan.errors[0].reason
        );

        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: [").unwrap();
        let scan = source.scan();
        assert_eq!(scan.objects, good.objects);
        assert!(scan.errors[0].reason.contains("not valid YAML"));

        std::fs::write(&file, GOOD).unwrap();
        assert!(source.scan().errors.is_empty());
    }

    #[test]
    fn an_object_defined_twice_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
        let scan = DirSource::new(dir.path(), &rev()).scan();
        assert_eq!(scan.errors.len(), 1);
        assert!(scan.errors[0].path.ends_with("b.yaml"));
        assert!(
            scan.errors[0]
                .reason
                .contains("Service shop/web is also defined in"),
            "{}",
            scan.errors[0].reason
        );
    }

    #[test]
    fn a_file_never_good_contributes_nothing_and_deleted_files_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: Service\n").unwrap();
        std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
        let mut source = DirSource::new(dir.path(), &rev());
        let scan = source.scan();
        assert_eq!(scan.objects.len(), 1);
        assert!(scan.errors[0].reason.contains("apiVersion and kind"));
        std::fs::remove_file(dir.path().join("good.yaml")).unwrap();
        assert!(source.scan().objects.is_empty());
    }
}
