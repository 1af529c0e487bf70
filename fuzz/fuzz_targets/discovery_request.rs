//! The ADS request body: gRPC length-prefixed `DiscoveryRequest`s, cut into chunks as HTTP/2
//! DATA frames cut them. Must never panic, never return a message over the limit, and decode
//! the same whatever the chunking.
#![no_main]

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use libfuzzer_sys::fuzz_target;
use revplane::xds::wire::RequestDecoder;

/// Small, so that the limit is hit as often as not.
const MAX: usize = 512;

/// Every request decoded, then the first error (its code and message) or how the body ended
/// (compared by value: a Debug string of the node's metadata map has no fixed order).
fn decode(chunks: &[&[u8]]) -> (Vec<DiscoveryRequest>, String) {
    let mut decoder = RequestDecoder::new(MAX);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(Bytes::copy_from_slice(chunk));
        loop {
            match decoder.next_request() {
                Ok(Some(request)) => out.push(request),
                Ok(None) => break,
                Err(status) => {
                    assert!(status.message().len() <= 300, "{}", status.message());
                    return (out, format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
    let end = format!("{:?}", decoder.finish().map_err(|s| s.code()));
    (out, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = decode(&[body]);
    let step = usize::from(cut % 16) + 1;
    let chunks: Vec<&[u8]> = body.chunks(step).collect();
    assert_eq!(whole, decode(&chunks), "chunks of {step} bytes");
});
