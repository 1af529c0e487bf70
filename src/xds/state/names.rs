//! Subscribed name lists, interned process-wide.
//!
//! Envoy subscribes to EDS with the names of every EDS cluster it got, so the proxies of a
//! mesh subscribe to the same list (1,000 names is ~60 KB as strings): each distinct list is
//! held once and shared by every stream that subscribes to it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use xxhash_rust::xxh3::Xxh3;

use crate::snapshot::selections::NameList;

/// A sorted, deduplicated list of subscribed names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names(Option<NameList>);

impl Names {
    /// The list of `names` (any order, duplicates allowed), shared with every equal list.
    pub fn of(names: &[&str]) -> Names {
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() {
            return Names(None);
        }
        Names(Some(INTERNED.intern(&sorted)))
    }

    /// Whether this list holds exactly `sorted` (sorted and deduplicated).
    pub fn equals_sorted(&self, sorted: &[&str]) -> bool {
        self.iter().eq(sorted.iter().copied())
    }

    /// Whether `name` is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.slice().binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.slice().iter().map(|n| &**n)
    }

    /// The shared list itself (`None` when empty).
    pub fn list(&self) -> Option<&NameList> {
        self.0.as_ref()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    fn slice(&self) -> &[Box<str>] {
        self.0.as_deref().map_or(&[], |list| &list[..])
    }
}

static INTERNED: LazyLock<Interner> = LazyLock::new(Interner::default);

#[derive(Default)]
struct Interner {
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    /// Weak: a list nobody holds is freed (its `Weak` keeps only the counts, not the names).
    by_hash: HashMap<u128, Weak<Box<[Box<str>]>>>,
    /// Size after the last sweep of dropped lists; the next sweep is due at twice this.
    swept_at: usize,
}

impl Interner {
    fn intern(&self, sorted: &[&str]) -> NameList {
        let mut hasher = Xxh3::new();
        for n in sorted {
            hasher.update(n.as_bytes());
            hasher.update(&[0]);
        }
        let key = hasher.digest128();
        let mut lists = self.lists.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = lists.by_hash.get(&key).and_then(Weak::upgrade) {
            if list.iter().map(|n| &**n).eq(sorted.iter().copied()) {
                return list;
            }
        }
        let list: NameList = Arc::new(sorted.iter().map(|n| Box::from(*n)).collect());
        lists.by_hash.insert(key, Arc::downgrade(&list));
        if lists.by_hash.len() > 2 * lists.swept_at.max(64) {
            lists.by_hash.retain(|_, w| w.strong_count() > 0);
            lists.swept_at = lists.by_hash.len();
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lists_share_one_copy_in_any_order() {
        let a = Names::of(&["b", "a", "b"]);
        let b = Names::of(&["a", "b"]);
        assert_eq!(a.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(Arc::ptr_eq(a.0.as_ref().unwrap(), b.0.as_ref().unwrap()));
        assert!(a.contains("a") && !a.contains("c"));
        assert!(a.equals_sorted(&["a", "b"]) && !a.equals_sorted(&["a"]));
        assert!(Names::of(&[]).is_empty());
    }
}
