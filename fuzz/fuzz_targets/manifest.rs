//! A manifest file's bytes, as the directory source parses them
//! (`revplane::source::manifest::parse`): the YAML nesting check, every document parsed, each
//! Kubernetes object converted (Namespace, Service, EndpointSlice, the revision's mesh-config
//! ConfigMap). Must never panic and never take long (libFuzzer's `-timeout` catches a
//! freeze); a bad document is an error for that document, never a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revplane::source::manifest::parse;

fuzz_target!(|data: &[u8]| {
    match parse(data, "revplane-mesh-fuzz") {
        Ok(_) => assert!(std::str::from_utf8(data).is_ok(), "non-UTF-8 bytes were taken"),
        Err(errors) => {
            assert!(!errors.is_empty(), "an error without a reason");
            for error in &errors {
                assert!(!error.reason.is_empty());
            }
        }
    }
});
