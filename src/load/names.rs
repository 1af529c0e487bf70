//! Subscription name lists shared by every simulated proxy of a run. Thousands of proxies of
//! one mesh subscribe to the same names (20,000 EDS names on a large catalog, ~1.5 MB as
//! strings): each distinct list is held once, with its protobuf encoding as the
//! `resource_names` of a `DiscoveryRequest`, and a proxy keeps only a pointer to it and a
//! bitset of the names it has been answered for.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes, BytesMut};

/// `DiscoveryRequest.resource_names` is field 3, length-delimited.
const RESOURCE_NAMES_KEY: u8 = 3 << 3 | 2;

/// One sorted list of names and its encoding as `resource_names` fields.
#[derive(Debug, Default)]
pub(super) struct NameList {
    /// The names, sorted and without repeats.
    pub names: Vec<String>,
    /// `resource_names` fields for these names, appended to an encoded request as is.
    pub encoded: Bytes,
}

impl NameList {
    fn new(names: Vec<String>) -> Self {
        let mut encoded = BytesMut::new();
        for name in &names {
            encoded.put_u8(RESOURCE_NAMES_KEY);
            prost::encoding::encode_varint(name.len() as u64, &mut encoded);
            encoded.put_slice(name.as_bytes());
        }
        NameList {
            names,
            encoded: encoded.freeze(),
        }
    }

    /// The list is exactly `names`.
    pub fn holds(&self, names: &[Bytes]) -> bool {
        self.names.len() == names.len()
            && self
                .names
                .iter()
                .zip(names)
                .all(|(mine, theirs)| mine.as_bytes() == &theirs[..])
    }

    /// Where `name` is in the list, looked for at `hint` first.
    pub fn index(&self, name: &[u8], hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|n| n.as_bytes() == name) {
            return Some(hint);
        }
        self.names.binary_search_by(|n| n.as_bytes().cmp(name)).ok()
    }
}

/// The distinct lists alive in a run; cheap to clone, every clone is the same set.
#[derive(Clone, Debug, Default)]
pub(super) struct NameLists {
    lists: Arc<Mutex<Interned>>,
}

#[derive(Debug, Default)]
struct Interned {
    by_hash: HashMap<u64, Weak<NameList>>,
    /// The list last asked for: thousands of proxies of one mesh ask for the same one in a
    /// row, and comparing with it costs less than hashing megabytes of names.
    last: Weak<NameList>,
}

impl NameLists {
    /// The shared list equal to `names` (sorted, without repeats, UTF-8); a new list's
    /// names are made into strings only when it is new.
    pub fn intern(&self, names: Vec<Bytes>) -> Arc<NameList> {
        let mut lists = self.lists.lock().expect("name lists lock");
        if let Some(list) = lists.last.upgrade().filter(|l| l.holds(&names)) {
            return list;
        }
        let mut hasher = DefaultHasher::new();
        for name in &names {
            name[..].hash(&mut hasher);
        }
        let key = hasher.finish();
        if let Some(list) = lists.by_hash.get(&key).and_then(Weak::upgrade) {
            if list.holds(&names) {
                lists.last = Arc::downgrade(&list);
                return list;
            }
        }
        if lists.by_hash.len() >= 64 {
            lists.by_hash.retain(|_, list| list.strong_count() > 0);
        }
        let names = names
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        let list = Arc::new(NameList::new(names));
        lists.by_hash.insert(key, Arc::downgrade(&list));
        lists.last = Arc::downgrade(&list);
        list
    }
}

/// Which names of a [`NameList`] were answered: one bit per name.
#[derive(Debug, Default)]
pub(super) struct Answered {
    bits: Vec<u64>,
    count: usize,
    /// Where the name after the last one marked is: a response names its resources in the
    /// order they were asked for, so the next name is usually there (one comparison instead
    /// of a search of 20,000 names on a large catalog).
    next: usize,
}

impl Answered {
    /// Marks `name` answered if `list` holds it.
    pub fn mark(&mut self, list: &NameList, name: &[u8]) {
        let Some(i) = list.index(name, self.next) else {
            return;
        };
        self.next = i + 1;
        if self.bits.len() * 64 < list.names.len() {
            self.bits.resize(list.names.len().div_ceil(64), 0);
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.count += 1;
        }
    }

    /// The same answers, over `to` instead of `from` (names only in `from` are forgotten).
    pub fn carry_over(&self, from: &NameList, to: &NameList) -> Answered {
        let mut out = Answered::default();
        for (word, bits) in self.bits.iter().enumerate() {
            let mut bits = *bits;
            while bits != 0 {
                let i = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(name) = from.names.get(i) {
                    out.mark(to, name.as_bytes());
                }
            }
        }
        out
    }

    /// Every name of `list` was answered.
    pub fn all(&self, list: &NameList) -> bool {
        self.count == list.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use prost::Message;

    fn names(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn equal_lists_are_held_once_and_encode_as_resource_names() {
        let lists = NameLists::default();
        let a = lists.intern(names(&["a", "b"]));
        let b = lists.intern(names(&["a", "b"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &lists.intern(names(&["a"]))));
        let head = DiscoveryRequest {
            type_url: "t".into(),
            response_nonce: "1".into(),
            ..Default::default()
        };
        let mut bytes = head.encode_to_vec();
        bytes.extend_from_slice(&a.encoded);
        let decoded = DiscoveryRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.resource_names, ["a", "b"]);
        assert_eq!(decoded.type_url, "t");
        drop((a, b));
        let fresh = lists.intern(names(&["a", "b"]));
        assert_eq!(fresh.names, ["a", "b"], "a dropped list is built again");
    }

    #[test]
    fn answers_are_counted_once_and_carried_to_a_new_list() {
        let lists = NameLists::default();
        let old: Vec<Bytes> = (0..100).map(|i| format!("n{i:03}").into()).collect();
        let old = lists.intern(old);
        let mut answered = Answered::default();
        for name in ["n000", "n064", "n064", "n099", "other"] {
            answered.mark(&old, name.as_bytes());
        }
        assert!(!answered.all(&old));
        let new = lists.intern(names(&["n000", "n099", "n100"]));
        let mut carried = answered.carry_over(&old, &new);
        assert!(!carried.all(&new));
        carried.mark(&new, b"n100");
        assert!(carried.all(&new));
    }

    #[test]
    fn names_are_found_in_order_out_of_order_and_not_at_all() {
        let lists = NameLists::default();
        let list = lists.intern((0..10).map(|i| format!("n{i}").into()).collect());
        let mut answered = Answered::default();
        // In order (found at the hint), then back, repeated, unknown, and on from there.
        for name in ["n0", "n1", "n2", "n7", "n3", "n3", "x", "n4", "n5", "n6"] {
            answered.mark(&list, name.as_bytes());
        }
        assert_eq!(answered.count, 8);
        assert!(!answered.all(&list));
        for name in ["n8", "n9", "n9"] {
            answered.mark(&list, name.as_bytes());
        }
        assert!(answered.all(&list));
    }
}
