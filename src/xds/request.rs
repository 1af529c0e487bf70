//! The request side of an ADS stream: gRPC-framed `DiscoveryRequest`s out of the HTTP/2 body,
//! within a per-message limit and a server-wide budget for partly received messages.
//!
//! A message that arrives whole in one chunk (nearly every request) is decoded straight from
//! that chunk: no copy and no budget. Only a message split across chunks is assembled in a
//! buffer of its own, and that buffer's capacity is charged to the [`RequestBudget`] (shared
//! by every stream) *before* it is allocated (while it grows, the old and the new buffer
//! both); a stream that finds the budget full ends with `RESOURCE_EXHAUSTED`, after a
//! bounded wait for room if the revision gate let it in. A stream's first message has a much lower limit than
//! the rest: it arrives before the revision gate, from anyone, and a real first request (a
//! node and a first subscription) is a few KiB. So a client that sends a large length prefix
//! and most of the body, then stalls, pins at most the first-request limit per stream and the
//! budget in all.

mod message;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tonic::Status;

pub use message::{Malformed, Request};

/// Bytes before every gRPC message: compressed flag and big-endian length.
const PREFIX: usize = 5;

/// Smallest buffer allocated for a message split across chunks (an HTTP/2 DATA frame is at
/// most 16 KiB by default, so a split message usually needs this much at once).
const MIN_ASSEMBLY: usize = 16 * 1024;

/// Bytes of partly received requests, across all streams: a semaphore of free bytes, whose
/// use is also the `revplane_xds_request_buffer_bytes` gauge.
///
/// A stream past the revision gate that finds it full may wait for room
/// ([`RequestBudget::wait_for`]) while what all waiting streams want is within the budget
/// too, for at most [`BUDGET_WAIT`]; it does not read its body meanwhile, so HTTP/2 flow
/// control holds its client back (what a waiting stream's client can send unread is bounded
/// by the connection's window, 1 MiB). Past either bound, and at once for a stream's first
/// request (anyone's, before the gate), it is refused as before: a connect storm of large
/// requests (thousands of proxies sending 1 MB EDS subscriptions together) is slowed down
/// rather than turned away, and a flood of stalled first requests still pins no more than
/// the budget.
#[derive(Clone, Debug)]
pub struct RequestBudget {
    limit: u64,
    room: Arc<Semaphore>,
    /// Bytes streams are waiting for now.
    waiting: Arc<AtomicU64>,
    in_use: Gauge<u64, AtomicU64>,
}

/// Longest a stream waits for room in a full budget before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(20);

impl RequestBudget {
    /// A budget of `limit` bytes, counted in `in_use`.
    pub fn new(limit: usize, in_use: Gauge<u64, AtomicU64>) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        RequestBudget {
            limit: limit as u64,
            room: Arc::new(Semaphore::new(limit)),
            waiting: Arc::new(AtomicU64::new(0)),
            in_use,
        }
    }

    /// Takes `bytes` from the budget, or says it is full.
    pub fn charge(&self, bytes: usize) -> Result<Charge, RequestError> {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.grow(bytes)?;
        Ok(charge)
    }

    /// Waits until `bytes` are free and takes them, unless more than the budget is being
    /// waited for already or the wait passes [`BUDGET_WAIT`] (then `None`: refuse the stream).
    pub async fn wait_for(&self, bytes: u64) -> Option<Charge> {
        let permits = u32::try_from(bytes).ok().filter(|_| bytes <= self.limit)?;
        let limit = self.limit;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                w.checked_add(bytes).filter(|&total| total <= limit)
            })
            .ok()?;
        // Counted as waited for until this returns or is dropped (its stream went away).
        let queued = Queued {
            waiting: &self.waiting,
            bytes,
        };
        let waited = tokio::time::timeout(BUDGET_WAIT, self.room.acquire_many(permits)).await;
        drop(queued);
        waited.ok()?.ok()?.forget();
        self.in_use.inc_by(bytes);
        Some(Charge {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> u64 {
        self.in_use.get()
    }

    fn try_take(&self, bytes: u64) -> bool {
        let Ok(permits) = u32::try_from(bytes) else {
            return false;
        };
        match self.room.try_acquire_many(permits) {
            Ok(taken) => {
                taken.forget();
                self.in_use.inc_by(bytes);
                true
            }
            Err(_) => false,
        }
    }

    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.room.add_permits(bytes as usize);
            self.in_use.dec_by(bytes);
        }
    }
}

/// Bytes a stream waits for, counted in [`RequestBudget::waiting`] while it lives.
struct Queued<'a> {
    waiting: &'a AtomicU64,
    bytes: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Bytes taken from a [`RequestBudget`]; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: RequestBudget,
    bytes: u64,
}

impl Charge {
    /// Takes `bytes` more.
    pub fn grow(&mut self, bytes: usize) -> Result<(), RequestError> {
        let bytes = bytes as u64;
        if !self.budget.try_take(bytes) {
            return Err(RequestError::BufferFull {
                budget: self.budget.limit,
                wanted: bytes,
            });
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Gives `bytes` back.
    fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.budget.give_back(bytes);
        self.bytes -= bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Why a stream's requests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The message is gRPC-compressed.
    #[error("compressed DiscoveryRequest messages are not supported; disable gRPC compression")]
    Compressed,
    /// The stream's first message is over the first-request limit.
    #[error(
        "the first DiscoveryRequest of a stream is {len} bytes, over the limit of {limit} bytes \
         for first requests (a node and a first subscription fit in a few KiB); raise \
         --max-first-request-bytes if real proxies send more"
    )]
    FirstTooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A later message is over the request limit.
    #[error(
        "DiscoveryRequest of {len} bytes is over the limit of {limit} bytes (--max-request-bytes)"
    )]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The server-wide budget for partly received requests is used up.
    #[error(
        "the server's buffer for partly received xDS requests ({budget} bytes across all \
         streams, --request-buffer-bytes) is full; retry with backoff"
    )]
    BufferFull {
        /// The budget.
        budget: u64,
        /// Bytes the stream needed when it found the budget full.
        wanted: u64,
    },
    /// The message is not a `DiscoveryRequest`.
    #[error("malformed DiscoveryRequest: {0}")]
    Malformed(#[from] Malformed),
    /// The body ended inside a message.
    #[error("the request stream ended inside a DiscoveryRequest")]
    Truncated,
    /// The HTTP/2 body failed (a reset, a broken connection).
    #[error("{}", .0.message())]
    Body(Status),
}

impl RequestError {
    /// The status the stream ends with.
    pub fn to_status(&self) -> Status {
        match self {
            RequestError::Compressed => Status::unimplemented(self.to_string()),
            RequestError::FirstTooLarge { .. } | RequestError::TooLarge { .. } => {
                Status::out_of_range(self.to_string())
            }
            RequestError::BufferFull { .. } => Status::resource_exhausted(self.to_string()),
            RequestError::Malformed(_) | RequestError::Truncated => {
                Status::invalid_argument(self.to_string())
            }
            RequestError::Body(status) => match status.code() {
                // Decoding failures surface as INTERNAL; to the client they are a bad request.
                tonic::Code::Internal | tonic::Code::Unknown => Status::invalid_argument(format!(
                    "malformed DiscoveryRequest: {}",
                    status.message()
                )),
                _ => status.clone(),
            },
        }
    }

    /// The `reason` label of `revplane_xds_rejected_streams_total`, when the server refused
    /// the request (not when the client went away).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            RequestError::FirstTooLarge { .. } | RequestError::TooLarge { .. } => {
                Some("request_too_large")
            }
            RequestError::BufferFull { .. } => Some("request_buffer_full"),
            RequestError::Compressed | RequestError::Malformed(_) | RequestError::Truncated => {
                Some("malformed_request")
            }
            RequestError::Body(_) => None,
        }
    }
}

/// Request limits shared by every stream of a server.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Largest first message of a stream.
    pub first: usize,
    /// Largest later message.
    pub max: usize,
    /// Server-wide budget for partly received messages.
    pub budget: RequestBudget,
}

impl RequestLimits {
    /// A decoder for one stream.
    pub fn decoder(&self) -> RequestDecoder {
        RequestDecoder {
            head: Bytes::new(),
            partial: BytesMut::new(),
            charge: None,
            spare: None,
            limit: self.first.min(self.max),
            max: self.max,
            first: true,
            budget: self.budget.clone(),
        }
    }
}

/// Splits one stream's request body into `DiscoveryRequest`s, each read in place
/// ([`Request`]).
#[derive(Debug)]
pub struct RequestDecoder {
    /// The unread rest of the latest chunk (shared with the HTTP/2 layer, not copied).
    head: Bytes,
    /// A message begun in an earlier chunk (empty and unallocated between messages).
    partial: BytesMut,
    /// Budget held for `partial`'s capacity.
    charge: Option<Charge>,
    /// Budget a wait got for the growth that found the budget full, used by the retry.
    spare: Option<Charge>,
    /// Limit of the next message.
    limit: usize,
    max: usize,
    first: bool,
    budget: RequestBudget,
}

impl RequestDecoder {
    /// Adds a chunk of the body; call [`Self::next_request`] until it returns `None` first.
    pub fn push(&mut self, chunk: Bytes) {
        if self.head.is_empty() {
            self.head = chunk;
        } else {
            // Not how the stream uses it; kept correct anyway.
            let mut joined = BytesMut::with_capacity(self.head.len() + chunk.len());
            joined.extend_from_slice(&self.head);
            joined.extend_from_slice(&chunk);
            self.head = joined.freeze();
        }
    }

    /// The next complete request, if one is buffered. After an error the decoder holds
    /// nothing and the stream must end, except [`RequestError::BufferFull`]: then the decoder
    /// is as it was before the growth that did not fit, and the stream may
    /// [`Self::wait_for_room`] and ask again.
    pub fn next_request(&mut self) -> Result<Option<Request>, RequestError> {
        let message = match self.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
            Err(e @ RequestError::BufferFull { .. }) => return Err(e),
            Err(e) => {
                self.clear();
                return Err(e);
            }
        };
        self.limit = self.max;
        self.first = false;
        Request::parse(message).map(Some).map_err(|e| {
            self.clear();
            RequestError::Malformed(e)
        })
    }

    /// After [`RequestError::BufferFull`] wanting `wanted` bytes: waits for them (see
    /// [`RequestBudget::wait_for`]) and keeps them for the next [`Self::next_request`].
    /// `false` when the stream must be refused instead, at once for a first request: it comes
    /// from anyone, before the revision gate, and only a proxy the gate let in may wait.
    pub async fn wait_for_room(&mut self, wanted: u64) -> bool {
        // Only a later request waits, and only for its first (whole-size) charge, so it
        // holds nothing meanwhile: no stream waits on budget another waiting stream holds.
        if !self.first && self.charge.is_none() {
            self.spare = self.budget.wait_for(wanted).await;
        }
        if self.spare.is_none() {
            // Refused: give back what the stream held at once, not when it is dropped.
            self.clear();
            return false;
        }
        true
    }

    /// Checks the body ended between messages.
    pub fn finish(&self) -> Result<(), RequestError> {
        if self.partial.is_empty() && self.head.is_empty() {
            Ok(())
        } else {
            Err(RequestError::Truncated)
        }
    }

    fn next_message(&mut self) -> Result<Option<Bytes>, RequestError> {
        if self.partial.is_empty() {
            // A whole message at the front of the latest chunk: a slice of it, no copy.
            if self.head.len() >= PREFIX {
                let len = self.check_prefix(&self.head[..PREFIX])?;
                if self.head.len() >= PREFIX + len {
                    let mut message = self.head.split_to(PREFIX + len);
                    message.advance(PREFIX);
                    self.release_head();
                    return Ok(Some(message));
                }
            }
            if self.head.is_empty() {
                self.release_head();
                return Ok(None);
            }
        }
        // A message across chunks: assemble it, prefix first, within the budget.
        loop {
            let total = match self.declared() {
                Some(len) => Some(PREFIX + len),
                // The prefix is at the front of the chunk, checked above.
                None if self.partial.is_empty() && self.head.len() >= PREFIX => {
                    Some(PREFIX + length(&self.head[..PREFIX]))
                }
                None => None,
            };
            let want = total.unwrap_or(PREFIX) - self.partial.len();
            let take = want.min(self.head.len());
            if take > 0 {
                // Room first: when the budget is full nothing has moved yet, so the same call
                // can be made again after a wait.
                self.reserve(take, total)?;
                let piece = self.head.split_to(take);
                self.partial.extend_from_slice(&piece);
            }
            self.release_head();
            let Some(len) = self.declared() else {
                return Ok(None);
            };
            if total.is_none() {
                // The prefix just came together from pieces.
                self.check_prefix(&self.partial[..PREFIX])?;
            }
            if self.partial.len() < PREFIX + len {
                if self.head.is_empty() {
                    return Ok(None);
                }
                continue;
            }
            let mut message = std::mem::take(&mut self.partial).freeze();
            message.advance(PREFIX);
            self.charge = None;
            return Ok(Some(message));
        }
    }

    /// The length the assembled prefix declares, once it is complete.
    fn declared(&self) -> Option<usize> {
        (self.partial.len() >= PREFIX).then(|| length(&self.partial[..PREFIX]))
    }

    fn check_prefix(&self, prefix: &[u8]) -> Result<usize, RequestError> {
        if prefix[0] != 0 {
            return Err(RequestError::Compressed);
        }
        let len = length(prefix);
        if len > self.limit {
            let limit = self.limit;
            return Err(if self.first {
                RequestError::FirstTooLarge { len, limit }
            } else {
                RequestError::TooLarge { len, limit }
            });
        }
        Ok(len)
    }

    /// Room for `additional` more bytes in `partial`, charged before it is allocated.
    ///
    /// A later request (its stream passed the revision gate) is given its whole declared size
    /// at once: one allocation and no copies (an EDS ACK naming 1,000 assignments is ~60 KB,
    /// four DATA frames), and a stream that has to wait for budget waits before it holds any
    /// (waiting while holding part of the budget, streams could wait for each other until
    /// the timeout). A first request, from anyone, grows by doubling as its bytes arrive,
    /// never past its `total` once known, so memory follows what the client really sent.
    fn reserve(&mut self, additional: usize, total: Option<usize>) -> Result<(), RequestError> {
        let needed = self.partial.len() + additional;
        if needed <= self.partial.capacity() {
            return Ok(());
        }
        let target = allocation_size(
            match total {
                None => PREFIX,
                // A later request: its whole size at once (see `reserve`).
                Some(total) if !self.first => total,
                Some(total) => (self.partial.capacity() * 2).max(MIN_ASSEMBLY).min(total),
            }
            .max(needed),
        );
        // While the content moves, the old and the new buffer both exist: both are charged.
        let spare = self.spare.take().filter(|s| s.bytes >= target as u64);
        let charge = match (&mut self.charge, spare) {
            // What a wait got for this (first) charge; a wait happens only while none is held.
            (None, Some(spare)) => self.charge.insert(spare),
            (Some(charge), _) => {
                charge.grow(target)?;
                charge
            }
            (None, None) => self.charge.insert(self.budget.charge(target)?),
        };
        let old = charge.bytes - target as u64;
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.partial);
        self.partial = grown;
        charge.shrink(old);
        Ok(())
    }

    /// Lets go of the HTTP/2 layer's buffer once the chunk is used up.
    fn release_head(&mut self) {
        if self.head.is_empty() {
            self.head = Bytes::new();
        }
    }

    fn clear(&mut self) {
        self.head = Bytes::new();
        self.partial = BytesMut::new();
        self.charge = None;
        self.spare = None;
    }
}

/// What an allocation of `n` bytes really takes from an allocator with four size classes per
/// doubling above 4 KiB (jemalloc, the binary's allocator; others are as coarse or finer), so
/// the budget counts memory, not requested bytes: 65,477 bytes take 80 KiB.
fn allocation_size(n: usize) -> usize {
    if n <= 4096 {
        return n;
    }
    let step = ((n - 1).next_power_of_two() / 8).max(1);
    n.div_ceil(step) * step
}

fn length(prefix: &[u8]) -> usize {
    u32::from_be_bytes(prefix[1..PREFIX].try_into().expect("4 bytes")) as usize
}

#[cfg(test)]
mod tests;
