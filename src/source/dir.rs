//! The manifest-directory source: every `*.yaml` / `*.yml` below a directory, watched.
//!
//! Each scan reads all files and sends one atomic [`CatalogEvent::Reset`]. A file that does
//! not parse, or holds an invalid object, is reported (path, document index, reason) and its
//! **last good content keeps being used**; a file never seen good contributes nothing. The
//! task never exits or panics on bad input, and reads and parses off the async runtime.
//!
//! A new content of a file is taken only on evidence that it is complete (see
//! [`DirSource::scan`]): a file being written is never served half-written. A file is read
//! at most `--max-manifest-bytes`, and parsed once per content.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{convert, manifest, SourceError};
use crate::catalog::{Object, ObjectKind};
use crate::revision::Revision;

mod files;
mod metrics;
mod run;
mod watch;

use files::{manifest_paths, read_bounded, FileId, Reading};
pub use metrics::DirMetrics;
pub use run::run;
pub use watch::{Hints, WriteHint};

/// How long to wait after a file event for the rest of a burst of writes; also how far
/// apart the two equal readings of a file written in place must be.
const SETTLE: Duration = Duration::from_millis(50);

/// How long a new content must hold still when nothing shows it is complete (no file
/// events), or when a writer closed it but it drops objects the file serves.
pub const SLOW_WRITE_HOLD: Duration = Duration::from_secs(2);

/// How long a content may wait for a writer that keeps the file open before it is taken.
pub const OPEN_WRITER_HOLD: Duration = Duration::from_secs(10);

/// Paths one thread reads at least: fewer are read on the calling thread.
const PATHS_PER_THREAD: usize = 64;

/// One listed path as read: its content's hash, and the content parsed when it is new.
struct Look {
    reading: std::io::Result<Reading>,
    hash: u64,
    parsed: Option<Result<Vec<Object>, Vec<SourceError>>>,
}

/// Settings of the directory source.
#[derive(Clone, Debug)]
pub struct DirOptions {
    /// The revision served (its mesh-config ConfigMap is read from the directory).
    pub revision: Revision,
    /// Scan everything this often even without file events (zero: never).
    pub rescan_interval: Duration,
    /// Larger files are refused unread.
    pub max_file_bytes: u64,
}

/// The content of a file in force (served when good, reported when bad).
struct Taken {
    hash: u64,
    id: FileId,
    errors: Vec<SourceError>,
}

/// A new content seen but not taken yet, parsed once.
struct Candidate {
    hash: u64,
    id: FileId,
    since: Instant,
    readings: u32,
    parsed: Result<Vec<Object>, Vec<SourceError>>,
}

#[derive(Default)]
struct FileState {
    /// Objects of the last good content.
    good: Vec<Object>,
    taken: Option<Taken>,
    candidate: Option<Candidate>,
    /// Why the file could not be read at the latest look (its last good content stays).
    problem: Option<SourceError>,
    /// Gone from the directory since: dropped once gone on two scans.
    missing: Option<Instant>,
}

/// Reads a manifest directory and remembers the last good content of every file.
pub struct DirSource {
    root: PathBuf,
    mesh_config_map: String,
    max_file_bytes: u64,
    files: BTreeMap<PathBuf, FileState>,
    scanned: bool,
    /// File contents parsed so far (each new content once).
    parses: u64,
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
    /// Some change is not taken yet: scan again after this long (or on a file event).
    pub recheck: Option<Duration>,
    /// Files whose new content is not taken yet.
    pub pending: usize,
    /// File contents parsed by this scan.
    pub parsed: u64,
}

impl DirSource {
    /// A source for `root` serving `revision`; nothing is read until [`DirSource::scan`].
    pub fn new(root: impl Into<PathBuf>, revision: &Revision, max_file_bytes: u64) -> Self {
        DirSource {
            root: root.into(),
            mesh_config_map: convert::mesh_config_map_name(revision),
            max_file_bytes,
            files: BTreeMap::new(),
            scanned: false,
            parses: 0,
        }
    }

    /// Reads every manifest file again (blocking). The first scan takes every file as it
    /// is; later, a new content is taken (served if good, reported if bad) when:
    ///
    /// - it was renamed into place ([`WriteHint::MovedIn`], or another file now has the
    ///   path): at once;
    /// - the writer closed it ([`WriteHint::Closed`]) and it read the same twice, [`SETTLE`]
    ///   apart, unless it drops objects the file serves: those wait for
    ///   [`SLOW_WRITE_HOLD`];
    /// - a writer still has it open ([`WriteHint::Writing`]): once it closes, or after
    ///   [`OPEN_WRITER_HOLD`] unchanged;
    /// - nothing is known (no events: polling, events lost): after [`SLOW_WRITE_HOLD`]
    ///   unchanged.
    ///
    /// A file that is gone is dropped when gone on two scans; one replaced by a directory
    /// or anything but a regular file keeps its last good content and is reported.
    pub fn scan(&mut self, hints: &Hints) -> Scan {
        let first = !self.scanned;
        self.scanned = true;
        let now = Instant::now();
        let mut errors = Vec::new();
        let paths = match manifest_paths(&self.root, &mut errors) {
            Ok(paths) => paths,
            Err(e) => {
                // The directory itself is unreadable: keep everything we had.
                errors.push(SourceError {
                    path: self.root.display().to_string(),
                    document: None,
                    reason: format!(
                        "cannot read the manifest directory ({e}); its last good content stays served until it is back"
                    ),
                });
                let mut scan = self.collect(errors);
                scan.complete = false;
                return scan;
            }
        };
        let parses = self.parses;
        let mut recheck: Option<Duration> = None;
        let mut soon = |d: Duration| recheck = Some(recheck.map_or(d, |r| r.min(d)));
        let listed: HashSet<&PathBuf> = paths.iter().collect();
        self.files.retain(|path, state| {
            if listed.contains(path) {
                return true;
            }
            let since = *state.missing.get_or_insert(now);
            let gone = first || now.duration_since(since) >= SETTLE;
            if !gone {
                soon(SETTLE);
            }
            !gone
        });
        for (path, look) in paths.iter().zip(self.read_all(&paths)) {
            if let Some(wait) = self.take(path, look, hints.get(path), first, now, hints) {
                soon(wait);
            }
        }
        let mut scan = self.collect(errors);
        scan.recheck = recheck;
        scan.pending = self
            .files
            .values()
            .filter(|f| f.candidate.is_some())
            .count();
        scan.parsed = self.parses - parses;
        scan
    }

    /// Reads (and parses, where the content is new) every listed path, spread over the
    /// machine's cores: a scan of a large directory is mostly this.
    fn read_all(&self, paths: &[PathBuf]) -> Vec<Look> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let per_thread = paths.len().div_ceil(threads).max(PATHS_PER_THREAD);
        if paths.len() <= per_thread {
            return paths.iter().map(|p| self.read(p)).collect();
        }
        std::thread::scope(|scope| {
            let parts: Vec<_> = paths
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|p| self.read(p)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| match part.join() {
                    Ok(looks) => looks,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    /// Reads one listed path, and parses its content unless it is the one taken or the
    /// candidate already.
    fn read(&self, path: &Path) -> Look {
        let reading = read_bounded(path, self.max_file_bytes);
        let Ok(Reading::Content(bytes, id)) = &reading else {
            return Look {
                reading,
                hash: 0,
                parsed: None,
            };
        };
        let hash = xxhash_rust::xxh3::xxh3_64(bytes);
        let state = self.files.get(path);
        let known = state.is_some_and(|s| {
            s.taken.as_ref().is_some_and(|t| t.hash == hash)
                || s.candidate
                    .as_ref()
                    .is_some_and(|c| c.hash == hash && c.id == *id)
        });
        let parsed = (!known).then(|| parse_file(path, bytes, &self.mesh_config_map));
        Look {
            reading,
            hash,
            parsed,
        }
    }

    /// Reads one listed path; returns when to look again if its new content is not taken.
    #[cfg(test)]
    fn look_at(
        &mut self,
        path: &Path,
        hint: Option<WriteHint>,
        first: bool,
        now: Instant,
        hints: &Hints,
    ) -> Option<Duration> {
        let look = self.read(path);
        self.take(path, look, hint, first, now, hints)
    }

    /// Takes what [`DirSource::read`] found at one listed path; returns when to look again
    /// if its new content is not taken.
    fn take(
        &mut self,
        path: &Path,
        look: Look,
        hint: Option<WriteHint>,
        first: bool,
        now: Instant,
        hints: &Hints,
    ) -> Option<Duration> {
        let at = |reason: String| SourceError {
            path: path.display().to_string(),
            document: None,
            reason,
        };
        let Look {
            reading: read,
            hash,
            parsed,
        } = look;
        let known = self.files.get(path).is_some_and(|f| f.taken.is_some());
        let (bytes, id) = match read {
            Ok(Reading::Content(bytes, id)) => (bytes, id),
            // A directory named like a manifest that never was one is just a directory.
            Ok(Reading::Directory) if !known => return None,
            // Removed between listing and reading (a rename over it, a delete): not a
            // problem with the file; the next scan finds it gone or replaced.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(SETTLE),
            other => {
                let reason = match other {
                    Ok(Reading::Directory) => "was a manifest file and is now a directory; its last good content stays served until it is a file again or removed".to_string(),
                    Ok(Reading::Special) => "is not a regular file (a pipe, socket or device), so it is not read; its last good content, if any, stays served".to_string(),
                    Ok(Reading::TooBig(len)) => format!(
                        "is {len} bytes, more than --max-manifest-bytes ({}); refused unread (split it, or raise the limit); its last good content stays served",
                        self.max_file_bytes
                    ),
                    Err(e) => format!("cannot read ({e}); its last good content stays served"),
                    Ok(Reading::Content(..)) => unreachable!("matched above"),
                };
                let state = self.files.entry(path.to_path_buf()).or_default();
                state.missing = None;
                state.candidate = None;
                state.problem = Some(at(reason));
                return None;
            }
        };
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.missing = None;
        state.problem = None;
        if let Some(taken) = state.taken.as_mut().filter(|t| t.hash == hash) {
            taken.id = id;
            state.candidate = None;
            return None;
        }
        let candidate = match &mut state.candidate {
            Some(c) if c.hash == hash && c.id == id => {
                c.readings += 1;
                c
            }
            slot => {
                self.parses += 1;
                // Parsed by `read` already, which saw the same states.
                let parsed =
                    parsed.unwrap_or_else(|| parse_file(path, &bytes, &self.mesh_config_map));
                slot.insert(Candidate {
                    hash,
                    id,
                    since: now,
                    readings: 1,
                    parsed,
                })
            }
        };
        let held = now.duration_since(candidate.since);
        let replaced = state.taken.as_ref().is_some_and(|t| t.id != id);
        let drops = || match &candidate.parsed {
            Ok(objects) => drops_objects(&state.good, objects),
            Err(_) => false,
        };
        let wait = match hint {
            _ if first => None,
            Some(WriteHint::MovedIn) => None,
            None if replaced => None,
            Some(WriteHint::Closed) if candidate.readings < 2 => Some(SETTLE),
            Some(WriteHint::Closed) if !drops() => None,
            Some(WriteHint::Writing) => OPEN_WRITER_HOLD.checked_sub(held),
            Some(WriteHint::Closed) | None => SLOW_WRITE_HOLD.checked_sub(held),
        }
        .filter(|w| !w.is_zero());
        if wait.is_some() {
            return wait;
        }
        let candidate = state.candidate.take().expect("inserted above");
        let errors = match candidate.parsed {
            Ok(objects) => {
                state.good = objects;
                Vec::new()
            }
            Err(errors) => errors,
        };
        state.taken = Some(Taken { hash, id, errors });
        if let Some(hint) = hint {
            hints.consume(path, hint);
        }
        None
    }

    fn collect(&self, mut errors: Vec<SourceError>) -> Scan {
        let mut objects = Vec::with_capacity(self.files.values().map(|f| f.good.len()).sum());
        let mut defined_in: HashMap<(ObjectKind, &str, &str), &Path> =
            HashMap::with_capacity(objects.capacity());
        for (path, state) in &self.files {
            for object in &state.good {
                if let Some(first) = defined_in.insert(identity(object), path) {
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
            match &state.problem {
                Some(problem) => errors.push(problem.clone()),
                None => errors.extend(state.taken.iter().flat_map(|t| t.errors.iter().cloned())),
            }
        }
        Scan {
            objects,
            errors,
            complete: true,
            recheck: None,
            pending: 0,
            parsed: 0,
        }
    }
}

/// One file's content to objects, or its problems located at `path`.
fn parse_file(
    path: &Path,
    bytes: &[u8],
    mesh_config_map: &str,
) -> Result<Vec<Object>, Vec<SourceError>> {
    manifest::parse(bytes, mesh_config_map).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| SourceError {
                path: path.display().to_string(),
                document: e.document,
                reason: e.reason,
            })
            .collect()
    })
}

/// What [`Object::reference`] says, borrowed: which object this is.
fn identity(object: &Object) -> (ObjectKind, &str, &str) {
    let (namespace, name) = match object {
        Object::Namespace(ns) => ("", ns.name.as_str()),
        Object::Service(svc) => (svc.key.namespace.as_str(), svc.key.name.as_str()),
        Object::EndpointSlice(slice) => (slice.key.namespace.as_str(), slice.key.name.as_str()),
        Object::Mesh(_) => ("", ""),
    };
    (object.kind(), namespace, name)
}

/// True when `new` lacks an object that `old` has (a rewrite in progress looks like this).
fn drops_objects(old: &[Object], new: &[Object]) -> bool {
    let kept: HashSet<_> = new.iter().map(identity).collect();
    old.iter().any(|o| !kept.contains(&identity(o)))
}

#[cfg(test)]
mod tests;
