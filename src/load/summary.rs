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
    /// The resource's name: the first field of a Cluster, ClusterLoadAssignment, Listener
    /// and RouteConfiguration alike.
    pub fn name(&self) -> Option<String> {
        NameOnly::decode(self.value.clone()).ok().map(|n| n.name)
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
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

    /// Records a response to the subscription.
    pub fn answered(&mut self, response: &ResponseSummary, names: &[String]) {
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
