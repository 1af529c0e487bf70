//! The objects of one watch, keyed by their API id (`namespace/name`, or `name`), with the
//! last good conversion of each: synchronous, so every rule here is tested without an
//! apiserver. Each call is O(log n) in the objects watched; a re-list is buffered and handed
//! on whole.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{CatalogEvent, Object, ObjectKind};
use crate::source::SourceError;

/// One watch's objects, invalid objects and an ongoing re-list.
#[derive(Debug, Default)]
pub(super) struct WatchIndex {
    /// The last good conversion of each object, by API id.
    good: BTreeMap<String, Object>,
    /// Objects whose current version does not convert, by API id.
    invalid: BTreeMap<String, SourceError>,
    /// A list in progress: the objects it returned so far, and every id it named.
    relist: Option<(BTreeMap<String, Object>, BTreeSet<String>)>,
}

impl WatchIndex {
    /// A list (initial or re-list) starts.
    pub fn init(&mut self) {
        self.relist = Some(Default::default());
    }

    /// One object of a list: an object that does not convert keeps its last good version.
    pub fn init_apply(&mut self, id: String, converted: Result<Object, SourceError>) {
        let (buffer, seen) = self.relist.get_or_insert_with(Default::default);
        let object = match converted {
            Ok(object) => {
                self.invalid.remove(&id);
                Some(object)
            }
            Err(e) => {
                self.invalid.insert(id.clone(), e);
                self.good.get(&id).cloned()
            }
        };
        if let Some(object) = object {
            buffer.insert(id.clone(), object);
        }
        seen.insert(id);
    }

    /// The list is complete: it replaces every object of `kind`, atomically.
    pub fn init_done(&mut self, kind: ObjectKind) -> CatalogEvent {
        let (fresh, seen) = self.relist.take().unwrap_or_default();
        self.good = fresh;
        self.invalid.retain(|id, _| seen.contains(id));
        CatalogEvent::Replace(kind, self.good.values().cloned().collect())
    }

    /// An object was added or changed; nothing to send when it does not convert.
    pub fn apply(
        &mut self,
        id: String,
        converted: Result<Object, SourceError>,
    ) -> Option<CatalogEvent> {
        match converted {
            Ok(object) => {
                self.invalid.remove(&id);
                self.good.insert(id, object.clone());
                Some(CatalogEvent::Apply(object))
            }
            Err(e) => {
                self.invalid.insert(id, e);
                None
            }
        }
    }

    /// An object was deleted; nothing to send when it never converted.
    pub fn delete(&mut self, id: &str) -> Option<CatalogEvent> {
        self.invalid.remove(id);
        let gone = self.good.remove(id)?;
        Some(CatalogEvent::Delete(gone.reference()))
    }

    /// Objects served now.
    pub fn len(&self) -> usize {
        self.good.len()
    }

    /// Problems with objects now, by API id.
    pub fn invalid(&self) -> impl Iterator<Item = &SourceError> {
        self.invalid.values()
    }

    /// Whether some object does not convert now.
    pub fn has_invalid(&self) -> bool {
        !self.invalid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::build::{service, slice};
    use crate::catalog::ObjectRef;

    fn slice_object(i: usize) -> (String, Object) {
        let name = format!("s{i}-abcde");
        let id = format!("shop/{name}");
        let s = slice(
            "shop",
            &name,
            &format!("s{i}"),
            &[("http", 8080)],
            &[("10.0.0.1", true, false)],
        );
        (id, Object::EndpointSlice(s))
    }

    fn bad(id: &str) -> SourceError {
        SourceError {
            path: format!("endpointslices/{id}"),
            document: None,
            reason: "port 0".into(),
        }
    }

    #[test]
    fn an_invalid_object_keeps_its_last_good_version_across_a_relist() {
        let mut index = WatchIndex::default();
        let svc = Object::Service(service("shop", "a", &[("http", 80)]));
        index.init();
        index.init_apply("shop/a".into(), Ok(svc.clone()));
        assert_eq!(
            index.init_done(ObjectKind::Service),
            CatalogEvent::Replace(ObjectKind::Service, vec![svc.clone()])
        );
        assert_eq!(index.apply("shop/a".into(), Err(bad("shop/a"))), None);
        index.init();
        index.init_apply("shop/a".into(), Err(bad("shop/a")));
        assert_eq!(
            index.init_done(ObjectKind::Service),
            CatalogEvent::Replace(ObjectKind::Service, vec![svc.clone()]),
            "last good version kept"
        );
        assert!(index.has_invalid());
        index.init();
        assert_eq!(
            index.init_done(ObjectKind::Service),
            CatalogEvent::Replace(ObjectKind::Service, vec![]),
            "gone from the list: gone"
        );
        assert!(!index.has_invalid(), "its problem went with it");
        assert_eq!(index.delete("shop/a"), None, "nothing left to delete");
    }

    #[test]
    fn deleting_is_logarithmic_not_a_scan_of_every_object() {
        // 30,000 slices deleted one by one: a scan that formats every object's id per delete
        // (what the watch did) is 4.5e8 allocations, minutes in a debug build; a keyed
        // removal is milliseconds.
        const N: usize = 30_000;
        let mut index = WatchIndex::default();
        index.init();
        for i in 0..N {
            let (id, object) = slice_object(i);
            index.init_apply(id, Ok(object));
        }
        index.init_done(ObjectKind::EndpointSlice);
        let started = std::time::Instant::now();
        for i in 0..N {
            let (id, _) = slice_object(i);
            let event = index.delete(&id).expect("was served");
            let CatalogEvent::Delete(ObjectRef::EndpointSlice(key)) = event else {
                panic!("{event:?}");
            };
            assert_eq!(format!("{}/{}", key.namespace, key.name), id);
        }
        let took = started.elapsed();
        assert_eq!(index.len(), 0);
        assert!(
            took < std::time::Duration::from_secs(3),
            "{N} deletes took {took:?}"
        );
    }
}
