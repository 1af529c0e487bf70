//! Response bodies shared across streams: the concatenated `resources` entries of one set of
//! resources, built once per snapshot.
//!
//! Every stream that sends the same resources of the same snapshot (all wildcard CDS
//! subscribers; all EDS subscribers after one assignment changed) gets a clone of the same
//! `Bytes`, so a push to 10,000 streams copies the resource bytes once, not 10,000 times. The
//! memo is bounded in bytes; a set that does not fit is built for its stream alone.
//!
//! Streams mostly send a shared list (a set's list of all its resources, or a memoized
//! selection): a list seen before finds its body by identity, without hashing its resources'
//! keys (on a 20,000-cluster catalog, 20,000 pointers chased per response).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::selections::Selected;
use super::{Resource, ResourceType};

/// Bytes of bodies one snapshot keeps for sharing.
const BUDGET: usize = 64 * 1024 * 1024;

/// The memo of one snapshot.
#[derive(Debug, Default)]
pub struct ResponseBodies {
    memo: Mutex<Memo>,
}

#[derive(Debug, Default)]
struct Memo {
    by_set: HashMap<u128, Bytes>,
    /// Bodies by the address of the shared list they were built for; the entry holds the
    /// list, so the address cannot be reused while it is here.
    by_list: HashMap<usize, (Selected, Bytes)>,
    bytes: usize,
}

impl ResponseBodies {
    /// The body for `resources` of type `kind`.
    pub fn get(&self, kind: ResourceType, resources: &Selected) -> Bytes {
        match &resources[..] {
            [] => Bytes::new(),
            [one] => one.entry.clone(),
            _ => {
                let list = list_id(resources);
                if let Some((_, body)) = self.lock().by_list.get(&list) {
                    return body.clone();
                }
                let key = set_key(kind, resources);
                let mut memo = self.lock();
                let body = match memo.by_set.get(&key) {
                    Some(body) => body.clone(),
                    None => {
                        let body = concat(resources);
                        if memo.bytes + body.len() > BUDGET {
                            return body;
                        }
                        memo.bytes += body.len();
                        memo.by_set.insert(key, body.clone());
                        body
                    }
                };
                // Only a list something else shares (a set's list of everything, a memoized
                // selection) comes back: one built for this response alone is not kept.
                // Its pointers count against the budget while the memo holds it; another
                // stream may have remembered it since the first look.
                let pinned = std::mem::size_of_val(&resources[..]);
                if Arc::strong_count(resources) > 1 && memo.bytes + pinned <= BUDGET {
                    if let Entry::Vacant(slot) = memo.by_list.entry(list) {
                        slot.insert((resources.clone(), body.clone()));
                        memo.bytes += pinned;
                    }
                }
                body
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bodies held (for tests and debugging).
    pub fn len(&self) -> usize {
        self.lock().by_set.len()
    }

    /// Whether no body is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shared list's identity: its address.
fn list_id(list: &Selected) -> usize {
    Arc::as_ptr(list).cast::<()>() as usize
}

/// Identifies a set by its names and versions, in order: a 128-bit hash of the resources'
/// own 64-bit keys (each a hash of name and version), so two sets differing in one resource
/// collide only if those two keys do (about 2^-64; the set itself is never stored). Hashed
/// in blocks: a set of 20,000 clusters is 160 KB to hash, not 80,000 small pieces (which cost
/// a large cluster's connect storm a third of the server's CPU).
fn set_key(kind: ResourceType, resources: &[Arc<Resource>]) -> u128 {
    const PER_BLOCK: usize = 32;
    let mut hasher = Xxh3::new();
    hasher.update(&[kind as u8]);
    let mut block = [0u8; PER_BLOCK * 8];
    for group in resources.chunks(PER_BLOCK) {
        for (slot, r) in block.chunks_exact_mut(8).zip(group) {
            slot.copy_from_slice(&r.key.to_le_bytes());
        }
        hasher.update(&block[..group.len() * 8]);
    }
    hasher.digest128()
}

fn concat(resources: &[Arc<Resource>]) -> Bytes {
    let mut body = BytesMut::with_capacity(resources.iter().map(|r| r.entry.len()).sum());
    for r in resources {
        body.extend_from_slice(&r.entry);
    }
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    fn resource(name: &str, body: &[u8]) -> Arc<Resource> {
        Arc::new(Resource::new(ResourceType::Cluster, name, body))
    }

    fn list(resources: &[Arc<Resource>]) -> Selected {
        resources.iter().cloned().collect()
    }

    #[test]
    fn the_same_set_shares_one_body_and_decodes_in_order() {
        let bodies = ResponseBodies::default();
        // A shared list (held here and by the memo's caller), as a set's list of all.
        let set = list(&[resource("a", b"1"), resource("b", b"22")]);
        let shared = set.clone();
        let first = bodies.get(ResourceType::Cluster, &set);
        let second = bodies.get(ResourceType::Cluster, &shared);
        assert_eq!(first.as_ptr(), second.as_ptr(), "one allocation, shared");
        assert_eq!(
            bodies.lock().by_list.len(),
            1,
            "the shared list is remembered"
        );
        // An equal set in a list of its own finds the same body by its resources, and its
        // list is not kept: nothing else holds it, so it cannot come back.
        let third = bodies.get(ResourceType::Cluster, &list(&set));
        assert_eq!(first.as_ptr(), third.as_ptr());
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies.lock().by_list.len(), 1);
        let decoded = DiscoveryResponse::decode(first).unwrap();
        let values: Vec<&[u8]> = decoded.resources.iter().map(|a| &a.value[..]).collect();
        assert_eq!(values, [&b"1"[..], &b"22"[..]]);
    }

    #[test]
    fn a_different_set_or_version_is_a_different_body() {
        let bodies = ResponseBodies::default();
        let a = bodies.get(
            ResourceType::Cluster,
            &list(&[resource("a", b"1"), resource("b", b"2")]),
        );
        let b = bodies.get(
            ResourceType::Cluster,
            &list(&[resource("a", b"1"), resource("b", b"3")]),
        );
        let c = bodies.get(
            ResourceType::Cluster,
            &list(&[resource("b", b"2"), resource("a", b"1")]),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(bodies.len(), 3);
    }

    #[test]
    fn one_resource_is_its_own_entry_without_a_copy() {
        let bodies = ResponseBodies::default();
        let r = resource("a", b"1");
        assert_eq!(
            bodies
                .get(ResourceType::Cluster, &list(std::slice::from_ref(&r)))
                .as_ptr(),
            r.entry.as_ptr()
        );
        assert!(bodies.is_empty());
    }
}
