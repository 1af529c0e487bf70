//! The ADS request body as the server reads it before and after the revision gate: gRPC
//! length-prefixed `DiscoveryRequest`s (`revplane::xds::request::RequestDecoder`), cut into
//! chunks as HTTP/2 DATA frames cut them. Must never panic, never return a message over its
//! limit (the first one has a lower limit), decode the same whatever the chunking, and give
//! back every byte of the shared request budget once the stream is done.
#![no_main]

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use libfuzzer_sys::fuzz_target;
use prometheus_client::metrics::gauge::Gauge;
use revplane::xds::request::{RequestBudget, RequestLimits};

/// Small, so that the limits are hit as often as not.
const FIRST: usize = 256;
const MAX: usize = 512;

/// Every request decoded, then the first error (its status code and message) or how the body
/// ended (compared by value: a Debug string of the node's metadata map has no fixed order).
fn decode(chunks: &[&[u8]]) -> (Vec<DiscoveryRequest>, String) {
    let budget = RequestBudget::new(1 << 20, Gauge::default());
    let limits = RequestLimits {
        first: FIRST,
        max: MAX,
        budget: budget.clone(),
    };
    let mut decoder = limits.decoder();
    let mut out = Vec::new();
    let mut end = None;
    'chunks: for chunk in chunks {
        decoder.push(Bytes::copy_from_slice(chunk));
        loop {
            match decoder.next_request() {
                Ok(Some(request)) => out.push(request),
                Ok(None) => break,
                Err(e) => {
                    let status = e.to_status();
                    assert!(status.message().len() <= 400, "{}", status.message());
                    end = Some(format!("{:?}: {}", status.code(), status.message()));
                    break 'chunks;
                }
            }
        }
    }
    let end = end.unwrap_or_else(|| format!("{:?}", decoder.finish().map_err(|e| e.to_string())));
    drop(decoder);
    assert_eq!(budget.in_use(), 0, "the stream kept request budget");
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
