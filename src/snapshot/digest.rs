//! The version of a set of resources, kept up to date as resources come and go.
//!
//! A type's version is a content hash of its (name, version) pairs. It is a combination that
//! does not depend on order — the sum of one 128-bit hash per pair, and the number of pairs —
//! so adding or removing one resource updates it in constant time, and a set built in one go
//! and a set edited one resource at a time get the same version when they hold the same
//! resources. An [`Edit`] changes a set that way: it shares with the set it started from
//! every part of the map it did not touch.

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::{ByName, Resource, Resources};

/// The running combination of a set's (name, version) pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    sum: u128,
    count: u64,
}

impl Digest {
    /// The digest of every resource of `by_name`.
    pub fn of(by_name: &ByName) -> Digest {
        let mut digest = Digest::default();
        by_name.values().for_each(|r| digest.add(r));
        digest
    }

    /// Counts `resource` in.
    pub fn add(&mut self, resource: &Resource) {
        self.sum = self.sum.wrapping_add(pair_hash(resource));
        self.count += 1;
    }

    /// Counts `resource` out (it was counted in before).
    pub fn remove(&mut self, resource: &Resource) {
        self.sum = self.sum.wrapping_sub(pair_hash(resource));
        self.count -= 1;
    }

    /// The version string: `empty` for no resources, else 16 hex digits.
    pub fn version(&self) -> String {
        if self.count == 0 {
            return "empty".to_string();
        }
        let mut bytes = [0u8; 24];
        bytes[..16].copy_from_slice(&self.sum.to_le_bytes());
        bytes[16..].copy_from_slice(&self.count.to_le_bytes());
        format!("{:016x}", xxh3_64(&bytes))
    }
}

/// A set of resources being changed one resource at a time.
#[derive(Clone, Debug, Default)]
pub struct Edit {
    by_name: ByName,
    digest: Digest,
}

impl Edit {
    /// An edit starting from `resources` (which it shares, not copies).
    pub fn of(resources: &Resources) -> Edit {
        Edit {
            by_name: resources.by_name.clone(),
            digest: resources.digest,
        }
    }

    /// Adds `resource`, or replaces the one of its name.
    pub fn put(&mut self, resource: Arc<Resource>) {
        self.digest.add(&resource);
        if let Some(old) = self.by_name.insert(resource.name.clone(), resource) {
            self.digest.remove(&old);
        }
    }

    /// Removes the resource `name`, if there is one.
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.by_name.remove(name) {
            self.digest.remove(&old);
        }
    }

    /// The edited set, versioned.
    pub fn finish(self) -> Resources {
        Resources::versioned(self.by_name, self.digest)
    }
}

/// The hash of one (name, version) pair; the 0 byte keeps `ab`+`c` apart from `a`+`bc`.
fn pair_hash(resource: &Resource) -> u128 {
    let mut hasher = Xxh3::new();
    hasher.update(resource.name.as_bytes());
    hasher.update(&[0]);
    hasher.update(resource.version.as_bytes());
    hasher.digest128()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::snapshot::ResourceType;

    fn resource(name: &str, body: &str) -> Arc<Resource> {
        Arc::new(Resource::new(ResourceType::Cluster, name, body.as_bytes()))
    }

    #[test]
    fn edits_give_the_version_of_the_same_set_built_at_once() {
        let (a, b, c) = (resource("a", "1"), resource("b", "1"), resource("c", "1"));
        let mut edited = Digest::default();
        edited.add(&c);
        edited.add(&a);
        edited.add(&resource("b", "0"));
        edited.remove(&resource("b", "0"));
        edited.add(&b);
        let at_once: ByName = [a, b, c].into_iter().map(|r| (r.name.clone(), r)).collect();
        assert_eq!(edited, Digest::of(&at_once));
        assert_eq!(edited.version(), Digest::of(&at_once).version());
    }

    #[test]
    fn an_edited_set_equals_the_set_built_from_its_resources() {
        let start: ByName = ["a", "b", "c"]
            .into_iter()
            .map(|n| (Arc::from(n), resource(n, "1")))
            .collect();
        let start = Resources::new(start);
        let mut edit = Edit::of(&start);
        edit.remove("b");
        edit.remove("nothing");
        edit.put(resource("c", "2"));
        edit.put(resource("d", "1"));
        let edited = edit.finish();
        let fresh = Resources::new(edited.by_name.clone());
        assert_eq!(edited, fresh);
        assert_eq!(edited.version, fresh.version);
        let names: Vec<&str> = edited.by_name.keys().map(|k| &**k).collect();
        assert_eq!(names, ["a", "c", "d"]);
        assert_eq!(
            start.by_name.len(),
            3,
            "the set it started from is untouched"
        );
    }

    #[test]
    fn versions_tell_names_bodies_and_emptiness_apart() {
        let one = |name: &str, body: &str| {
            let mut d = Digest::default();
            d.add(&resource(name, body));
            d.version()
        };
        assert_ne!(one("a", "1"), one("a", "2"));
        assert_ne!(one("a", "1"), one("b", "1"));
        assert_eq!(Digest::default().version(), "empty");
        let mut gone = Digest::default();
        gone.add(&resource("a", "1"));
        gone.remove(&resource("a", "1"));
        assert_eq!(gone.version(), "empty");
    }
}
