//! Admission control: a connect storm becomes a queue, never unbounded memory or starvation.
//!
//! New streams are admitted at a steady rate (a token bucket with a burst allowance); a stream
//! that would wait longer than the queue allows is refused with `RESOURCE_EXHAUSTED` and the
//! proxy retries with its own backoff. A stream that stops waiting (its client left) gives
//! its place back, so departed clients do not push the ones behind them towards refusal. At most `push_concurrency` streams have a push in
//! flight: a stream takes a permit once its queue has room, keeps it until the proxy has
//! ACKed or NACKed everything it was sent (or 5 s pass), and holds at most one. So a connect
//! storm or a fan-out never has more than `push_concurrency` responses built and buffered at
//! once, whatever their size, and memory stays bounded.

use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Admission settings.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    /// New streams admitted per second, sustained.
    pub new_streams_per_second: u32,
    /// New streams admitted at once before the rate applies.
    pub burst: u32,
    /// Longest a new stream may wait for admission before it is refused.
    pub max_wait: Duration,
    /// Streams building or queueing a push at the same time.
    pub push_concurrency: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            new_streams_per_second: 2_000,
            burst: 500,
            max_wait: Duration::from_secs(30),
            push_concurrency: 512,
        }
    }
}

/// Why a stream was not admitted.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many new xDS streams: admission would wait {wait:?}, longer than {max_wait:?}; retry with backoff"
)]
pub struct Overloaded {
    wait: Duration,
    max_wait: Duration,
}

impl Overloaded {
    /// The status the refused stream ends with.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(self.to_string())
    }
}

/// The shared admission state of a server.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    /// When the next token is free (the bucket is full when this is `burst` intervals ago).
    next_slot: Mutex<Instant>,
    pushes: Arc<Semaphore>,
}

impl Admission {
    /// Admission with `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            next_slot: Mutex::new(Instant::now()),
            pushes: Arc::new(Semaphore::new(limits.push_concurrency.max(1))),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.limits.new_streams_per_second.max(1)
    }

    /// Waits for this stream's turn, or refuses it when the queue is too long. Dropping the
    /// future before its turn gives the turn back.
    pub async fn admit(&self) -> Result<(), Overloaded> {
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let earliest = now
                .checked_sub(self.interval() * self.limits.burst)
                .unwrap_or(now);
            let slot = (*next).max(earliest);
            let wait = slot.saturating_duration_since(now);
            if wait > self.limits.max_wait {
                return Err(Overloaded {
                    wait,
                    max_wait: self.limits.max_wait,
                });
            }
            *next = slot + self.interval();
            slot
        };
        let turn = Turn {
            admission: self,
            slot,
        };
        tokio::time::sleep_until(slot).await;
        std::mem::forget(turn);
        Ok(())
    }

    /// A stream that held `slot` stopped waiting: the queue behind it moves up by one turn
    /// (the next stream to come takes the last queued turn's place).
    fn give_back(&self, slot: Instant) {
        let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot > Instant::now() {
            *next = next.checked_sub(self.interval()).unwrap_or(*next);
        }
    }

    /// A permit for a push in flight: held by a stream from building its response until the
    /// proxy answered every response it was sent (or [`PUSH_ACK_TIMEOUT`]).
    pub async fn push_permit(&self) -> OwnedSemaphorePermit {
        self.pushes
            .clone()
            .acquire_owned()
            .await
            .expect("the push semaphore is never closed")
    }
}

/// A reserved turn; given back if the waiting stream goes away before it.
struct Turn<'a> {
    admission: &'a Admission,
    slot: Instant,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.admission.give_back(self.slot);
    }
}

/// A stream gives its push permit back after this long even without an ACK, so a proxy that
/// never answers cannot hold up the others.
pub const PUSH_ACK_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_storm_is_admitted_at_the_rate_after_the_burst_and_the_rest_refused() {
        let admission = Admission::new(AdmissionLimits {
            new_streams_per_second: 100,
            burst: 10,
            max_wait: Duration::from_secs(1),
            push_concurrency: 1,
        });
        tokio::time::advance(Duration::from_secs(1)).await; // a full bucket
        let start = Instant::now();
        for _ in 0..10 {
            admission.admit().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is admitted at once"
        );
        for _ in 0..100 {
            admission.admit().await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1010),
            "{took:?}"
        );
        // 200 more at once: about 1 s worth (100) queue up, the rest are refused at once.
        let results = futures::future::join_all((0..200).map(|_| admission.admit())).await;
        let refused = results.iter().filter(|r| r.is_err()).count();
        assert!((99..=101).contains(&refused), "{refused}");
        assert!(
            results[199].as_ref().unwrap_err().to_status().code() == tonic::Code::ResourceExhausted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_that_stop_waiting_give_their_turns_back() {
        let admission = Admission::new(AdmissionLimits {
            new_streams_per_second: 10,
            burst: 1,
            max_wait: Duration::from_secs(1),
            push_concurrency: 1,
        });
        tokio::time::advance(Duration::from_secs(1)).await;
        admission.admit().await.unwrap(); // the burst
                                          // A storm: a second's worth queues up, then every one of them leaves.
        let mut waiting: Vec<_> = (0..10).map(|_| Box::pin(admission.admit())).collect();
        for w in &mut waiting {
            let _ = futures::poll!(w.as_mut()); // takes its turn in the queue
        }
        drop(waiting);
        // The next stream is not pushed behind the departed: admitted at the next turn.
        let start = Instant::now();
        admission.admit().await.expect("admitted, not refused");
        assert!(
            start.elapsed() <= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // And the rate still holds for those that stay.
        let start = Instant::now();
        for _ in 0..10 {
            admission.admit().await.unwrap();
        }
        assert!(
            start.elapsed() >= Duration::from_millis(990),
            "{:?}",
            start.elapsed()
        );
    }
}
