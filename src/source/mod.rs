//! Sources turn the outside world into [`CatalogEvent`](crate::catalog::CatalogEvent)s.
//!
//! Each source runs as a task that sends events into a bounded channel and reports problems
//! with the input into a shared [`SourceStatus`]. A source never touches the catalog,
//! translation or streams directly: data flows one way, source → catalog.

pub mod convert;
pub mod dir;
pub mod kube;
pub mod manifest;
pub mod yaml;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// One problem with the input a source read, kept until the input is fixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceError {
    /// File (or object reference) the problem is in.
    pub path: String,
    /// Index of the YAML document within the file, when known (0-based).
    pub document: Option<usize>,
    /// What is wrong and, where it helps, what to do.
    pub reason: String,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.document {
            Some(d) => write!(f, "{} (document {}): {}", self.path, d, self.reason),
            None => write!(f, "{}: {}", self.path, self.reason),
        }
    }
}

/// The current problems of every source, readable by the admin server. Each reporter (a
/// directory, one Kubernetes watch) owns a slot and replaces its own list.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    errors: Arc<RwLock<BTreeMap<String, Vec<SourceError>>>>,
}

impl SourceStatus {
    /// Replaces the problem list of `reporter`.
    pub fn set_errors(&self, reporter: &str, errors: Vec<SourceError>) {
        let mut all = self.errors.write().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() {
            all.remove(reporter);
        } else {
            all.insert(reporter.to_string(), errors);
        }
    }

    /// The current problems of every reporter.
    pub fn errors(&self) -> Vec<SourceError> {
        let all = self.errors.read().unwrap_or_else(|e| e.into_inner());
        all.values().flatten().cloned().collect()
    }
}
