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
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{convert, manifest, SourceError, SourceStatus};
use crate::catalog::{CatalogEvent, Object, ObjectRef};
use crate::revision::Revision;

mod metrics;
mod watch;

pub use metrics::DirMetrics;
pub use watch::{Hints, WriteHint};

/// How long to wait after a file event for the rest of a burst of writes; also how far
/// apart the two equal readings of a file written in place must be.
const SETTLE: Duration = Duration::from_millis(50);

/// How long a new content must hold still when nothing shows it is complete (no file
/// events), or when a writer closed it but it drops objects the file serves.
pub const SLOW_WRITE_HOLD: Duration = Duration::from_secs(2);

/// How long a content may wait for a writer that keeps the file open before it is taken.
pub const OPEN_WRITER_HOLD: Duration = Duration::from_secs(10);

/// How often to look for a manifest directory that is gone.
const MISSING_DIR_RETRY: Duration = Duration::from_secs(1);

/// How often to scan when the directory cannot be watched.
const UNWATCHED_POLL: Duration = Duration::from_secs(5);

/// Settings of the directory source.
#[derive(Clone, Debug)]
pub struct DirOptions {
    /// Scan everything this often even without file events (zero: never).
    pub rescan_interval: Duration,
    /// Larger files are refused unread.
    pub max_file_bytes: u64,
}

/// Which file a content was read from: a new one at a known path was renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId(u64, u64);

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId(meta.dev(), meta.ino())
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileId(0, 0)
        }
    }
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
        for path in &paths {
            if let Some(wait) = self.look_at(path, hints.get(path), first, now, hints) {
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

    /// Reads one listed path; returns when to look again if its new content is not taken.
    fn look_at(
        &mut self,
        path: &Path,
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
        let read = read_bounded(path, self.max_file_bytes);
        let known = self.files.get(path).is_some_and(|f| f.taken.is_some());
        let (bytes, id) = match read {
            Ok(Reading::Content(bytes, id)) => (bytes, id),
            // A directory named like a manifest that never was one is just a directory.
            Ok(Reading::Directory) if !known => return None,
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
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
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
                slot.insert(Candidate {
                    hash,
                    id,
                    since: now,
                    readings: 1,
                    parsed: manifest::parse(&bytes, &self.mesh_config_map).map_err(|errors| {
                        errors
                            .into_iter()
                            .map(|e| SourceError {
                                path: path.display().to_string(),
                                document: e.document,
                                reason: e.reason,
                            })
                            .collect()
                    }),
                })
            }
        };
        let held = now.duration_since(candidate.since);
        let replaced = state.taken.as_ref().is_some_and(|t| t.id != id);
        let drops = match &candidate.parsed {
            Ok(objects) => drops_objects(&state.good, objects),
            Err(_) => false,
        };
        let wait = match hint {
            _ if first => None,
            Some(WriteHint::MovedIn) => None,
            None if replaced => None,
            Some(WriteHint::Closed) if candidate.readings < 2 => Some(SETTLE),
            Some(WriteHint::Closed) if !drops => None,
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

/// True when `new` lacks an object that `old` has (a rewrite in progress looks like this).
fn drops_objects(old: &[Object], new: &[Object]) -> bool {
    let kept: HashSet<ObjectRef> = new.iter().map(Object::reference).collect();
    old.iter().any(|o| !kept.contains(&o.reference()))
}

/// What reading one listed path gave.
enum Reading {
    Content(Vec<u8>, FileId),
    Directory,
    Special,
    TooBig(u64),
}

/// Reads a regular file of at most `max` bytes (following symlinks); anything else is
/// not opened (opening a pipe would block until someone writes to it).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Reading> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(Reading::Directory);
    }
    if !meta.is_file() {
        return Ok(Reading::Special);
    }
    if meta.len() > max {
        return Ok(Reading::TooBig(meta.len()));
    }
    let file = std::fs::File::open(path)?;
    let id = FileId::of(&file.metadata()?);
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Reading::TooBig(bytes.len() as u64));
    }
    Ok(Reading::Content(bytes, id))
}

/// Whether a file name is one the source reads.
fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Every entry named `*.yaml` / `*.yml` below `root`, whatever it is (hidden entries and
/// symlinked directories are not walked). An unreadable subdirectory is reported in
/// `errors` and skipped; only an unreadable `root` is an error.
fn manifest_paths(root: &Path, errors: &mut Vec<SourceError>) -> std::io::Result<Vec<PathBuf>> {
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
                continue; // editor swap files, rsync's temporary files, hidden directories
            }
            // file_type() does not follow symlinks: a symlinked directory is not walked (no
            // loops); a symlinked file is read like any file.
            if entry.file_type().is_ok_and(|k| k.is_dir()) {
                dirs.push(path.clone());
            }
            if is_manifest_name(name) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs the source until `shutdown`: an initial scan, then a scan after every change, when
/// a change is due, every `rescan_interval`, and while the directory is gone. Scans run on
/// the blocking pool, never on the runtime's workers.
pub async fn run(
    root: PathBuf,
    revision: Revision,
    options: DirOptions,
    events: mpsc::Sender<CatalogEvent>,
    status: SourceStatus,
    metrics: DirMetrics,
    shutdown: CancellationToken,
) {
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let hints = Hints::default();
    let mut watch = watch::Watch::new(root.clone(), hints.clone(), wake_tx);
    let mut source = DirSource::new(root, &revision, options.max_file_bytes);
    let mut last_sent: Option<Vec<Object>> = None;
    let mut last_errors: Vec<SourceError> = Vec::new();
    loop {
        let hints = hints.clone();
        let job = tokio::task::spawn_blocking(move || {
            watch.ensure();
            let scan = source.scan(&hints);
            (watch, source, scan)
        });
        let scan;
        (watch, source, scan) = tokio::select! {
            _ = shutdown.cancelled() => return,
            done = job => match done {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "the manifest directory scan failed; the last config stays served, without updates");
                    return;
                }
            },
        };
        metrics.scans.inc();
        metrics.pending.set(scan.pending as i64);
        metrics.parses.inc_by(scan.parsed);
        let retry_after = if !scan.complete {
            // Gone or unreadable: look for it again soon (and never report an unreadable
            // directory as an empty mesh).
            Some(MISSING_DIR_RETRY)
        } else if !watch.active() {
            Some(
                scan.recheck
                    .map_or(UNWATCHED_POLL, |r| r.min(UNWATCHED_POLL)),
            )
        } else {
            scan.recheck
        };
        let retry_after = match (retry_after, options.rescan_interval) {
            (r, Duration::ZERO) => r,
            (Some(r), every) => Some(r.min(every)),
            (None, every) => Some(every),
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
            if first && events.send(CatalogEvent::Synced).await.is_err() {
                return;
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

#[cfg(test)]
mod tests;
