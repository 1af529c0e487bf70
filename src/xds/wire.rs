//! gRPC message framing of ADS responses, by hand: a small per-stream head and the snapshot's
//! shared body (requests are decoded in [`super::request`]).
//!
//! A response is one length-prefixed `DiscoveryResponse` in two chunks: the prefix and the
//! per-stream fields (`version_info`, `type_url`, `nonce`, `control_plane`), then the
//! concatenated `resources` entries shared with every other stream (protobuf fields may come
//! in any order). Nothing of the resources is copied or re-encoded per stream, and no
//! per-stream encode buffer grows to the size of the largest response.

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message;

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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

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
}
