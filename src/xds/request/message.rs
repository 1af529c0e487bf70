//! A `DiscoveryRequest` read in place: the few short fields the server needs are taken out,
//! the subscribed names are left in the message and summed up as a count and a fingerprint.
//!
//! A proxy repeats its whole subscription in every request, and an ACK is nearly all of it:
//! Envoy's EDS ACK on a 1,000-service mesh names 1,000 assignments (~60 KB). Decoded the
//! ordinary way that is 1,000 strings allocated, checked as UTF-8, sorted and compared per ACK,
//! only to learn that nothing changed. Here the names' bytes are hashed where they lie
//! (xxh3-128, one pass, no allocation); the stream compares the fingerprint with its previous
//! request's and reads the names — checking them as UTF-8 then — only when it differs.
//!
//! Fields are read as prost reads them: the last occurrence of a string wins, occurrences of a
//! message merge, repeated names keep their order, unknown fields are skipped, and a wrong wire
//! type, a bad length or invalid UTF-8 in a field read is an error.

use bytes::{Buf, Bytes};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;
use xxhash_rust::xxh3::Xxh3;

/// Field numbers of `DiscoveryRequest`.
const VERSION_INFO: u32 = 1;
const NODE: u32 = 2;
const RESOURCE_NAMES: u32 = 3;
const TYPE_URL: u32 = 4;
const RESPONSE_NONCE: u32 = 5;
const ERROR_DETAIL: u32 = 6;

/// The key of a `resource_names` field (field 3, length-delimited) as its one byte.
const NAME_KEY: u8 = (RESOURCE_NAMES as u8) << 3 | 2;

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<prost::DecodeError> for Malformed {
    fn from(e: prost::DecodeError) -> Self {
        Malformed(e.to_string())
    }
}

/// The subscribed names of a request, summed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NamesSummary {
    count: usize,
    hash: u128,
}

/// One `DiscoveryRequest`, with its names left in the message.
#[derive(Clone, Debug)]
pub struct Request {
    message: Bytes,
    /// `version_info`.
    pub version_info: String,
    /// `node`, when the request carries one (Envoy sends it in the first request only).
    pub node: Option<Node>,
    /// `type_url`.
    pub type_url: String,
    /// `response_nonce`.
    pub response_nonce: String,
    /// `error_detail`, on a NACK.
    pub error_detail: Option<RpcStatus>,
    names: NamesSummary,
}

impl Request {
    /// Reads `message` (one `DiscoveryRequest`, without its gRPC prefix).
    pub fn parse(message: Bytes) -> Result<Request, Malformed> {
        let mut request = Request {
            message: Bytes::new(),
            version_info: String::new(),
            node: None,
            type_url: String::new(),
            response_nonce: String::new(),
            error_detail: None,
            names: NamesSummary::default(),
        };
        let mut names = NamesHasher::default();
        let total = message.len();
        let mut buf: &[u8] = &message;
        while buf.has_remaining() {
            let field_start = total - buf.len();
            let (tag, wire_type) = decode_key(&mut buf)?;
            if !(VERSION_INFO..=ERROR_DETAIL).contains(&tag) {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default())?;
                continue;
            }
            if wire_type != WireType::LengthDelimited {
                return Err(Malformed(format!(
                    "DiscoveryRequest field {tag}: invalid wire type {wire_type:?} (expected \
                     LengthDelimited)"
                )));
            }
            let len = decode_varint(&mut buf)?;
            if len > buf.len() as u64 {
                return Err(Malformed(format!(
                    "DiscoveryRequest field {tag}: length {len} past the end of the message"
                )));
            }
            let (body, rest) = buf.split_at(len as usize);
            buf = rest;
            match tag {
                VERSION_INFO => request.version_info = text(tag, body)?,
                TYPE_URL => request.type_url = text(tag, body)?,
                RESPONSE_NONCE => request.response_nonce = text(tag, body)?,
                NODE => request.node.get_or_insert_with(Node::default).merge(body)?,
                ERROR_DETAIL => request
                    .error_detail
                    .get_or_insert_with(RpcStatus::default)
                    .merge(body)?,
                RESOURCE_NAMES => {
                    // The rest of a run of short names (nearly every name: one-byte key and
                    // length), stepped over without the general field decoding.
                    let mut count = 1;
                    while let [NAME_KEY, len, rest @ ..] = buf {
                        let len = *len as usize;
                        if len >= 0x80 || len > rest.len() {
                            break;
                        }
                        buf = &rest[len..];
                        count += 1;
                    }
                    names.add(&message, field_start, total - buf.len(), count)
                }
                _ => unreachable!("tags 1 to 6 are matched above"),
            }
        }
        request.names = names.finish(&message);
        request.message = message;
        Ok(request)
    }

    /// A 128-bit hash of the subscribed names: equal for the same names in the same order,
    /// different otherwise short of a hash collision.
    pub fn names_fingerprint(&self) -> u128 {
        self.names.hash
    }

    /// Number of subscribed names.
    pub fn names_count(&self) -> usize {
        self.names.count
    }

    /// The subscribed names, in the request's order, each checked as UTF-8.
    pub fn names(&self) -> Result<Vec<&str>, Malformed> {
        let mut names = Vec::with_capacity(self.names.count);
        let mut buf: &[u8] = &self.message;
        while buf.has_remaining() {
            // The message was read whole in `parse`: keys and lengths are known to be good.
            let (tag, wire_type) = decode_key(&mut buf)?;
            if tag != RESOURCE_NAMES {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default())?;
                continue;
            }
            let len = decode_varint(&mut buf)? as usize;
            let (body, rest) = buf.split_at(len);
            buf = rest;
            names.push(
                std::str::from_utf8(body).map_err(|_| {
                    Malformed("DiscoveryRequest.resource_names: invalid UTF-8".into())
                })?,
            );
        }
        Ok(names)
    }

    /// Size of the message in bytes.
    pub fn encoded_len(&self) -> usize {
        self.message.len()
    }

    /// The whole message, decoded the ordinary way (for tests and tools).
    pub fn to_discovery_request(&self) -> Result<DiscoveryRequest, prost::DecodeError> {
        DiscoveryRequest::decode(self.message.clone())
    }
}

fn text(tag: u32, body: &[u8]) -> Result<String, Malformed> {
    String::from_utf8(body.to_vec())
        .map_err(|_| Malformed(format!("DiscoveryRequest field {tag}: invalid UTF-8")))
}

/// Hashes the names' fields (key, length and bytes) as one sequence: runs of adjacent fields
/// (nearly always one run: a client writes its names together) go to the hasher in one call.
#[derive(Default)]
struct NamesHasher {
    count: usize,
    run: Option<(usize, usize)>,
    hasher: Option<Box<Xxh3>>,
}

impl NamesHasher {
    /// Adds `count` adjacent name fields, `message[start..end]`.
    fn add(&mut self, message: &[u8], start: usize, end: usize, count: usize) {
        self.count += count;
        match &mut self.run {
            Some((_, run_end)) if *run_end == start => *run_end = end,
            Some((run_start, run_end)) => {
                let (s, e) = (*run_start, *run_end);
                self.hasher
                    .get_or_insert_with(|| Box::new(Xxh3::new()))
                    .update(&message[s..e]);
                self.run = Some((start, end));
            }
            None => self.run = Some((start, end)),
        }
    }

    fn finish(self, message: &[u8]) -> NamesSummary {
        let last = self.run.map_or(&[][..], |(s, e)| &message[s..e]);
        let hash = match self.hasher {
            None => xxhash_rust::xxh3::xxh3_128(last),
            Some(mut hasher) => {
                hasher.update(last);
                hasher.digest128()
            }
        };
        NamesSummary {
            count: self.count,
            hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

    fn request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
                metadata: Some(Struct {
                    fields: [(
                        "REVISION".to_string(),
                        Value {
                            kind: Some(Kind::StringValue("canary".into())),
                        },
                    )]
                    .into(),
                }),
                ..Default::default()
            }),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        }
    }

    fn parse(request: &DiscoveryRequest) -> Request {
        Request::parse(request.encode_to_vec().into()).unwrap()
    }

    #[test]
    fn reads_what_prost_reads() {
        let original = request(&["b", "a", "c"]);
        let r = parse(&original);
        assert_eq!(r.version_info, "v1");
        assert_eq!(r.type_url, original.type_url);
        assert_eq!(r.response_nonce, "7");
        assert_eq!(r.node, original.node);
        assert_eq!(r.error_detail, original.error_detail);
        assert_eq!(r.names().unwrap(), ["b", "a", "c"]);
        assert_eq!(r.names_count(), 3);
        assert_eq!(r.to_discovery_request().unwrap(), original);
    }

    #[test]
    fn the_fingerprint_tells_name_lists_apart() {
        let fp = |names: &[&str]| parse(&request(names)).names_fingerprint();
        assert_eq!(fp(&["a", "b"]), fp(&["a", "b"]));
        assert_ne!(
            fp(&["a", "b"]),
            fp(&["b", "a"]),
            "order is part of the list"
        );
        assert_ne!(
            fp(&["ab"]),
            fp(&["a", "b"]),
            "boundaries are part of the list"
        );
        assert_ne!(fp(&["a"]), fp(&["a", "a"]));
        assert_ne!(fp(&[]), fp(&[""]));
        // Other fields do not move it.
        let mut other = request(&["a", "b"]);
        other.response_nonce = "8".into();
        other.version_info = "v2".into();
        assert_eq!(parse(&other).names_fingerprint(), fp(&["a", "b"]));
    }

    #[test]
    fn names_split_by_other_fields_hash_as_if_together() {
        // Names interleaved with other fields (legal protobuf) read as one list.
        let mut bytes = Vec::new();
        prost::encoding::string::encode(RESOURCE_NAMES, &"a".to_string(), &mut bytes);
        prost::encoding::string::encode(RESPONSE_NONCE, &"1".to_string(), &mut bytes);
        prost::encoding::string::encode(RESOURCE_NAMES, &"b".to_string(), &mut bytes);
        let split = Request::parse(bytes.into()).unwrap();
        let together = parse(&DiscoveryRequest {
            resource_names: vec!["a".into(), "b".into()],
            ..Default::default()
        });
        assert_eq!(split.names().unwrap(), ["a", "b"]);
        assert_eq!(split.names_fingerprint(), together.names_fingerprint());
        assert_eq!(split.response_nonce, "1");
    }

    #[test]
    fn runs_of_short_and_long_names_are_all_counted() {
        // Names of 127 bytes or less are stepped over in a run; longer ones (a two-byte
        // length) end the run and are read the general way, and a new run starts after.
        let long = "x".repeat(128);
        let longer = "y".repeat(300);
        let names = ["a", &"b".repeat(127), &long, "c", "d", &longer, "", "e"];
        let r = parse(&request(&names));
        assert_eq!(r.names_count(), names.len());
        assert_eq!(r.names().unwrap(), names);
        // A name cut short after a run of good ones is an error.
        assert!(Request::parse(Bytes::from_static(&[0x1a, 1, b'a', 0x1a, 5, b'b'])).is_err());
    }

    #[test]
    fn repeated_fields_follow_protobuf_rules() {
        let mut bytes = Vec::new();
        prost::encoding::string::encode(VERSION_INFO, &"old".to_string(), &mut bytes);
        prost::encoding::string::encode(VERSION_INFO, &"new".to_string(), &mut bytes);
        let node = |id: &str, cluster: &str| Node {
            id: id.into(),
            cluster: cluster.into(),
            ..Default::default()
        };
        prost::encoding::message::encode(NODE, &node("a", ""), &mut bytes);
        prost::encoding::message::encode(NODE, &node("", "c"), &mut bytes);
        let r = Request::parse(bytes.clone().into()).unwrap();
        let prost = DiscoveryRequest::decode(&bytes[..]).unwrap();
        assert_eq!(r.version_info, "new");
        assert_eq!(r.node, prost.node);
        assert_eq!(r.node.unwrap().cluster, "c");
    }

    #[test]
    fn bad_input_is_refused() {
        // A name that is not UTF-8 is found when the names are read.
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(RESOURCE_NAMES, &vec![0xff, 0xfe], &mut bytes);
        let r = Request::parse(bytes.into()).unwrap();
        assert!(r.names().unwrap_err().0.contains("UTF-8"));
        // A string field read at once.
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(TYPE_URL, &vec![0xff], &mut bytes);
        assert!(Request::parse(bytes.into()).is_err());
        // A wrong wire type, a length past the end, a truncated key.
        assert!(Request::parse(Bytes::from_static(&[0x08, 0x01])).is_err());
        assert!(Request::parse(Bytes::from_static(&[0x1a, 0x05, b'a'])).is_err());
        assert!(Request::parse(Bytes::from_static(&[0x80])).is_err());
        // Unknown fields are skipped, as prost does.
        assert!(Request::parse(Bytes::from_static(&[0x50, 0x01, 0x22, 0x01, b't'])).is_ok());
    }
}
