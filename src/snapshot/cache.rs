//! A cache attached to one snapshot's resources of a type (what name lists select, what
//! changed since older versions): shared by every stream through a lock, never part of
//! what the resources are, so it makes no two sets differ and a copy starts empty.

use std::sync::{Mutex, MutexGuard};

/// Cached state `T` behind a lock.
#[derive(Default)]
pub struct Cache<T>(Mutex<T>);

impl<T> Cache<T> {
    /// A cache starting from `value`.
    pub fn new(value: T) -> Self {
        Cache(Mutex::new(value))
    }

    /// The cached state. A panic while it was held leaves a cache, which is still usable.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A copy starts empty.
impl<T: Default> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache::default()
    }
}

/// A cache never makes two sets of resources differ.
impl<T> PartialEq for Cache<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Cache<T> {}

impl<T> std::fmt::Debug for Cache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache(..)")
    }
}
