//! What a server serves, from one ADS fetch: every cluster (CDS wildcard), then the
//! assignment of every EDS cluster, each as its name, type URL and encoded bytes.
//!
//! Two servers are equivalent when they serve the same names, and for each the same type URL,
//! the same encoded length and the same bytes once decoded and encoded again in field-number
//! order: Go's protobuf writes the members of a `oneof` after the other fields, so a Cluster
//! from go-control-plane is the same message as revplane's in another field order. How many
//! are identical on the wire as they are is counted too.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Name → (type URL, bytes) of one type.
pub type Resources = BTreeMap<String, (String, Vec<u8>)>;

/// One fetch's clusters and assignments.
#[derive(Debug, PartialEq)]
pub struct Served {
    pub clusters: Resources,
    pub assignments: Resources,
}

/// The name of a Cluster or ClusterLoadAssignment (field 1 of both).
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// A Cluster's name, discovery type and EDS service name: what the fetch needs of it.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterNames {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    discovery_type: i32,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EdsConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// Fetches from the ADS server at `addr` as a proxy of revision `bench`.
pub fn fetch(addr: &str) -> Served {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fetch_async(addr))
}

async fn fetch_async(addr: &str) -> Served {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let node = Node {
        id: "peers-bench-fetch".to_string(),
        metadata: Some(Struct {
            fields: [(
                "REVISION".to_string(),
                Value {
                    kind: Some(Kind::StringValue("bench".to_string())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: CDS.to_string(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|e| panic!("ADS stream to {addr}: {e}"))
        .into_inner();
    let cds = next(&mut responses, addr).await;
    let mut names: Vec<String> = cds
        .resources
        .iter()
        .filter_map(|any| ClusterNames::decode(any.value.as_slice()).ok())
        .filter(|c| c.discovery_type == 3)
        .map(|c| match c.eds {
            Some(e) if !e.service_name.is_empty() => e.service_name,
            _ => c.name,
        })
        .collect();
    names.sort();
    tx.send(DiscoveryRequest {
        type_url: EDS.to_string(),
        version_info: String::new(),
        resource_names: names,
        ..Default::default()
    })
    .await
    .unwrap();
    let eds = next(&mut responses, addr).await;
    Served {
        clusters: by_name(&cds),
        assignments: by_name(&eds),
    }
}

async fn next(
    responses: &mut tonic::Streaming<DiscoveryResponse>,
    addr: &str,
) -> DiscoveryResponse {
    responses
        .message()
        .await
        .unwrap_or_else(|e| panic!("ADS response from {addr}: {e}"))
        .unwrap_or_else(|| panic!("{addr} closed the ADS stream"))
}

fn by_name(response: &DiscoveryResponse) -> Resources {
    response
        .resources
        .iter()
        .map(|any| {
            let name = NameOnly::decode(any.value.as_slice())
                .map(|c| c.name)
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| panic!("a {} without a name", any.type_url));
            (name, (any.type_url.clone(), any.value.clone()))
        })
        .collect()
}

/// A resource encoded again in field-number order (prost's order, revplane's).
fn canonical(type_url: &str, bytes: &[u8]) -> Vec<u8> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    match type_url {
        CDS => Cluster::decode(bytes).map(|c| c.encode_to_vec()),
        EDS => ClusterLoadAssignment::decode(bytes).map(|c| c.encode_to_vec()),
        other => panic!("unexpected type {other}"),
    }
    .unwrap_or_else(|e| panic!("malformed {type_url}: {e}"))
}

/// What [`assert_equivalent`] found.
pub struct Equivalence {
    pub clusters: usize,
    pub assignments: usize,
    pub bytes: usize,
    /// Resources identical on the wire as served (the rest differ only in field order).
    pub wire_identical: usize,
}

/// Panics with the first differences unless `a` (named `a_name`) and `b` serve the same
/// resources (see the module doc).
pub fn assert_equivalent(a_name: &str, a: &Served, b_name: &str, b: &Served) -> Equivalence {
    let mut wire_identical = 0;
    for (kind, x, y) in [
        ("cluster", &a.clusters, &b.clusters),
        ("assignment", &a.assignments, &b.assignments),
    ] {
        let only_a: Vec<&String> = x.keys().filter(|k| !y.contains_key(*k)).take(3).collect();
        let only_b: Vec<&String> = y.keys().filter(|k| !x.contains_key(*k)).take(3).collect();
        assert!(
            only_a.is_empty() && only_b.is_empty(),
            "{kind} names differ: only {a_name} serves {only_a:?}, only {b_name} serves {only_b:?}"
        );
        let mut differ = Vec::new();
        for (name, (type_a, bytes_a)) in x {
            let (type_b, bytes_b) = &y[name];
            if bytes_a == bytes_b && type_a == type_b {
                wire_identical += 1;
            } else if type_a != type_b
                || bytes_a.len() != bytes_b.len()
                || canonical(type_a, bytes_a) != canonical(type_b, bytes_b)
            {
                differ.push(format!(
                    "{name}: {type_a}, {} bytes vs {type_b}, {} bytes",
                    bytes_a.len(),
                    bytes_b.len()
                ));
            }
        }
        assert!(
            differ.is_empty(),
            "{} {kind}s differ between {a_name} and {b_name}, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(3)]
        );
    }
    assert!(!a.clusters.is_empty(), "{a_name} served no clusters");
    let bytes = a
        .clusters
        .values()
        .chain(a.assignments.values())
        .map(|v| v.1.len())
        .sum();
    Equivalence {
        clusters: a.clusters.len(),
        assignments: a.assignments.len(),
        bytes,
        wire_identical,
    }
}
