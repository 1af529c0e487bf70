//! The ADS request body as the server reads it before and after the revision gate: gRPC
//! length-prefixed `DiscoveryRequest`s (`revplane::xds::request::RequestDecoder`), cut into
//! chunks as HTTP/2 DATA frames cut them. Must never panic, never return a message over its
//! limit (the first one has a lower limit), decode the same whatever the chunking, read what
//! prost reads (each request is read in place, its names left in the message), and give back
//! every byte of the shared request budget once the stream is done.
#![no_main]

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use libfuzzer_sys::fuzz_target;
use prometheus_client::metrics::gauge::Gauge;
use revplane::xds::request::{Request, RequestBudget, RequestLimits};

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
                Ok(Some(request)) => out.push(read(&request)),
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

/// The request as the server reads it, checked against prost's decoding of the same bytes
/// where prost accepts them (the server skips fields it never reads, which prost checks).
fn read(request: &Request) -> DiscoveryRequest {
    let names = request.names();
    let read = DiscoveryRequest {
        version_info: request.version_info.clone(),
        node: request.node.clone(),
        resource_names: names
            .as_ref()
            .map(|n| n.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        type_url: request.type_url.clone(),
        response_nonce: request.response_nonce.clone(),
        error_detail: request.error_detail.clone(),
        ..Default::default()
    };
    if let Ok(prost) = request.to_discovery_request() {
        assert!(names.is_ok(), "prost read names the server refused");
        assert_eq!(read.version_info, prost.version_info);
        assert_eq!(read.node, prost.node);
        assert_eq!(read.resource_names, prost.resource_names);
        assert_eq!(read.type_url, prost.type_url);
        assert_eq!(read.response_nonce, prost.response_nonce);
        assert_eq!(read.error_detail, prost.error_detail);
        assert_eq!(request.names_count(), prost.resource_names.len());
    }
    read
}
