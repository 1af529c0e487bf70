//! Received bytes kept as the HTTP/2 DATA chunks they came in, read in place as one buffer.
//! A simulated proxy's response (megabytes on a large catalog) is decoded straight from its
//! chunks: no copy into a buffer of its own size (a fresh multi-megabyte allocation, and its
//! page faults, per response per proxy), and a resource inside one chunk is a slice of it.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in arrival order, as the chunks they came in (none of them empty).
#[derive(Clone, Debug, Default)]
pub(super) struct Chunks {
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    /// Appends `chunk`.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.parts.push_back(chunk);
        }
    }

    /// The first `N` bytes, if that many are held; nothing is consumed.
    pub fn peek<const N: usize>(&self) -> Option<[u8; N]> {
        if self.remaining < N {
            return None;
        }
        let mut out = [0u8; N];
        let mut filled = 0;
        for part in &self.parts {
            let take = (N - filled).min(part.len());
            out[filled..filled + take].copy_from_slice(&part[..take]);
            filled += take;
            if filled == N {
                break;
            }
        }
        Some(out)
    }

    /// Takes the first `len` bytes as chunks of their own (slices of the held ones). The
    /// queue that held a large message leaves with it: what stays is in a queue of its own
    /// size, so a proxy keeps no room for its largest response's chunks between responses.
    ///
    /// # Panics
    /// When fewer than `len` bytes are held.
    pub fn split_to(&mut self, len: usize) -> Chunks {
        assert!(len <= self.remaining, "split past the end of the chunks");
        let (mut whole, mut taken) = (0, 0);
        while taken < len && taken + self.parts[whole].len() <= len {
            taken += self.parts[whole].len();
            whole += 1;
        }
        let mut parts = std::mem::take(&mut self.parts);
        self.parts = parts.split_off(whole);
        if taken < len {
            let front = self.parts.front_mut().expect("counted bytes are held");
            parts.push_back(front.split_to(len - taken));
        }
        self.remaining -= len;
        Chunks {
            parts,
            remaining: len,
        }
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the chunks");
        self.remaining -= cnt;
        while cnt > 0 {
            let front = self.parts.front_mut().expect("counted bytes are held");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    /// A slice of the first chunk when the bytes are all in it (the usual case: a resource
    /// is far smaller than a chunk); a copy only of what straddles chunks.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "copy past the end of the chunks");
        if let Some(front) = self.parts.front_mut() {
            if len < front.len() {
                self.remaining -= len;
                return front.split_to(len);
            }
            if len == front.len() {
                self.remaining -= len;
                return self.parts.pop_front().expect("just looked at it");
            }
        }
        let mut out = BytesMut::with_capacity(len);
        out.put(self.take(len));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let mut c = Chunks::default();
        for p in parts {
            c.push(Bytes::from_static(p));
        }
        c
    }

    #[test]
    fn bytes_across_chunks_read_as_one_buffer() {
        let mut c = chunks(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(c.remaining(), 6);
        assert_eq!(c.peek::<4>(), Some(*b"abcd"));
        assert_eq!(c.peek::<7>(), None, "only six bytes are held");
        let mut head = c.split_to(3);
        assert_eq!(head.remaining(), 3);
        assert_eq!(head.chunk(), b"ab");
        assert_eq!(head.copy_to_bytes(3), Bytes::from_static(b"abc"));
        assert_eq!(c.remaining(), 3);
        assert_eq!(c.chunk(), b"de", "the split chunk's rest stays in front");
        c.advance(1);
        assert_eq!(
            c.copy_to_bytes(2),
            Bytes::from_static(b"ef"),
            "copied across chunks"
        );
        assert!(!c.has_remaining());
        assert_eq!(c.chunk(), b"");
    }

    #[test]
    fn what_stays_after_a_split_is_held_in_a_queue_of_its_size() {
        let mut c = Chunks::default();
        for _ in 0..1000 {
            c.push(Bytes::from_static(b"0123456789"));
        }
        let message = c.split_to(9_995);
        assert_eq!(message.remaining(), 9_995);
        assert_eq!(c.remaining(), 5);
        assert_eq!(c.chunk(), b"56789");
        assert!(c.parts.capacity() < 16, "{}", c.parts.capacity());
        let rest = c.split_to(5);
        assert_eq!((rest.remaining(), c.remaining()), (5, 0));
        assert!(c.split_to(0).parts.is_empty());
    }

    #[test]
    fn a_slice_inside_one_chunk_is_not_copied() {
        let data = Bytes::from(vec![7u8; 64]);
        let mut c = Chunks::default();
        c.push(data.clone());
        c.advance(8);
        let slice = c.copy_to_bytes(16);
        assert_eq!(
            slice.as_ptr(),
            data[8..].as_ptr(),
            "a slice of the held chunk"
        );
        assert_eq!(c.remaining(), 40);
    }

    #[test]
    fn a_message_decodes_straight_from_its_chunks() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use envoy_types::pb::google::protobuf::Any;
        use prost::Message;
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "n".into(),
            resources: (0..50)
                .map(|i| Any {
                    type_url: "t".into(),
                    value: vec![i as u8; 100],
                })
                .collect(),
            ..Default::default()
        };
        let wire = Bytes::from(response.encode_to_vec());
        let mut c = Chunks::default();
        for piece in wire.chunks(333) {
            c.push(wire.slice_ref(piece));
        }
        assert_eq!(DiscoveryResponse::decode(c).unwrap(), response);
    }
}
