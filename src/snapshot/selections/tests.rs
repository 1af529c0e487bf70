//! The memo: one look-up per list, and a byte bound on what it keeps alive.

use std::sync::Weak;

use super::*;
use crate::snapshot::ResourceType;

fn by_name(names: &[&str]) -> ByName {
    names
        .iter()
        .map(|n| {
            let r = Resource::new(ResourceType::Endpoint, n, b"x");
            (Arc::from(*n), Arc::new(r))
        })
        .collect()
}

fn list(names: impl IntoIterator<Item = String>) -> NameList {
    Arc::new(names.into_iter().map(Box::from).collect())
}

/// A list of 10,000 names (about 370 KB with their boxes) unique to `i`.
fn big_list(i: usize) -> NameList {
    list((0..10_000).map(|n| format!("outbound|80||svc-{n:05}.ns-{i:03}")))
}

#[test]
fn a_list_is_looked_up_once_and_skips_missing_names() {
    let by_name = by_name(&["a", "b"]);
    let selections = Selections::default();
    let names = list(["a", "late", "b"].map(String::from));
    let _other_stream = names.clone();
    let first = selections.get(&names, &by_name);
    let again = selections.get(&names, &by_name);
    assert!(Arc::ptr_eq(&first, &again));
    let got: Vec<&str> = first.iter().map(|r| &*r.name).collect();
    assert_eq!(got, ["a", "b"]);
    let other = list(["b".to_string()]);
    assert_eq!(selections.get(&other, &by_name).len(), 1);
}

#[test]
fn a_list_of_one_stream_is_not_memoized() {
    // One stream subscribing to 60 distinct big lists, one after the other, then leaving.
    let selections = Selections::default();
    let by_name = by_name(&["outbound|80||svc-00001.ns-001"]);
    let mut gone: Vec<Weak<Box<[Box<str>]>>> = Vec::new();
    for i in 0..60 {
        let names = big_list(i);
        let selected = selections.get(&names, &by_name);
        assert_eq!(selected.len(), usize::from(i == 1));
        gone.push(Arc::downgrade(&names));
    }
    let alive = gone.iter().filter(|w| w.strong_count() > 0).count();
    assert_eq!(alive, 0, "{alive} of 60 lists kept alive by the memo");
}

#[test]
fn shared_lists_of_closed_streams_are_kept_only_within_the_byte_budget() {
    // Two streams subscribing to 60 distinct big lists, one after the other, then leaving.
    let budget = Arc::new(MemoBudget::new(1 << 20));
    let selections = Selections::with_budget(budget.clone());
    let by_name = by_name(&["outbound|80||svc-00001.ns-001"]);
    let mut gone: Vec<Weak<Box<[Box<str>]>>> = Vec::new();
    for i in 0..60 {
        let names = big_list(i);
        let _second_stream = names.clone();
        let selected = selections.get(&names, &by_name);
        assert_eq!(selected.len(), usize::from(i == 1));
        gone.push(Arc::downgrade(&names));
    }
    let alive = gone.iter().filter(|w| w.strong_count() > 0).count();
    assert!(budget.used() <= 1 << 20, "{} bytes held", budget.used());
    assert!(alive <= 2, "{alive} of 60 lists kept alive by the memo");

    // A list in use is memoized: the unheld ones make room for it.
    let held = big_list(99);
    let _held_too = held.clone();
    let first = selections.get(&held, &by_name);
    assert!(Arc::ptr_eq(&first, &selections.get(&held, &by_name)));
    assert!(gone.iter().all(|w| w.strong_count() == 0));

    // Lists still in use are not forgotten; one that does not fit is answered all the same.
    let more = big_list(100);
    let more_held = big_list(101);
    let _also = (more.clone(), more_held.clone());
    selections.get(&more, &by_name);
    let answer = selections.get(&more_held, &by_name);
    assert_eq!(answer.len(), 0);
    assert!(Arc::ptr_eq(&first, &selections.get(&held, &by_name)));
    assert!(budget.used() <= 1 << 20);

    drop(selections);
    assert_eq!(budget.used(), 0, "a dropped memo gives its bytes back");
}
