//! A proxy's `Node` as it arrives in the first DiscoveryRequest (protobuf), read by the
//! revision gate: `REVISION` and the other metadata. Must never panic, and must refuse or
//! admit exactly as `identity_of` decides.
#![no_main]

use envoy_types::pb::envoy::config::core::v3::Node;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use revplane::revision::{identity_of, RevisionGate};

fuzz_target!(|data: &[u8]| {
    let Ok(node) = Node::decode(data) else {
        return;
    };
    let identity = identity_of(&node);
    let gate = RevisionGate::new("canary".parse().expect("a valid revision"));
    let admitted = gate.admit(Some(&node));
    match (&identity, &admitted) {
        (Ok(id), Ok(admitted)) => {
            assert_eq!(id.revision.as_str(), "canary");
            assert_eq!(id, admitted);
        }
        (Ok(id), Err(rejection)) => {
            assert_ne!(id.revision.as_str(), "canary");
            let _ = rejection.to_status();
        }
        (Err(rejection), Err(_)) => {
            let _ = rejection.to_status();
        }
        (Err(e), Ok(_)) => panic!("admitted a node whose identity is refused: {e}"),
    }
});
