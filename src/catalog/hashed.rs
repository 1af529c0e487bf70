//! Objects stored with a hash of their content, computed once when they enter the catalog.
//!
//! Snapshot building tells which services changed by comparing these hashes with the last
//! build's, so a build hashes nothing but a few `u64`s per service, and an object that did
//! not change is never hashed again.

use std::hash::{Hash, Hasher};
use std::ops::Deref;

use xxhash_rust::xxh3::Xxh3Default;

/// An object and a 64-bit hash of its content.
#[derive(Clone, Debug)]
pub struct Hashed<T> {
    object: T,
    hash: u64,
}

impl<T: Hash> Hashed<T> {
    /// Hashes `object` once.
    pub fn new(object: T) -> Self {
        let hash = content_hash(&object);
        Hashed { object, hash }
    }
}

impl<T> Hashed<T> {
    /// The hash of the object's content (equal objects have equal hashes).
    pub fn content_hash(&self) -> u64 {
        self.hash
    }

    /// The object.
    pub fn object(&self) -> &T {
        &self.object
    }
}

impl<T> Deref for Hashed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.object
    }
}

/// Different hashes settle inequality without comparing the objects.
impl<T: PartialEq> PartialEq for Hashed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.object == other.object
    }
}

impl<T: Eq> Eq for Hashed<T> {}

/// A hash of what `feed` writes. The hashes are only compared within this process, so the
/// hasher is chosen for speed (SipHash's flooding resistance buys nothing here).
pub fn hash_of(feed: impl FnOnce(&mut Xxh3Default)) -> u64 {
    let mut hasher = Xxh3Default::new();
    feed(&mut hasher);
    hasher.finish()
}

/// The hash of `value`'s content.
pub fn content_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    hash_of(|h| value.hash(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_equal_hash_and_equality_checks_the_objects() {
        let a = Hashed::new(vec!["x".to_string()]);
        let b = Hashed::new(vec!["x".to_string()]);
        let c = Hashed::new(vec!["y".to_string()]);
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a, b);
        assert_ne!(a.content_hash(), c.content_hash());
        assert_ne!(a, c);
        // Same hash, different object (a forged collision) is still unequal.
        let forged = Hashed {
            object: vec!["y".to_string()],
            hash: a.content_hash(),
        };
        assert_ne!(a, forged);
        assert_eq!(a.len(), 1, "derefs to the object");
    }
}
