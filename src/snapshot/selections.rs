//! The resources a subscribed name list selects, memoized per list for one snapshot.
//!
//! Proxies of a mesh subscribe to EDS with the same list of cluster names (interned, so the
//! same `Arc`): looking 1,000 names up in the snapshot is done once per list and snapshot,
//! not once per stream.
//!
//! Only lists held by more than one holder (streams, other memos) are memoized: a list of one
//! stream is looked up once per snapshot either way, and one client cycling through distinct
//! lists then leaves nothing behind. A memo entry keeps its list alive (its address is the
//! key), so what memos hold is bounded in bytes: all memos of the process share one
//! [`MemoBudget`] of [`MEMO_BYTES`]. When it is spent, a memo first forgets lists that only it
//! still holds (their streams are gone), and otherwise looks the list up without memoizing it.
//! Streams are limited in the names they subscribe to (`--max-subscribed-names`), so one list
//! is bounded too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::cache::Cache;
use super::{ByName, Resource};

/// A sorted list of names, shared by everything that holds it. The names are a separate
/// allocation from the `Arc`'s counts, so a `Weak` (the interner's) keeps none of them alive.
pub type NameList = Arc<Box<[Box<str>]>>;

/// Lists memoized per snapshot and type at most; further lists are looked up per stream.
const MAX_LISTS: usize = 1024;

/// Bytes all memos of the process may hold together (lists kept alive and selections).
pub const MEMO_BYTES: usize = 64 << 20;

/// The budget of every memo not given one ([`Selections::with_budget`]).
static PROCESS_BUDGET: MemoBudget = MemoBudget::new(MEMO_BYTES);

/// The resources one list selects, in its order.
pub type Selected = Arc<[Arc<Resource>]>;

/// Bytes that memos may hold together, and how many they hold.
#[derive(Debug)]
pub struct MemoBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoBudget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        MemoBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The memo of one type of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selections {
    memo: Cache<Memo>,
}

/// Memoized lists by the list's address; an entry holds its list, so the address is not
/// reused while the entry exists.
#[derive(Debug, Default)]
struct Memo {
    entries: HashMap<usize, Entry>,
    /// `None`: the process budget.
    budget: Option<Arc<MemoBudget>>,
}

#[derive(Debug)]
struct Entry {
    names: NameList,
    selected: Selected,
    bytes: usize,
}

impl Selections {
    /// A memo that counts against `budget` instead of the process budget.
    pub fn with_budget(budget: Arc<MemoBudget>) -> Self {
        Selections {
            memo: Cache::new(Memo {
                entries: HashMap::new(),
                budget: Some(budget),
            }),
        }
    }

    /// The resources of `by_name` that `names` names, in the list's order.
    pub fn get(&self, names: &NameList, by_name: &ByName) -> Selected {
        let key = Arc::as_ptr(names) as usize;
        let mut memo = self.memo.lock();
        if let Some(entry) = memo.entries.get(&key) {
            return entry.selected.clone();
        }
        let selected: Selected = names
            .iter()
            .filter_map(|n| by_name.get(&**n).cloned())
            .collect();
        if Arc::strong_count(names) > 1 {
            memo.insert(key, names, &selected);
        }
        selected
    }
}

impl Memo {
    fn budget(&self) -> &MemoBudget {
        self.budget.as_deref().unwrap_or(&PROCESS_BUDGET)
    }

    fn insert(&mut self, key: usize, names: &NameList, selected: &Selected) {
        let bytes = entry_bytes(names, selected);
        if self.entries.len() >= MAX_LISTS || !self.budget().reserve(bytes) {
            self.forget_unheld();
            if self.entries.len() >= MAX_LISTS || !self.budget().reserve(bytes) {
                return;
            }
        }
        let entry = Entry {
            names: names.clone(),
            selected: selected.clone(),
            bytes,
        };
        self.entries.insert(key, entry);
    }

    /// Forgets the lists that no stream (nor any other memo) holds any more.
    fn forget_unheld(&mut self) {
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let held = Arc::strong_count(&e.names) > 1;
            if !held {
                freed += e.bytes;
            }
            held
        });
        self.budget().release(freed);
    }
}

impl Drop for Memo {
    fn drop(&mut self) {
        let held: usize = self.entries.values().map(|e| e.bytes).sum();
        self.budget().release(held);
    }
}

/// What an entry keeps alive: the list (its names, allocated in 16-byte steps, and their
/// boxes), the selection, and the entry itself.
fn entry_bytes(names: &NameList, selected: &Selected) -> usize {
    let names_bytes: usize = names
        .iter()
        .map(|n| n.len().next_multiple_of(16) + std::mem::size_of::<Box<str>>())
        .sum();
    names_bytes + selected.len() * std::mem::size_of::<Arc<Resource>>() + 128
}

#[cfg(test)]
mod tests;
