//! Watching the manifest directory: file events as wake-ups and as evidence of how a file
//! is being written, and a watch that is set up again when the directory comes back.
//!
//! inotify watches an inode, not a path: once the directory is removed (or a symlink to it
//! swapped) the old watch is dead and says nothing more. [`Watch::ensure`] compares the
//! directory's identity on every scan and watches it anew when it changed or came back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKindMask, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::files::{is_manifest_name, FileId};

/// What the file events say about the latest write of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteHint {
    /// Written (or created) in place, and the writer has not closed it yet.
    Writing,
    /// Written in place, and the writer closed it.
    Closed,
    /// Renamed into place: its content was complete before it got this name.
    MovedIn,
}

/// More paths than this with a hint means something generates files in bulk: the hints
/// are dropped (changes then wait for the slow-write hold instead).
const MAX_HINTS: usize = 65_536;

/// The latest [`WriteHint`] per manifest path, filled from file events (shared with the
/// watcher's thread).
#[derive(Clone, Debug, Default)]
pub struct Hints(Arc<Mutex<HashMap<PathBuf, WriteHint>>>);

impl Hints {
    /// The hint for `path`, if an event said anything since it was last consumed.
    pub fn get(&self, path: &Path) -> Option<WriteHint> {
        self.lock().get(path).copied()
    }

    /// Records `hint` for `path`.
    pub fn set(&self, path: &Path, hint: WriteHint) {
        let mut hints = self.lock();
        if hints.len() >= MAX_HINTS && !hints.contains_key(path) {
            hints.clear();
        }
        hints.insert(path.to_path_buf(), hint);
    }

    /// Forgets `path`'s hint if it is still `hint` (a content taken on its evidence: a later
    /// write must bring its own).
    pub(super) fn consume(&self, path: &Path, hint: WriteHint) {
        let mut hints = self.lock();
        if hints.get(path) == Some(&hint) {
            hints.remove(path);
        }
    }

    fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, WriteHint>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the hints from one event; true when it is worth a scan.
    fn note(&self, event: &notify::Event) -> bool {
        if event.need_rescan() {
            self.clear(); // events were lost: no evidence is trustworthy
            return true;
        }
        let manifest = |i: usize| {
            event.paths.get(i).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_manifest_name)
            })
        };
        match event.kind {
            // Our own reads open and close files: not a change.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                if let Some(p) = manifest(0) {
                    self.set(p, WriteHint::Closed);
                }
                true
            }
            EventKind::Access(_) => false,
            EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                if let Some(p) = manifest(0) {
                    self.set(p, WriteHint::Writing);
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                if let Some(p) = manifest(0) {
                    self.set(p, WriteHint::MovedIn);
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let Some(p) = event.paths.first() {
                    self.forget(p);
                }
                if let Some(p) = manifest(1) {
                    self.set(p, WriteHint::MovedIn);
                }
                true
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                if let Some(p) = event.paths.first() {
                    self.forget(p);
                }
                true
            }
            _ => true,
        }
    }
}

/// What the watcher asks the kernel for: every change, and a writer closing a file, but not
/// opens or read-only closes. Those carry no news (the scan's own reads make them), and a
/// scan of a large directory would queue one per file, each waking the watcher's thread.
const EVENTS: EventKindMask = EventKindMask::CORE.union(EventKindMask::ACCESS_CLOSE);

/// The watcher of one manifest directory, set up again whenever the directory changed
/// identity (removed and restored, or a symlink swapped).
pub struct Watch {
    root: PathBuf,
    hints: Hints,
    wake: mpsc::Sender<()>,
    watcher: Option<RecommendedWatcher>,
    /// Identity of the directory the watcher watches.
    watched: Option<FileId>,
    /// The last failure to watch, logged once.
    failed: Option<String>,
    /// Events the watchers delivered, of every kind.
    events: Counter,
}

impl Watch {
    /// A watch of `root` that records into `hints`, wakes `wake` and counts every event
    /// in `events`; nothing is watched until [`Watch::ensure`].
    pub fn new(root: PathBuf, hints: Hints, wake: mpsc::Sender<()>, events: Counter) -> Self {
        Watch {
            root,
            hints,
            wake,
            watcher: None,
            watched: None,
            failed: None,
            events,
        }
    }

    /// True while events arrive for the directory as it is now.
    pub fn active(&self) -> bool {
        self.watcher.is_some()
    }

    /// Watches the directory anew if it is not watched, or is not the one watched (blocking:
    /// walks the tree to watch every subdirectory).
    pub fn ensure(&mut self) {
        let Ok(id) = std::fs::metadata(&self.root).map(|m| FileId::of(&m)) else {
            if self.watcher.take().is_some() {
                tracing::warn!(dir = %self.root.display(), "the manifest directory is gone; its last good content stays served; watching for it to come back");
            }
            self.watched = None;
            return;
        };
        if self.watcher.is_some() && self.watched == Some(id) {
            return;
        }
        self.watcher = None;
        self.hints.clear();
        let (hints, wake, events) = (self.hints.clone(), self.wake.clone(), self.events.clone());
        let handler = move |res: notify::Result<notify::Event>| {
            events.inc();
            // A full channel already holds a wake-up; dropping this one loses nothing.
            if res.is_ok_and(|e| hints.note(&e)) {
                let _ = wake.try_send(());
            }
        };
        let watcher =
            RecommendedWatcher::new(handler, notify::Config::default().with_event_kinds(EVENTS))
                .and_then(|mut w| w.watch(&self.root, RecursiveMode::Recursive).map(|_| w));
        match watcher {
            Ok(w) => {
                tracing::info!(dir = %self.root.display(), "watching the manifest directory");
                self.watcher = Some(w);
                self.watched = Some(id);
                self.failed = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.failed.as_ref() != Some(&e) {
                    tracing::error!(dir = %self.root.display(), error = %e, "cannot watch the manifest directory; rescanning it every 5 s instead");
                }
                self.failed = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reading_the_directory_is_no_event_and_writing_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = |i: usize| dir.path().join(format!("svc{i}.yaml"));
        for i in 0..50 {
            std::fs::write(file(i), "a: 1\n").unwrap();
        }
        let (wake, _woken) = mpsc::channel(1);
        let events = Counter::default();
        let mut watch = Watch::new(dir.path().into(), Hints::default(), wake, events.clone());
        watch.ensure();
        assert!(watch.active());
        // What a scan does to every file: open, read, close.
        for i in 0..50 {
            std::fs::read(file(i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(events.get(), 0, "the source's own reads were reported");
        std::fs::write(file(0), "a: 2\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while events.get() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(events.get() > 0, "a write was not reported");
    }
}
