//! gRPC message framing of ADS, by hand: requests are decoded from the HTTP/2 body with
//! prost; responses go out as a small per-stream head and the snapshot's shared body.
//!
//! A response is one length-prefixed `DiscoveryResponse` in two chunks: the prefix and the
//! per-stream fields (`version_info`, `type_url`, `nonce`, `control_plane`), then the
//! concatenated `resources` entries shared with every other stream (protobuf fields may come
//! in any order). Nothing of the resources is copied or re-encoded per stream, and no
//! per-stream encode buffer grows to the size of the largest response.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use tonic::Status;

/// Bytes before every gRPC message: compressed flag and big-endian length.
const PREFIX: usize = 5;

/// The per-stream part of a response, framed: gRPC prefix (whose length covers `body_len`
/// more bytes) and the response's own fields.
pub fn response_head(
    version: &str,
    type_url: &str,
    nonce: &str,
    control_plane: &str,
    body_len: usize,
) -> Bytes {
    let fields = DiscoveryResponse {
        version_info: version.to_string(),
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        control_plane: Some(ControlPlane {
            identifier: control_plane.to_string(),
        }),
        ..Default::default()
    };
    let len = fields.encoded_len();
    let mut head = BytesMut::with_capacity(PREFIX + len);
    head.put_u8(0);
    head.put_u32(u32::try_from(len + body_len).expect("a response under 4 GiB"));
    fields
        .encode(&mut head)
        .expect("capacity reserved for the fields");
    head.freeze()
}

/// Splits a request body into `DiscoveryRequest`s.
#[derive(Debug)]
pub struct RequestDecoder {
    /// Bytes of an incomplete message (empty and unallocated between messages).
    partial: BytesMut,
    max_message: usize,
}

impl RequestDecoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        RequestDecoder {
            partial: BytesMut::new(),
            max_message,
        }
    }

    /// Adds a chunk of the body.
    pub fn push(&mut self, chunk: Bytes) {
        self.partial.extend_from_slice(&chunk);
    }

    /// The next complete request, if one is buffered.
    pub fn next_request(&mut self) -> Result<Option<DiscoveryRequest>, Status> {
        if self.partial.len() < PREFIX {
            return Ok(None);
        }
        let compressed = self.partial[0];
        let len = u32::from_be_bytes(self.partial[1..PREFIX].try_into().expect("4 bytes")) as usize;
        if compressed != 0 {
            return Err(Status::unimplemented(
                "compressed DiscoveryRequest messages are not supported; disable gRPC compression",
            ));
        }
        if len > self.max_message {
            return Err(Status::out_of_range(format!(
                "DiscoveryRequest of {len} bytes is over the limit of {} bytes",
                self.max_message
            )));
        }
        if self.partial.len() < PREFIX + len {
            return Ok(None);
        }
        self.partial.advance(PREFIX);
        let message = self.partial.split_to(len).freeze();
        if self.partial.is_empty() {
            // Give back the capacity: an idle stream holds no buffer.
            self.partial = BytesMut::new();
        }
        DiscoveryRequest::decode(message)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed DiscoveryRequest: {e}")))
    }

    /// Checks the body ended between messages.
    pub fn finish(&self) -> Result<(), Status> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(Status::invalid_argument(
                "the request stream ended inside a DiscoveryRequest",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn framed(request: &DiscoveryRequest) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(0);
        out.put_u32(request.encoded_len() as u32);
        request.encode(&mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn head_and_shared_body_decode_as_one_response() {
        let body = DiscoveryResponse {
            resources: vec![
                Any {
                    type_url: "t".into(),
                    value: b"one".to_vec(),
                },
                Any {
                    type_url: "t".into(),
                    value: b"two".to_vec(),
                },
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let head = response_head("v1", "t", "7", "revplane/canary", body.len());
        let mut message = head.to_vec();
        message.extend_from_slice(&body);
        assert_eq!(message[0], 0);
        let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, message.len() - 5);
        let response = DiscoveryResponse::decode(&message[5..]).unwrap();
        assert_eq!(response.version_info, "v1");
        assert_eq!(response.nonce, "7");
        assert_eq!(response.type_url, "t");
        assert_eq!(
            response.control_plane.unwrap().identifier,
            "revplane/canary"
        );
        assert_eq!(response.resources.len(), 2);
        assert_eq!(response.resources[1].value, b"two");
    }

    #[test]
    fn requests_split_across_chunks_and_packed_together_are_decoded() {
        let a = DiscoveryRequest {
            type_url: "a".into(),
            ..Default::default()
        };
        let b = DiscoveryRequest {
            type_url: "b".into(),
            resource_names: vec!["x".into(); 100],
            ..Default::default()
        };
        let mut wire = framed(&a).to_vec();
        wire.extend_from_slice(&framed(&b));
        let mut decoder = RequestDecoder::new(1 << 20);
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            decoder.push(Bytes::copy_from_slice(chunk));
            while let Some(request) = decoder.next_request().unwrap() {
                got.push(request);
            }
        }
        assert_eq!(got, [a, b]);
        decoder.finish().unwrap();
        assert_eq!(
            decoder.partial.capacity(),
            0,
            "no buffer kept between messages"
        );
    }

    #[test]
    fn oversized_compressed_garbled_and_truncated_requests_are_refused() {
        let mut decoder = RequestDecoder::new(10);
        decoder.push(Bytes::from_static(&[0, 0, 0, 0, 11]));
        assert_eq!(
            decoder.next_request().unwrap_err().code(),
            tonic::Code::OutOfRange
        );

        let mut decoder = RequestDecoder::new(10);
        decoder.push(Bytes::from_static(&[1, 0, 0, 0, 1, 0]));
        assert_eq!(
            decoder.next_request().unwrap_err().code(),
            tonic::Code::Unimplemented
        );

        let mut decoder = RequestDecoder::new(10);
        decoder.push(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]));
        let status = decoder.next_request().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("malformed DiscoveryRequest"));

        let mut decoder = RequestDecoder::new(10);
        decoder.push(Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a]));
        assert!(decoder.next_request().unwrap().is_none());
        assert_eq!(
            decoder.finish().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
