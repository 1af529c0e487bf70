//! The directory source's task: scans on the blocking pool, after file events, when a
//! pending change is due, periodically, and while the directory is gone.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::watch::{Hints, Watch};
use super::{DirMetrics, DirOptions, DirSource, SETTLE};
use crate::catalog::{content_hash, CatalogEvent};
use crate::readiness::ReadyGuard;
use crate::source::{SourceError, SourceStatus};

/// How often to look for a manifest directory that is gone.
const MISSING_DIR_RETRY: Duration = Duration::from_secs(1);

/// How often to scan when the directory cannot be watched.
const UNWATCHED_POLL: Duration = Duration::from_secs(5);

/// Runs the source until `shutdown`: an initial scan, then a scan after every change, when
/// a change is due, every `rescan_interval`, and while the directory is gone. Scans run on
/// the blocking pool, never on the runtime's workers. `ready` is dropped once the first
/// complete scan is queued.
pub async fn run(
    root: PathBuf,
    options: DirOptions,
    events: mpsc::Sender<CatalogEvent>,
    status: SourceStatus,
    metrics: DirMetrics,
    shutdown: CancellationToken,
    ready: ReadyGuard,
) {
    let mut ready = Some(ready);
    // File events name paths under the directory as the watcher made it absolute; the
    // source must name them the same way for the events' evidence to apply.
    let root = absolute(root);
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let hints = Hints::default();
    let mut watch = Watch::new(
        root.clone(),
        hints.clone(),
        wake_tx,
        metrics.file_events.clone(),
    );
    let mut source = DirSource::new(root, &options.revision, options.max_file_bytes);
    // What was sent last, as the content hash of its objects (a copy of 20,000 objects
    // costs more than hashing them, and the catalog goes by content hashes anyway).
    let mut last_sent: Option<u64> = None;
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
        let sending = content_hash(&scan.objects);
        if (scan.complete || last_sent.is_some()) && last_sent != Some(sending) {
            let first = last_sent.is_none();
            last_sent = Some(sending);
            if events
                .send(CatalogEvent::Reset(scan.objects))
                .await
                .is_err()
            {
                return;
            }
            if first {
                // Queued above: the publisher finds it when it sees the guard gone.
                if let Some(ready) = ready.take() {
                    ready.done();
                }
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

/// `root` joined to the working directory when relative, as the watcher does.
fn absolute(root: PathBuf) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) if root.is_relative() => cwd.join(root),
        _ => root,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_relative_directory_is_named_as_the_watcher_names_it() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(super::absolute("mesh".into()), cwd.join("mesh"));
        assert_eq!(super::absolute("/m".into()), std::path::PathBuf::from("/m"));
    }
}
