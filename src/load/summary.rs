//! The parts of a `DiscoveryResponse` a simulated proxy reads: the names of the resources,
//! and of a listener the route configurations it names (to subscribe to RDS as Envoy does).
//! Read by hand from the chunks the response came in: a resource is a slice of its chunk,
//! and one larger than [`WHOLE`] (a route configuration of 10,000 virtual hosts is 5 MB) is
//! kept as the chunks it spans, never copied into one buffer; names stay bytes where they
//! lie until a subscription needs new ones.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::chunks::Chunks;
use super::names::{Answered, NameList, NameLists};

/// Resources up to this size are held as one buffer (a slice of their chunk, or a copy of
/// the little that straddles two chunks); larger ones as the chunks they span.
const WHOLE: usize = 64 * 1024;

/// A response, reduced to what a simulated proxy reads.
#[derive(Debug, Default)]
pub(super) struct ResponseSummary {
    /// The response's length on the wire (without the gRPC prefix).
    pub encoded_len: usize,
    pub version_info: String,
    pub resources: Vec<AnySummary>,
    pub type_url: String,
    pub nonce: String,
}

impl ResponseSummary {
    /// Reads an encoded `DiscoveryResponse`; fields a proxy does not read are skipped.
    pub fn read(mut buf: Chunks) -> Result<ResponseSummary, Malformed> {
        let mut out = ResponseSummary {
            encoded_len: buf.remaining(),
            ..Default::default()
        };
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match (tag, wire_type) {
                (1, WireType::LengthDelimited) => out.version_info = string(&mut buf)?,
                (2, WireType::LengthDelimited) => {
                    let len = length(&mut buf)?;
                    out.resources.push(AnySummary::read(&mut buf, len)?);
                }
                (4, WireType::LengthDelimited) => out.type_url = string(&mut buf)?,
                (5, WireType::LengthDelimited) => out.nonce = string(&mut buf)?,
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(out)
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub(super) enum Malformed {
    Decode(DecodeError),
    /// A length runs past the end of what holds it.
    Underflow,
    /// A string field that is not UTF-8.
    NotUtf8,
}

impl From<DecodeError> for Malformed {
    fn from(e: DecodeError) -> Self {
        Malformed::Decode(e)
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Decode(e) => e.fmt(f),
            Malformed::Underflow => f.write_str("a length runs past the end of its message"),
            Malformed::NotUtf8 => f.write_str("a string field is not UTF-8"),
        }
    }
}

/// A length prefix, checked against what is left.
fn length(buf: &mut impl Buf) -> Result<usize, Malformed> {
    let len = decode_varint(buf)?;
    match usize::try_from(len) {
        Ok(len) if len <= buf.remaining() => Ok(len),
        _ => Err(Malformed::Underflow),
    }
}

/// A length-delimited UTF-8 string.
fn string(buf: &mut impl Buf) -> Result<String, Malformed> {
    let mut bytes = vec![0; length(buf)?];
    buf.copy_to_slice(&mut bytes);
    String::from_utf8(bytes).map_err(|_| Malformed::NotUtf8)
}

/// Moves `buf` to the bytes of the first length-delimited field numbered `number` of the
/// encoded message it holds and returns their length, skipping the fields before it;
/// `None` when there is no such field.
fn find(buf: &mut impl Buf, number: u32) -> Result<Option<usize>, Malformed> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(buf)?;
        if (tag, wire_type) == (number, WireType::LengthDelimited) {
            return length(buf).map(Some);
        }
        skip_field(wire_type, tag, buf, DecodeContext::default())?;
    }
    Ok(None)
}

/// An `Any`'s value (the encoded resource), without its type URL.
#[derive(Debug)]
pub(super) struct AnySummary {
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// One buffer: a slice of the chunk the resource came in, or a copy when it straddled
    /// two (it is at most [`WHOLE`] bytes).
    Whole(Bytes),
    /// A large resource, as the chunks it spans, with its name copied out.
    Parts { name: Option<Bytes>, value: Chunks },
}

impl AnySummary {
    /// Reads the `Any` of `len` bytes at the front of `buf`: its value is field 2.
    fn read(buf: &mut Chunks, len: usize) -> Result<AnySummary, Malformed> {
        if len <= WHOLE {
            let any = buf.copy_to_bytes(len);
            let mut fields = &any[..];
            let value = match find(&mut fields, 2)? {
                Some(len) => any.slice_ref(&fields[..len]),
                None => Bytes::new(),
            };
            return Ok(AnySummary {
                value: Value::Whole(value),
            });
        }
        let mut any = buf.split_to(len);
        let value = match find(&mut any, 2)? {
            Some(len) => any.split_to(len),
            None => Chunks::default(),
        };
        let mut front = value.clone();
        let name = field_one(&mut front).map(|len| front.copy_to_bytes(len));
        Ok(AnySummary {
            value: Value::Parts { name, value },
        })
    }

    /// The resource's name, read where it lies: field 1 of a Cluster,
    /// ClusterLoadAssignment, Listener and RouteConfiguration alike. `None` when the value
    /// has no such field or is malformed before it.
    pub fn name(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Whole(value) => {
                let mut buf = &value[..];
                field_one(&mut buf).map(|len| &buf[..len])
            }
            Value::Parts { name, .. } => name.as_deref(),
        }
    }

    /// The resource decoded as `M` (a summary message: prost skips what it does not name).
    fn decode<M: Message + Default>(&self) -> Result<M, DecodeError> {
        match &self.value {
            Value::Whole(value) => M::decode(value.clone()),
            Value::Parts { value, .. } => M::decode(value.clone()),
        }
    }

    #[cfg(test)]
    fn whole(value: Vec<u8>) -> AnySummary {
        AnySummary {
            value: Value::Whole(value.into()),
        }
    }
}

/// [`find`] for field 1, the name of every resource type (encoders write fields in order, so
/// it is usually first); `None` also when the message is malformed before it.
fn field_one(buf: &mut impl Buf) -> Option<usize> {
    find(buf, 1).ok().flatten()
}

/// A Cluster's name, discovery type and EDS service name.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterSummary {
    #[prost(bytes = "bytes", tag = "1")]
    name: Bytes,
    #[prost(int32, tag = "2")]
    discovery_type: i32,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsSummary {
    #[prost(bytes = "bytes", tag = "2")]
    service_name: Bytes,
}

/// `Cluster.DiscoveryType.EDS`.
const EDS_TYPE: i32 = 3;

/// The assignments the EDS clusters of a CDS response need, sorted (as Envoy asks: only
/// EDS clusters, by their service name), as slices of the response.
pub(super) fn assignment_names(clusters: &[AnySummary]) -> Vec<Bytes> {
    let mut names: Vec<Bytes> = clusters
        .iter()
        .filter_map(|any| any.decode::<ClusterSummary>().ok())
        .filter(|c| c.discovery_type == EDS_TYPE)
        .map(|c| match c.eds {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name,
            _ => c.name,
        })
        .filter(|name| std::str::from_utf8(name).is_ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A Listener's filter chains, default chain and API listener.
#[derive(Clone, PartialEq, prost::Message)]
struct ListenerRoutes {
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<ChainSummary>,
    #[prost(message, optional, tag = "19")]
    api_listener: Option<ApiListenerSummary>,
    #[prost(message, optional, tag = "25")]
    default_filter_chain: Option<ChainSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChainSummary {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<FilterSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FilterSummary {
    #[prost(message, optional, tag = "4")]
    typed_config: Option<TypedSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ApiListenerSummary {
    #[prost(message, optional, tag = "1")]
    api_listener: Option<TypedSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypedSummary {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// An HttpConnectionManager's `rds`.
#[derive(Clone, PartialEq, prost::Message)]
struct HcmRoutes {
    #[prost(message, optional, tag = "3")]
    rds: Option<RdsSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RdsSummary {
    #[prost(bytes = "bytes", tag = "2")]
    route_config_name: Bytes,
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The route configurations the listeners of an LDS response name over RDS, sorted.
pub(super) fn route_names(listeners: &[AnySummary]) -> Vec<Bytes> {
    let mut names: Vec<Bytes> = Vec::new();
    for any in listeners {
        let Ok(l) = any.decode::<ListenerRoutes>() else {
            continue;
        };
        let chains = l.filter_chains.iter().chain(&l.default_filter_chain);
        let typed = chains
            .flat_map(|c| &c.filters)
            .filter_map(|f| f.typed_config.as_ref())
            .chain(
                l.api_listener
                    .iter()
                    .filter_map(|a| a.api_listener.as_ref()),
            );
        for t in typed.filter(|t| t.type_url == HCM) {
            if let Ok(HcmRoutes { rds: Some(rds) }) = HcmRoutes::decode(t.value.clone()) {
                if std::str::from_utf8(&rds.route_config_name).is_ok() {
                    names.push(rds.route_config_name);
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// An EDS or RDS subscription of a simulated proxy: the names it asked for (a list shared
/// by the run's proxies) and which of them were answered.
#[derive(Debug, Default)]
pub(super) struct Subscription {
    /// Subscribed names.
    pub list: Arc<NameList>,
    answered: Answered,
    nonce: String,
    version: String,
}

impl Subscription {
    /// The request that subscribes to `names` (sorted), if they differ from the current ones;
    /// it goes out with [`Self::list`] as its names.
    pub fn wants(
        &mut self,
        names: Vec<Bytes>,
        type_url: &str,
        lists: &NameLists,
    ) -> Option<DiscoveryRequest> {
        if self.list.holds(&names) {
            return None;
        }
        let list = lists.intern(names);
        self.answered = self.answered.carry_over(&self.list, &list);
        self.list = list;
        Some(DiscoveryRequest {
            type_url: type_url.to_string(),
            version_info: self.version.clone(),
            response_nonce: self.nonce.clone(),
            ..Default::default()
        })
    }

    /// Records a response to the subscription, naming `names`.
    pub fn answered<'a>(
        &mut self,
        response: &ResponseSummary,
        names: impl Iterator<Item = &'a [u8]>,
    ) {
        self.nonce.clone_from(&response.nonce);
        self.version.clone_from(&response.version_info);
        for name in names {
            self.answered.mark(&self.list, name);
        }
    }

    /// Every subscribed name was answered.
    pub fn complete(&self) -> bool {
        self.answered.all(&self.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::encoding::{encode_key, encode_varint, WireType};

    fn any(value: Vec<u8>) -> AnySummary {
        AnySummary::whole(value)
    }

    #[test]
    fn a_resource_name_is_read_where_it_lies() {
        let cluster = Cluster {
            name: "outbound|80||a.ns.svc.cluster.local".into(),
            alt_stat_name: "other".into(),
            ..Default::default()
        };
        assert_eq!(
            any(cluster.encode_to_vec()).name(),
            Some(&b"outbound|80||a.ns.svc.cluster.local"[..])
        );
        let assignment = ClusterLoadAssignment {
            cluster_name: "b".into(),
            ..Default::default()
        };
        assert_eq!(any(assignment.encode_to_vec()).name(), Some(&b"b"[..]));
    }

    #[test]
    fn fields_before_the_name_are_skipped_and_a_malformed_value_has_no_name() {
        // A varint, a fixed64, a fixed32 and another length-delimited field, then the name.
        let mut value = Vec::new();
        encode_key(2, WireType::Varint, &mut value);
        encode_varint(300, &mut value);
        encode_key(3, WireType::SixtyFourBit, &mut value);
        value.extend_from_slice(&[0; 8]);
        encode_key(4, WireType::ThirtyTwoBit, &mut value);
        value.extend_from_slice(&[0; 4]);
        encode_key(5, WireType::LengthDelimited, &mut value);
        encode_varint(2, &mut value);
        value.extend_from_slice(b"xy");
        encode_key(1, WireType::LengthDelimited, &mut value);
        encode_varint(4, &mut value);
        value.extend_from_slice(b"name");
        assert_eq!(any(value.clone()).name(), Some(&b"name"[..]));
        // Cut inside the name: its length runs past the end.
        value.truncate(value.len() - 1);
        assert_eq!(any(value).name(), None);
        assert_eq!(any(Vec::new()).name(), None, "no field 1");
    }

    /// `wire` as it arrives: in chunks of `size` bytes.
    fn chunked(wire: &[u8], size: usize) -> Chunks {
        let wire = Bytes::copy_from_slice(wire);
        let mut chunks = Chunks::default();
        for piece in wire.chunks(size) {
            chunks.push(wire.slice_ref(piece));
        }
        chunks
    }

    fn cluster(name: &str, eds_name: &str, padding: usize) -> Cluster {
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
        };
        Cluster {
            name: name.into(),
            alt_stat_name: "x".repeat(padding),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: eds_name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_response_is_read_from_its_chunks_small_and_large_resources_alike() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use envoy_types::pb::google::protobuf::Any;
        // Small clusters, one larger than WHOLE (held as its chunks), small ones again.
        let clusters = [
            cluster("a", "", 10),
            cluster("b", "b-eds", 100),
            cluster("big", "", WHOLE + 1000),
            cluster("c", "", 0),
        ];
        let response = DiscoveryResponse {
            version_info: "v7".into(),
            type_url: "clusters".into(),
            nonce: "n3".into(),
            resources: clusters
                .iter()
                .map(|c| Any {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    value: c.encode_to_vec(),
                })
                .collect(),
            ..Default::default()
        };
        let wire = response.encode_to_vec();
        // Chunks as HTTP/2 DATA frames bring them, and one byte at a time.
        for size in [16 * 1024, 100, 1] {
            let read = ResponseSummary::read(chunked(&wire, size)).unwrap();
            assert_eq!(
                (&read.version_info[..], &read.type_url[..], &read.nonce[..]),
                ("v7", "clusters", "n3")
            );
            let names: Vec<&[u8]> = read.resources.iter().filter_map(|r| r.name()).collect();
            assert_eq!(names, [&b"a"[..], b"b", b"big", b"c"], "chunks of {size}");
            assert!(matches!(read.resources[2].value, Value::Parts { .. }));
            assert!(matches!(read.resources[3].value, Value::Whole(_)));
            assert_eq!(
                assignment_names(&read.resources),
                ["a", "b-eds", "big", "c"],
                "the large cluster decodes from its chunks too"
            );
        }
    }

    #[test]
    fn a_small_resource_is_a_slice_of_its_chunk() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use envoy_types::pb::google::protobuf::Any;
        let response = DiscoveryResponse {
            resources: vec![Any {
                type_url: "t".into(),
                value: cluster("a", "", 50).encode_to_vec(),
            }],
            ..Default::default()
        };
        let wire = Bytes::from(response.encode_to_vec());
        let mut chunks = Chunks::default();
        chunks.push(wire.clone());
        let read = ResponseSummary::read(chunks).unwrap();
        let name = read.resources[0].name().unwrap();
        let within = wire.as_ptr_range();
        assert!(within.contains(&name.as_ptr()), "not copied");
    }

    #[test]
    fn a_truncated_or_malformed_response_is_an_error() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use envoy_types::pb::google::protobuf::Any;
        let response = DiscoveryResponse {
            version_info: "v".into(),
            resources: vec![Any {
                type_url: "t".into(),
                value: cluster("a", "", WHOLE * 2).encode_to_vec(),
            }],
            ..Default::default()
        };
        let wire = response.encode_to_vec();
        // Inside the last byte, the large value, and the length of the resource.
        for cut in [wire.len() - 1, wire.len() / 2, 5] {
            let err = ResponseSummary::read(chunked(&wire[..cut], 1000)).unwrap_err();
            assert!(
                err.to_string().contains("past the end") || matches!(err, Malformed::Decode(_)),
                "{err}"
            );
        }
        // A version that is not UTF-8.
        let mut bad = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut bad);
        encode_varint(1, &mut bad);
        bad.push(0xff);
        let err = ResponseSummary::read(chunked(&bad, 10)).unwrap_err();
        assert!(matches!(err, Malformed::NotUtf8), "{err}");
    }
}
