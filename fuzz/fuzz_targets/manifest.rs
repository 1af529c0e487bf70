//! A manifest file, as the directory source reads it: every YAML document parsed, each
//! Kubernetes object converted (Namespace, Service, EndpointSlice, the revision's mesh-config
//! ConfigMap). Must never panic; a bad document is an error for that file, never a crash.
//!
//! Goes through `DirSource::scan` (the public entry point that parses a file today) on a file
//! in a private temporary directory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use revplane::revision::Revision;
use revplane::source::dir::DirSource;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

fuzz_target!(|data: &[u8]| {
    let path = dir().join("input.yaml");
    std::fs::write(&path, data).expect("write the input");
    let revision: Revision = "fuzz".parse().expect("a valid revision");
    let mut source = DirSource::new(dir(), &revision);
    let scan = source.scan();
    if std::str::from_utf8(data).is_err() {
        assert!(scan.objects.is_empty() && !scan.errors.is_empty());
    }
    for error in &scan.errors {
        let _ = error.to_string();
    }
});
