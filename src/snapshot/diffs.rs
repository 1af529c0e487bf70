//! What changed in one resource type since an older set of it, computed once per older
//! version and shared by every stream whose client holds that version.
//!
//! A push of EDS to a client that holds assignments sends only those that changed. Finding
//! them per stream meant looking each subscribed name up in what the client held (1,000
//! B-tree look-ups per stream and push with 1,000 subscribed clusters); with this memo a
//! stream filters the few changed resources by its own subscription.

use std::sync::Arc;

use imbl::ordmap::DiffItem;

use super::cache::Cache;
use super::{ByName, Resource};

/// Older versions remembered per type of one snapshot; clients hold one or two at a time.
const MAX_VERSIONS: usize = 16;

/// Resources of one set, ordered by name.
pub type Changed = Arc<[Arc<Resource>]>;

/// How a set differs from an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Added or changed (the current resources).
    pub changed: Changed,
    /// Gone (the older resources).
    pub removed: Changed,
}

/// The memo of one type of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diffs {
    /// By the older set's version (a content hash: equal versions, equal content).
    memo: Cache<Vec<(String, Delta)>>,
}

impl Diffs {
    /// How `current` differs from `older` (of version `older_version`).
    pub fn since(&self, older_version: &str, older: &ByName, current: &ByName) -> Delta {
        let mut memo = self.memo.lock();
        if let Some((_, delta)) = memo.iter().find(|(v, _)| v == older_version) {
            return delta.clone();
        }
        let delta = delta_between(older, current);
        if memo.len() < MAX_VERSIONS {
            memo.push((older_version.to_string(), delta.clone()));
        }
        delta
    }
}

/// One ordered walk over both maps that skips the parts they share: after one change, the
/// maps of consecutive snapshots differ in a few nodes, whatever their size.
fn delta_between(older: &ByName, current: &ByName) -> Delta {
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for item in older.diff(current) {
        match item {
            DiffItem::Add(_, added) => changed.push(added.clone()),
            DiffItem::Update { old, new } if old.1.version != new.1.version => {
                changed.push(new.1.clone())
            }
            DiffItem::Update { .. } => {}
            DiffItem::Remove(_, gone) => removed.push(gone.clone()),
        }
    }
    Delta {
        changed: changed.into(),
        removed: removed.into(),
    }
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
    fn added_and_changed_resources_in_name_order_and_removed_ones_apart() {
        let older = set(&[("a", "1"), ("b", "1"), ("c", "1"), ("e", "1"), ("g", "1")]);
        let current = set(&[("b", "1"), ("c", "2"), ("d", "1"), ("e", "1"), ("f", "1")]);
        let diffs = Diffs::default();
        let delta = diffs.since("v1", &older, &current);
        assert_eq!(names(&delta.changed), ["c", "d", "f"]);
        assert_eq!(names(&delta.removed), ["a", "g"]);
        let again = diffs.since("v1", &older, &current);
        assert!(
            Arc::ptr_eq(&delta.changed, &again.changed),
            "computed once per older version"
        );
        assert_eq!(diffs.since("v2", &current, &current).changed.len(), 0);
        assert_eq!(diffs.since("v2", &current, &current).removed.len(), 0);
        assert_eq!(
            names(&diffs.since("v0", &ByName::new(), &current).changed).len(),
            5
        );
    }
}
