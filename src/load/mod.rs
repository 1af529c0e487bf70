//! `revplane load`: simulated proxies against any ADS server, measured.
//!
//! Each simulated proxy opens its own ADS stream (by default on its own HTTP/2 connection,
//! as every Envoy has its own), sends `node` with its id and `REVISION` metadata, subscribes
//! like Envoy (CDS wildcard, then EDS for the clusters it got; with LDS, a listener wildcard
//! after the first clusters, then RDS for the route configurations those listeners name), and
//! ACKs every response. The
//! run reports streams opened and refused, time to first full config, and for every config
//! version the fan-out convergence (first to last proxy ACK). It never looks inside the
//! server, so it measures ours and any other implementation alike.
//!
//! [`stall`] is the other mode (`--stall-bytes`): streams that pin memory instead of behaving.

pub mod report;
pub mod stall;
mod summary;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::snapshot::ResourceType;
use report::{LoadReport, Spread, VersionReport};
use summary::{assignment_names, route_names, ResponseSummary, Subscription};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// ADS server address.
    pub xds_addr: SocketAddr,
    /// Number of proxies.
    pub proxies: usize,
    /// `REVISION` the proxies claim.
    pub revision: String,
    /// Subscribe to EDS (CDS always).
    pub eds: bool,
    /// Subscribe to LDS (wildcard) after the first CDS response.
    pub lds: bool,
    /// Subscribe to RDS for the route configurations the listeners name (needs `lds`).
    pub rds: bool,
    /// How long to run.
    pub duration: Duration,
    /// Share this many HTTP/2 connections among the proxies (`None`: one per proxy).
    pub connections: Option<usize>,
    /// Spread the proxies' starts evenly over this long (`0`: all at once).
    pub ramp: Duration,
}

const ADS_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Opens an ADS stream whose responses decode as [`ResponseSummary`].
async fn open_ads(
    channel: Channel,
    requests: ReceiverStream<DiscoveryRequest>,
) -> Result<tonic::Streaming<ResponseSummary>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, ResponseSummary>::default();
    let path = http::uri::PathAndQuery::from_static(ADS_METHOD);
    Ok(grpc
        .streaming(tonic::Request::new(requests), path, codec)
        .await?
        .into_inner())
}

enum Observation {
    Opened,
    Ended(String),
    Failed(String),
    FullConfig(Duration),
    Ack {
        type_url: String,
        version: String,
        at: SystemTime,
    },
    Response,
}

/// Runs the simulation and returns its report.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared: Vec<Channel> = match config.connections {
        Some(n) => {
            let mut channels = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                channels.push(endpoint(config.xds_addr).connect().await?);
            }
            channels
        }
        None => Vec::new(),
    };
    let step = if config.proxies > 1 {
        config.ramp / config.proxies as u32
    } else {
        Duration::ZERO
    };
    for i in 0..config.proxies {
        let channel = (!shared.is_empty()).then(|| shared[i % shared.len()].clone());
        let (config, tx, stop) = (config.clone(), tx.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(step * i as u32).await;
            proxy(i, channel, &config, &tx, &stop).await;
        });
    }
    drop(tx);

    let mut opened = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut full = Vec::new();
    let mut acks: HashMap<(String, String), Vec<SystemTime>> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut responses = 0u64;
    let deadline = tokio::time::sleep(config.duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            observation = rx.recv() => match observation {
                None => break,
                Some(Observation::Opened) => opened += 1,
                Some(Observation::Ended(code)) => *refused.entry(code).or_default() += 1,
                Some(Observation::Failed(why)) => *failed.entry(why).or_default() += 1,
                Some(Observation::FullConfig(d)) => full.push(d),
                Some(Observation::Response) => responses += 1,
                Some(Observation::Ack { type_url, version, at }) => {
                    let key = (type_url, version);
                    if !acks.contains_key(&key) {
                        order.push(key.clone());
                    }
                    acks.entry(key).or_default().push(at);
                }
            }
        }
    }
    stop.cancel();
    let versions = order
        .into_iter()
        .map(|key| {
            let times = &acks[&key];
            let first = *times.iter().min().expect("at least one ACK");
            let last = *times.iter().max().expect("at least one ACK");
            let after: Vec<Duration> = times
                .iter()
                .map(|t| t.duration_since(first).unwrap_or_default())
                .collect();
            let unix = |t: SystemTime| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            };
            VersionReport {
                r#type: ResourceType::from_type_url(&key.0)
                    .map_or(key.0.clone(), |t| t.short().to_string()),
                version: key.1,
                acks: times.len(),
                first_ack_unix_ms: unix(first),
                last_ack_unix_ms: unix(last),
                convergence: Spread::of(&after),
            }
        })
        .collect();
    Ok(LoadReport {
        proxies: config.proxies,
        streams_opened: opened,
        streams_refused: refused,
        streams_failed: failed,
        first_full_config: Spread::of(&full),
        versions,
        responses,
        duration_ms: started.elapsed().as_millis(),
    })
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
}

fn node(i: usize, revision: &str) -> Node {
    let meta = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    Node {
        id: format!(
            "sidecar~10.{}.{}.{}~load-{i}.load~load.svc.cluster.local",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ),
        cluster: "load.load".to_string(),
        metadata: Some(Struct {
            fields: [
                ("REVISION".to_string(), meta(revision)),
                ("NAMESPACE".to_string(), meta("load")),
                ("POD_NAME".to_string(), meta(&format!("load-{i}"))),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

async fn proxy(
    i: usize,
    channel: Option<Channel>,
    config: &LoadConfig,
    events: &mpsc::UnboundedSender<Observation>,
    stop: &CancellationToken,
) {
    let started = Instant::now();
    let channel = match channel {
        Some(c) => c,
        None => match endpoint(config.xds_addr).connect().await {
            Ok(c) => c,
            Err(e) => {
                let _ = events.send(Observation::Failed(format!("connect: {e}")));
                return;
            }
        },
    };
    let cds = ResourceType::Cluster.type_url();
    let eds = ResourceType::Endpoint.type_url();
    let lds = ResourceType::Listener.type_url();
    let rds = ResourceType::Route.type_url();
    let (tx, rx) = mpsc::channel(16);
    let _ = tx
        .send(DiscoveryRequest {
            node: Some(node(i, &config.revision)),
            type_url: cds.to_string(),
            ..Default::default()
        })
        .await;
    let mut responses = match open_ads(channel, ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(status) => {
            let _ = events.send(Observation::Ended(format!("{:?}", status.code())));
            return;
        }
    };
    let mut opened = false;
    let mut have_cds = false;
    let mut eds_names: Vec<String> = Vec::new();
    let mut eds_nonce = String::new();
    let mut eds_version = String::new();
    let mut eds_seen: BTreeSet<String> = BTreeSet::new();
    let mut routes = Subscription::default();
    let mut lds_asked = false;
    let mut have_lds = false;
    let mut full = false;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            m = responses.message() => m,
        };
        let mut response: ResponseSummary = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = events.send(Observation::Ended("closed without status".to_string()));
                return;
            }
            Err(status) => {
                let _ = events.send(Observation::Ended(format!("{:?}", status.code())));
                return;
            }
        };
        if !opened {
            opened = true;
            let _ = events.send(Observation::Opened);
        }
        let _ = events.send(Observation::Response);
        let resources = std::mem::take(&mut response.resources);
        let route_names = if response.type_url == lds && config.rds {
            route_names(&resources)
        } else {
            Vec::new()
        };
        let assignments = if response.type_url == cds {
            assignment_names(&resources)
        } else {
            Vec::new()
        };
        let names: Vec<String> = resources.iter().filter_map(|any| any.name()).collect();
        let ack_names = if response.type_url == eds {
            eds_names.clone()
        } else if response.type_url == rds {
            routes.names.clone()
        } else {
            Vec::new()
        };
        let ack = DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            resource_names: ack_names,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        let _ = events.send(Observation::Ack {
            type_url: response.type_url.clone(),
            version: response.version_info.clone(),
            at: SystemTime::now(),
        });
        if response.type_url == cds {
            have_cds = true;
            if config.eds {
                let wanted = assignments;
                if wanted != eds_names {
                    eds_names = wanted;
                    eds_seen.retain(|n| eds_names.binary_search(n).is_ok());
                    let subscribe = DiscoveryRequest {
                        type_url: eds.to_string(),
                        version_info: eds_version.clone(),
                        response_nonce: eds_nonce.clone(),
                        resource_names: eds_names.clone(),
                        ..Default::default()
                    };
                    if tx.send(subscribe).await.is_err() {
                        return;
                    }
                }
            }
            if config.lds && !lds_asked {
                lds_asked = true;
                let subscribe = DiscoveryRequest {
                    type_url: lds.to_string(),
                    ..Default::default()
                };
                if tx.send(subscribe).await.is_err() {
                    return;
                }
            }
        } else if response.type_url == eds {
            eds_nonce = response.nonce.clone();
            eds_version = response.version_info.clone();
            eds_seen.extend(names);
        } else if response.type_url == lds {
            have_lds = true;
            if let Some(subscribe) = routes.wants(route_names, rds) {
                if tx.send(subscribe).await.is_err() {
                    return;
                }
            }
        } else if response.type_url == rds {
            routes.answered(&response, names);
        }
        let listeners_done = !config.lds || (have_lds && routes.complete());
        if !full
            && have_cds
            && listeners_done
            && (!config.eds || eds_names.iter().all(|n| eds_seen.contains(n)))
        {
            full = true;
            let _ = events.send(Observation::FullConfig(started.elapsed()));
        }
    }
}
