//! Rate limits for log lines that clients can trigger (refused streams, NACKs).
//!
//! Each subject (a node, a reason and node) is logged at most once per interval, remembered
//! by a 64-bit hash (fixed memory per subject, whatever the client sent), and all subjects
//! together get a budget of lines per interval, so a client cycling through subjects cannot
//! flood the log either. Lines held back by the budget are counted and the count is reported
//! with the next line logged. Metrics, not logs, count every event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use xxhash_rust::xxh3::Xxh3;

/// Subjects remembered before the oldest are forgotten.
const MAX_SUBJECTS: usize = 10_000;

/// Decides which client-triggered lines are logged.
#[derive(Debug)]
pub struct LogLimiter {
    /// When each subject (by hash) was last logged.
    last: DashMap<u64, Instant>,
    interval: Duration,
    lines_per_interval: u32,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    lines: u32,
    /// Lines held back by the budget since the last line logged.
    held_back: u64,
}

impl LogLimiter {
    /// Logs each subject at most once per `interval`, and at most `lines_per_interval` lines
    /// in all per interval.
    pub fn new(interval: Duration, lines_per_interval: u32) -> Self {
        LogLimiter {
            last: DashMap::new(),
            interval,
            lines_per_interval,
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether to log a line about the subject `parts` now: `Some(n)` with the number of
    /// lines held back by the budget since the last line logged, `None` to skip it.
    pub fn allow(&self, parts: &[&[u8]]) -> Option<u64> {
        self.allow_at(parts, Instant::now())
    }

    /// [`LogLimiter::allow`] at `now`.
    pub fn allow_at(&self, parts: &[&[u8]], now: Instant) -> Option<u64> {
        let key = subject(parts);
        if let Some(at) = self.last.get(&key) {
            if now.saturating_duration_since(*at) < self.interval {
                return None;
            }
        }
        if self.last.len() >= MAX_SUBJECTS {
            let interval = self.interval;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < interval);
            if self.last.len() >= MAX_SUBJECTS {
                self.last.clear();
            }
        }
        self.last.insert(key, now);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let expired = window
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.interval);
        if expired {
            window.started = Some(now);
            window.lines = 0;
        }
        if window.lines >= self.lines_per_interval {
            window.held_back += 1;
            return None;
        }
        window.lines += 1;
        Some(std::mem::take(&mut window.held_back))
    }

    /// Subjects remembered now (for tests).
    pub fn subjects(&self) -> usize {
        self.last.len()
    }
}

fn subject(parts: &[&[u8]]) -> u64 {
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest()
}

/// Captures what `tracing` logs on this thread while a closure runs (unit tests).
#[cfg(test)]
pub(crate) fn captured(run: impl FnOnce()) -> String {
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_logged_once_per_interval() {
        let log = LogLimiter::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert_eq!(log.allow_at(&[b"n1"], t0), Some(0));
        assert_eq!(log.allow_at(&[b"n1"], t0 + Duration::from_secs(59)), None);
        assert_eq!(log.allow_at(&[b"n2"], t0), Some(0));
        assert_eq!(
            log.allow_at(&[b"n1"], t0 + Duration::from_secs(60)),
            Some(0)
        );
        // Parts are delimited: ("ab", "c") is not ("a", "bc").
        assert!(log.allow_at(&[b"ab", b"c"], t0).is_some());
        assert!(log.allow_at(&[b"a", b"bc"], t0).is_some());
    }

    #[test]
    fn all_subjects_share_a_budget_and_memory_stays_bounded() {
        let log = LogLimiter::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let logged = (0..50_000u32)
            .filter(|i| log.allow_at(&[&i.to_le_bytes()], t0).is_some())
            .count();
        assert_eq!(logged, 3, "the budget holds across distinct subjects");
        assert!(log.subjects() <= MAX_SUBJECTS);
        let next = log.allow_at(&[b"late"], t0 + Duration::from_secs(60));
        assert_eq!(
            next,
            Some(50_000 - 3),
            "the next line says how many were held back"
        );
    }
}
