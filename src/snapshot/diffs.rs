//! What changed in one resource type since an older set of it, computed once per older
//! version and shared by every stream whose client holds that version.
//!
//! A push of EDS to a client that holds assignments sends only those that changed. Finding
//! them per stream meant looking each subscribed name up in what the client held (1,000
//! B-tree look-ups per stream and push with 1,000 subscribed clusters); with this memo a
//! stream filters the few changed resources by its own subscription.

use std::sync::Arc;

use super::cache::Cache;
use super::{ByName, Resource};

/// Older versions remembered per type of one snapshot; clients hold one or two at a time.
const MAX_VERSIONS: usize = 16;

/// Resources added or changed since an older set, ordered by name.
pub type Changed = Arc<[Arc<Resource>]>;

/// The memo of one type of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diffs {
    /// By the older set's version (a content hash: equal versions, equal content).
    memo: Cache<Vec<(String, Changed)>>,
}

impl Diffs {
    /// The resources of `current` that `older` (of version `older_version`) lacks or holds
    /// at another version.
    pub fn since(&self, older_version: &str, older: &ByName, current: &ByName) -> Changed {
        let mut memo = self.memo.lock();
        if let Some((_, changed)) = memo.iter().find(|(v, _)| v == older_version) {
            return changed.clone();
        }
        let changed = changed_between(older, current);
        if memo.len() < MAX_VERSIONS {
            memo.push((older_version.to_string(), changed.clone()));
        }
        changed
    }
}

/// One ordered walk over both maps.
fn changed_between(older: &ByName, current: &ByName) -> Changed {
    let mut old = older.iter().peekable();
    let mut changed = Vec::new();
    for (name, resource) in current {
        while old.next_if(|(n, _)| *n < name).is_some() {}
        match old.next_if(|(n, _)| *n == name) {
            Some((_, held)) if Arc::ptr_eq(held, resource) || held.version == resource.version => {}
            _ => changed.push(resource.clone()),
        }
    }
    changed.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ResourceType;

    fn set(items: &[(&str, &str)]) -> ByName {
        items
            .iter()
            .map(|(name, body)| {
                let r = Resource::new(ResourceType::Endpoint, name, body.as_bytes());
                (Arc::from(*name), Arc::new(r))
            })
            .collect()
    }

    fn names(changed: &Changed) -> Vec<&str> {
        changed.iter().map(|r| &*r.name).collect()
    }

    #[test]
    fn added_and_changed_resources_in_name_order_removed_ones_left_out() {
        let older = set(&[("a", "1"), ("b", "1"), ("c", "1"), ("e", "1")]);
        let current = set(&[("b", "1"), ("c", "2"), ("d", "1"), ("e", "1"), ("f", "1")]);
        let diffs = Diffs::default();
        let changed = diffs.since("v1", &older, &current);
        assert_eq!(names(&changed), ["c", "d", "f"]);
        let again = diffs.since("v1", &older, &current);
        assert!(
            Arc::ptr_eq(&changed, &again),
            "computed once per older version"
        );
        assert_eq!(diffs.since("v2", &current, &current).len(), 0);
        assert_eq!(names(&diffs.since("v0", &ByName::new(), &current)).len(), 5);
    }
}
