//! The resources a subscribed name list selects, memoized per list for one snapshot.
//!
//! Proxies of a mesh subscribe to EDS with the same list of cluster names (interned, so the
//! same `Arc`): looking 1,000 names up in the snapshot is done once per list and snapshot,
//! not once per stream.

use std::collections::HashMap;
use std::sync::Arc;

use super::cache::Cache;
use super::{ByName, Resource};

/// A sorted list of names, shared by everything that holds it.
pub type NameList = Arc<[Box<str>]>;

/// Lists memoized per snapshot and type at most; further lists are looked up per stream.
const MAX_LISTS: usize = 1024;

/// The resources one list selects, in its order.
pub type Selected = Arc<[Arc<Resource>]>;

/// The memo of one type of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selections {
    /// By the list's address; the entry holds the list, so the address is not reused while
    /// the entry exists.
    memo: Cache<HashMap<usize, (NameList, Selected)>>,
}

impl Selections {
    /// The resources of `by_name` that `names` names, in the list's order.
    pub fn get(&self, names: &NameList, by_name: &ByName) -> Selected {
        let key = Arc::as_ptr(names) as *const u8 as usize;
        let mut memo = self.memo.lock();
        if let Some((_, selected)) = memo.get(&key) {
            return selected.clone();
        }
        let selected: Selected = names
            .iter()
            .filter_map(|n| by_name.get(&**n).cloned())
            .collect();
        if memo.len() < MAX_LISTS {
            memo.insert(key, (names.clone(), selected.clone()));
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ResourceType;

    #[test]
    fn a_list_is_looked_up_once_and_skips_missing_names() {
        let by_name: ByName = ["a", "b"]
            .iter()
            .map(|n| {
                let r = Resource::new(ResourceType::Endpoint, n, b"x");
                (Arc::from(*n), Arc::new(r))
            })
            .collect();
        let selections = Selections::default();
        let names: NameList = ["a", "late", "b"].iter().map(|n| Box::from(*n)).collect();
        let first = selections.get(&names, &by_name);
        let again = selections.get(&names, &by_name);
        assert!(Arc::ptr_eq(&first, &again));
        let got: Vec<&str> = first.iter().map(|r| &*r.name).collect();
        assert_eq!(got, ["a", "b"]);
        let other: NameList = ["b"].iter().map(|n| Box::from(*n)).collect();
        assert_eq!(selections.get(&other, &by_name).len(), 1);
    }
}
