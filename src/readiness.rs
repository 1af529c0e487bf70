//! Readiness as drop guards (as ztunnel's `readiness.rs`): every task whose first result the
//! server must have before it publishes anything (one per Kubernetes watch, one per manifest
//! directory) holds a [`ReadyGuard`] and calls [`ReadyGuard::done`] once that result is handed
//! on. The publisher waits until no guard is left, so nobody counts the watches by hand.
//!
//! Only `done` releases a guard. A guard dropped without it (its task returned early, was
//! cancelled at shutdown, or panicked) stays pending: a task that never delivered its first
//! result must never let the server publish, or report ready, with what the others read.
//!
//! A guard is registered synchronously, before the task that holds it is spawned, so the
//! publisher can never see "nothing pending" only because a source has not started yet.
//! Calling `done` after sending the result on a channel orders the two: whoever sees the
//! guard gone finds the result already queued.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

/// The set of tasks the server still waits for; cheap to clone, every clone is the same set.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Pending task names with how many guards of that name are alive.
    pending: Arc<watch::Sender<BTreeMap<String, usize>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            pending: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }
}

impl Readiness {
    /// An empty set: ready until a guard is registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a task the server must wait for; it is done when [`ReadyGuard::done`] is called.
    pub fn block(&self, name: impl Into<String>) -> ReadyGuard {
        let name = name.into();
        self.pending
            .send_modify(|p| *p.entry(name.clone()).or_default() += 1);
        ReadyGuard {
            readiness: self.clone(),
            name,
            done: false,
        }
    }

    /// The names of the tasks still pending, sorted (each once).
    pub fn pending(&self) -> Vec<String> {
        self.pending.borrow().keys().cloned().collect()
    }

    /// Whether no task is pending.
    pub fn is_ready(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    /// Resolves once no task is pending (at once if none is).
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(BTreeMap::is_empty).await;
    }
}

/// Held by a task the server waits for; [`ReadyGuard::done`] marks the task done.
#[derive(Debug)]
#[must_use = "the task counts as done only when `done` is called"]
pub struct ReadyGuard {
    readiness: Readiness,
    name: String,
    done: bool,
}

impl ReadyGuard {
    /// Marks the task done: its first result is handed on.
    pub fn done(mut self) {
        self.done = true;
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        if !self.done {
            // Left pending for good: the server stays unready rather than serve without it.
            tracing::error!(task = %self.name, "ended before its first result (at shutdown, or after the failure logged above); the server stays unready");
            return;
        }
        self.readiness.pending.send_modify(|p| {
            if let Some(n) = p.get_mut(&self.name) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&self.name);
                }
            }
        });
        if self.readiness.is_ready() {
            tracing::debug!(task = %self.name, "the last pending task is done");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn ready_once_every_guard_is_dropped_whatever_the_order() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready(), "nothing registered: ready");
        let a = readiness.block("kube/services");
        let b = readiness.block("kube/services");
        let c = readiness.block("kube/configmaps");
        assert_eq!(readiness.pending(), ["kube/configmaps", "kube/services"]);
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.wait().await }
        });
        a.done();
        assert_eq!(readiness.pending(), ["kube/configmaps", "kube/services"]);
        c.done();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished(), "one guard of kube/services is alive");
        assert_eq!(readiness.pending(), ["kube/services"]);
        b.done();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("ready after the last guard")
            .unwrap();
        assert!(readiness.pending().is_empty());
    }

    #[test]
    fn a_guard_dropped_without_done_stays_pending() {
        let readiness = Readiness::new();
        let early = readiness.block("dir");
        drop(early);
        assert_eq!(readiness.pending(), ["dir"], "a task that returned early");
        let panicked = readiness.block("kube/services");
        let _ = std::thread::spawn(move || {
            let _guard = panicked;
            panic!("a converter panicked");
        })
        .join();
        assert_eq!(readiness.pending(), ["dir", "kube/services"]);
        assert!(!readiness.is_ready());
    }
}
