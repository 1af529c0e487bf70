//! Which services changed, so that a snapshot build visits only those.
//!
//! Every change the catalog takes is logged as the service it concerns: a Service applied or
//! deleted, an EndpointSlice of it (its old owner too when a slice moves), a namespace's
//! labels (every service of the namespace: discovery selectors may admit or drop them). A
//! change of the mesh config, a reset or a re-list changes everything. A reader remembers a
//! [`Mark`] and asks what changed since; it is told [`Since::Everything`] when it read
//! another catalog, or when the log no longer reaches back to its mark (the log is bounded).
//!
//! The log owns no policy about services: it does not know what a build does with them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ObjectKey;

/// Entries kept at most; a reader further behind rebuilds everything (which costs about what
/// visiting that many changes would).
const MAX_ENTRIES: usize = 16_384;

/// Tells catalogs apart: a mark of one catalog means nothing to another (or to a copy).
static LINEAGES: AtomicU64 = AtomicU64::new(1);

/// Where a reader of one catalog's changes stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    lineage: u64,
    generation: u64,
}

/// What changed since a mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// Anything may have changed: visit every service.
    Everything,
    /// Only these services (present, gone or changed), in key order.
    Services(BTreeSet<ObjectKey>),
}

/// The log of one catalog.
#[derive(Debug)]
pub struct ChangeLog {
    lineage: u64,
    generation: u64,
    /// Changes up to this generation are not in `entries` (forgotten, or everything changed).
    floor: u64,
    entries: VecDeque<(u64, ObjectKey)>,
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog {
            lineage: LINEAGES.fetch_add(1, Ordering::Relaxed),
            generation: 0,
            floor: 0,
            entries: VecDeque::new(),
        }
    }
}

/// A copy is another catalog: its readers start over.
impl Clone for ChangeLog {
    fn clone(&self) -> Self {
        ChangeLog::default()
    }
}

/// The log is bookkeeping, never part of what a catalog holds.
impl PartialEq for ChangeLog {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ChangeLog {
    /// Records a change of `service`.
    pub fn service(&mut self, service: ObjectKey) {
        self.generation += 1;
        self.entries.push_back((self.generation, service));
        if self.entries.len() > MAX_ENTRIES {
            let keep = MAX_ENTRIES / 2;
            while self.entries.len() > keep {
                if let Some((generation, _)) = self.entries.pop_front() {
                    self.floor = generation;
                }
            }
        }
    }

    /// Records a change of everything.
    pub fn everything(&mut self) {
        self.generation += 1;
        self.floor = self.generation;
        self.entries.clear();
    }

    /// Where a reader that saw every change so far stands.
    pub fn mark(&self) -> Mark {
        Mark {
            lineage: self.lineage,
            generation: self.generation,
        }
    }

    /// What changed since `mark` (everything when there is none).
    pub fn since(&self, mark: Option<Mark>) -> Since {
        match mark {
            Some(m) if m.lineage == self.lineage && m.generation >= self.floor => {
                let first = self.entries.partition_point(|(g, _)| *g <= m.generation);
                Since::Services(
                    self.entries
                        .range(first..)
                        .map(|(_, k)| k.clone())
                        .collect(),
                )
            }
            _ => Since::Everything,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Since {
        Since::Services(names.iter().map(|n| ObjectKey::new("shop", *n)).collect())
    }

    #[test]
    fn a_reader_sees_the_services_changed_since_its_mark_once_each() {
        let mut log = ChangeLog::default();
        assert_eq!(log.since(None), Since::Everything);
        log.service(ObjectKey::new("shop", "web"));
        let mark = log.mark();
        assert_eq!(log.since(Some(mark)), keys(&[]));
        log.service(ObjectKey::new("shop", "db"));
        log.service(ObjectKey::new("shop", "api"));
        log.service(ObjectKey::new("shop", "db"));
        assert_eq!(log.since(Some(mark)), keys(&["api", "db"]));
        assert_eq!(log.since(Some(log.mark())), keys(&[]));
    }

    #[test]
    fn a_change_of_everything_or_a_forgotten_mark_means_everything() {
        let mut log = ChangeLog::default();
        let before = log.mark();
        log.everything();
        assert_eq!(log.since(Some(before)), Since::Everything);
        let after = log.mark();
        assert_eq!(log.since(Some(after)), keys(&[]));
        for i in 0..=MAX_ENTRIES {
            log.service(ObjectKey::new("shop", format!("s{i}")));
        }
        assert_eq!(
            log.since(Some(after)),
            Since::Everything,
            "log no longer reaches"
        );
        let recent = log.mark();
        log.service(ObjectKey::new("shop", "web"));
        assert_eq!(log.since(Some(recent)), keys(&["web"]));
    }

    #[test]
    fn a_mark_of_one_catalog_means_everything_to_another() {
        let mut log = ChangeLog::default();
        log.service(ObjectKey::new("shop", "web"));
        let copy = log.clone();
        assert_eq!(copy.since(Some(log.mark())), Since::Everything);
        assert_eq!(
            ChangeLog::default().since(Some(log.mark())),
            Since::Everything
        );
    }
}
