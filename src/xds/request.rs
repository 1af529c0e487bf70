//! The request side of an ADS stream: gRPC-framed `DiscoveryRequest`s out of the HTTP/2 body,
//! within a per-message limit and a server-wide budget for partly received messages.
//!
//! A message that arrives whole in one chunk (nearly every request) is decoded straight from
//! that chunk: no copy and no budget. Only a message split across chunks is assembled in a
//! buffer of its own, and that buffer's capacity is charged to the [`RequestBudget`] (one
//! atomic counter shared by every stream) *before* it is allocated (while it grows, the old
//! and the new buffer both); a stream that cannot get budget ends with `RESOURCE_EXHAUSTED`. A stream's first message has a much lower limit than
//! the rest: it arrives before the revision gate, from anyone, and a real first request (a
//! node and a first subscription) is a few KiB. So a client that sends a large length prefix
//! and most of the body, then stalls, pins at most the first-request limit per stream and the
//! budget in all.

mod message;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::gauge::Gauge;
use tonic::Status;

pub use message::{Malformed, Request};

/// Bytes before every gRPC message: compressed flag and big-endian length.
const PREFIX: usize = 5;

/// Smallest buffer allocated for a message split across chunks (an HTTP/2 DATA frame is at
/// most 16 KiB by default, so a split message usually needs this much at once).
const MIN_ASSEMBLY: usize = 16 * 1024;

/// A later request up to this size is assembled in one buffer of its full size, taken from
/// the budget at once (an EDS ACK naming 1,000 assignments is ~60 KB, four DATA frames: one
/// allocation instead of three and no copies between them). Larger ones, and every first
/// request, grow by doubling as their bytes arrive, so memory follows what the client sent.
const WHOLE_AT_ONCE: usize = 256 * 1024;

/// Bytes of partly received requests, across all streams: an atomic counter that is also the
/// `revplane_xds_request_buffer_bytes` gauge.
#[derive(Clone, Debug)]
pub struct RequestBudget {
    limit: u64,
    in_use: Gauge<u64, AtomicU64>,
}

impl RequestBudget {
    /// A budget of `limit` bytes, counted in `in_use`.
    pub fn new(limit: usize, in_use: Gauge<u64, AtomicU64>) -> Self {
        RequestBudget {
            limit: limit as u64,
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

    /// Bytes taken now.
    pub fn in_use(&self) -> u64 {
        self.in_use.get()
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
        let (limit, bytes) = (self.budget.limit, bytes as u64);
        self.budget
            .in_use
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map_err(|_| RequestError::BufferFull { budget: limit })?;
        self.bytes += bytes;
        Ok(())
    }
}

impl Charge {
    /// Gives `bytes` back.
    fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.budget
            .in_use
            .inner()
            .fetch_sub(bytes, Ordering::AcqRel);
        self.bytes -= bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget
            .in_use
            .inner()
            .fetch_sub(self.bytes, Ordering::AcqRel);
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
    /// nothing and the stream must end.
    pub fn next_request(&mut self) -> Result<Option<Request>, RequestError> {
        let message = match self.next_message() {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(None),
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
                let piece = self.head.split_to(take);
                self.reserve(piece.len(), total)?;
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

    /// Room for `additional` more bytes in `partial`, charged before it is allocated; grows
    /// by doubling, never past the message's `total` size once that is known.
    fn reserve(&mut self, additional: usize, total: Option<usize>) -> Result<(), RequestError> {
        let needed = self.partial.len() + additional;
        if needed <= self.partial.capacity() {
            return Ok(());
        }
        let target = allocation_size(
            match total {
                None => PREFIX,
                Some(total) if !self.first && total <= WHOLE_AT_ONCE => total,
                Some(total) => (self.partial.capacity() * 2).max(MIN_ASSEMBLY).min(total),
            }
            .max(needed),
        );
        // While the content moves, the old and the new buffer both exist: both are charged.
        let charge = match &mut self.charge {
            Some(charge) => {
                charge.grow(target)?;
                charge
            }
            None => self.charge.insert(self.budget.charge(target)?),
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
