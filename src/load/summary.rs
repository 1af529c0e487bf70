//! The parts of a `DiscoveryResponse` a simulated proxy reads: the names of the resources,
//! and of a listener the route configurations it names (to subscribe to RDS as Envoy does).
//! Decoded with message types that hold only those fields: prost skips the rest.

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;

use super::names::{Answered, NameList, NameLists};

/// A response, reduced to what a simulated proxy reads.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ResponseSummary {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<AnySummary>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// An `Any` with its value kept as bytes (a slice of the response, read on demand).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct AnySummary {
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl AnySummary {
    /// The resource's name, read where it lies: field 1 of a Cluster,
    /// ClusterLoadAssignment, Listener and RouteConfiguration alike. `None` when the value
    /// has no such field or is malformed before it.
    pub fn name(&self) -> Option<&[u8]> {
        field_one(&self.value)
    }
}

/// The bytes of the first length-delimited field numbered 1 in the encoded message `buf`,
/// skipping the fields before it as prost does (encoders write fields in order, so it is
/// usually first).
fn field_one(mut buf: &[u8]) -> Option<&[u8]> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        if tag != 1 || wire_type != WireType::LengthDelimited {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
        return buf.get(..len);
    }
    None
}

/// A Cluster's name, discovery type and EDS service name.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterSummary {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    discovery_type: i32,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsSummary {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `Cluster.DiscoveryType.EDS`.
const EDS_TYPE: i32 = 3;

/// The assignments the EDS clusters of a CDS response need, sorted (as Envoy asks: only
/// EDS clusters, by their service name).
pub(super) fn assignment_names(clusters: &[AnySummary]) -> Vec<String> {
    let mut names: Vec<String> = clusters
        .iter()
        .filter_map(|any| ClusterSummary::decode(any.value.clone()).ok())
        .filter(|c| c.discovery_type == EDS_TYPE)
        .map(|c| match c.eds {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name,
            _ => c.name,
        })
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
    #[prost(string, tag = "2")]
    route_config_name: String,
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The route configurations the listeners of an LDS response name over RDS, sorted.
pub(super) fn route_names(listeners: &[AnySummary]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for any in listeners {
        let Ok(l) = ListenerRoutes::decode(any.value.clone()) else {
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
                names.push(rds.route_config_name);
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
        names: Vec<String>,
        type_url: &str,
        lists: &NameLists,
    ) -> Option<DiscoveryRequest> {
        if names == self.list.names {
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
        AnySummary {
            value: value.into(),
        }
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
}
