//! A manifest file's bytes, as the directory source parses them
//! (`revplane::source::manifest::parse`): the YAML nesting check, every document parsed, each
//! Kubernetes object converted (Namespace, Service, EndpointSlice, the revision's mesh-config
//! ConfigMap). Must never panic and never take long (libFuzzer's `-timeout` catches a
//! freeze); a bad document is an error for that document, never a crash. And whatever the
//! input, `parse` (which reads most texts straight into typed objects) answers exactly as
//! `parse_through_values`, the reading through `serde_yaml_ng::Value`s it must agree with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revplane::source::manifest::{parse, parse_through_values};

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data, "revplane-mesh-fuzz");
    assert_eq!(parsed, parse_through_values(data, "revplane-mesh-fuzz"));
    match parsed {
        Ok(_) => assert!(std::str::from_utf8(data).is_ok(), "non-UTF-8 bytes were taken"),
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a reason");
            for error in &errors {
                assert!(!error.reason.is_empty());
            }
        }
    }
});
