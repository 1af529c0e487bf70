//! An AdmissionReview body as the API server posts it to the injection webhook: decoded
//! (a Pod CREATE whole, anything else only as far as needed) and answered. Must never panic;
//! a malformed body gets a 400 whose message echoes a bounded piece of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use revplane::inject::{decode_review, Review};

fuzz_target!(|data: &[u8]| {
    match decode_review(data) {
        Ok(Review::PodCreate(request)) => {
            assert!(request.object.is_some());
            let review = kube::core::admission::AdmissionResponse::from(&*request).into_review();
            serde_json::to_vec(&review).expect("a review encodes");
        }
        Ok(Review::Other(request)) => {
            let review = kube::core::admission::AdmissionResponse::from(&*request).into_review();
            serde_json::to_vec(&review).expect("a review encodes");
        }
        Err(message) => assert!(
            message.len() <= 400,
            "the 400's message echoes at most a bounded piece: {} bytes",
            message.len()
        ),
    }
});
