//! One simulated proxy: its ADS sessions, subscribing and ACKing like Envoy, and reconnecting
//! on schedule when asked to.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::ads;
use super::names::NameLists;
use super::summary::{assignment_names, route_names, AnySummary, ResponseSummary, Subscription};
use super::LoadConfig;
use crate::snapshot::ResourceType;

/// What a simulated proxy reports to the run.
pub(super) enum Observation {
    Opened,
    /// The stream ended: its gRPC status code's name, and the status message.
    Ended(String, String),
    Failed(String),
    FullConfig(Duration),
    Ack {
        type_url: String,
        version: String,
        at: SystemTime,
    },
    /// A response of this many bytes (its message, without the gRPC prefix).
    Response(usize),
    Reconnected,
}

/// A stream's end, with its status message and what caused it (a connection error's chain).
fn ended(status: &tonic::Status) -> Observation {
    Observation::Ended(
        format!("{:?}", status.code()),
        crate::errors::with_causes(
            status.message().to_string(),
            std::error::Error::source(status),
        ),
    )
}

pub(super) fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
}

pub(super) fn node(i: usize, revision: &str) -> Node {
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

/// What every simulated proxy of a run shares.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub config: &'a LoadConfig,
    pub events: &'a mpsc::UnboundedSender<Observation>,
    pub stop: &'a CancellationToken,
    pub lists: &'a NameLists,
    /// The largest request any proxy sent, in bytes on the wire.
    pub largest_request: &'a Arc<AtomicUsize>,
}

/// How a session (one ADS stream) ended.
enum SessionEnd {
    /// The run is over, or the stream failed or was refused (reported).
    Over,
    /// Its reconnect time came: the proxy opens a new stream.
    Reconnect,
}

/// One simulated proxy: sessions one after another until the run stops. With
/// [`LoadConfig::reconnect_every`], proxy `i` of `n` first reconnects at `every * (i + 1) / n`
/// and then every `every`, so the reconnects are spread evenly over each period.
pub(super) async fn proxy(i: usize, channel: Option<Channel>, run: Run<'_>) {
    let Run {
        config,
        events,
        stop,
        ..
    } = run;
    let phase = |every: Duration| every.mul_f64((i as f64 + 1.0) / config.proxies.max(1) as f64);
    let mut reconnect_at = config
        .reconnect_every
        .map(|every| Instant::now() + phase(every));
    while !stop.is_cancelled() {
        match session(i, channel.clone(), run, reconnect_at).await {
            SessionEnd::Over => return,
            SessionEnd::Reconnect => {
                let _ = events.send(Observation::Reconnected);
                reconnect_at = config.reconnect_every.map(|every| Instant::now() + every);
            }
        }
    }
}

/// One ADS stream, on `channel` or on a connection of its own (closed when it ends).
async fn session(
    i: usize,
    channel: Option<Channel>,
    run: Run<'_>,
    reconnect_at: Option<Instant>,
) -> SessionEnd {
    let Run {
        config,
        events,
        stop,
        lists,
        largest_request,
    } = run;
    let started = Instant::now();
    let channel = match channel {
        Some(c) => c,
        None => {
            let endpoint = endpoint(config.xds_addr);
            match stop.run_until_cancelled(endpoint.connect()).await {
                None => return SessionEnd::Over,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    let _ = events.send(Observation::Failed(format!("connect: {e}")));
                    return SessionEnd::Over;
                }
            }
        }
    };
    let cds = ResourceType::Cluster.type_url();
    let eds = ResourceType::Endpoint.type_url();
    let lds = ResourceType::Listener.type_url();
    let rds = ResourceType::Route.type_url();
    let first = DiscoveryRequest {
        node: Some(node(i, &config.revision)),
        type_url: cds.to_string(),
        ..Default::default()
    };
    let (requests, mut responses) = match stop
        .run_until_cancelled(ads::open(channel, &first, None, largest_request.clone()))
        .await
    {
        None => return SessionEnd::Over,
        Some(Ok(opened)) => opened,
        Some(Err(status)) => {
            let _ = events.send(ended(&status));
            return SessionEnd::Over;
        }
    };
    let reconnect = async {
        match reconnect_at {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(reconnect);
    let mut opened = false;
    let mut have_cds = false;
    let mut endpoints = Subscription::default();
    let mut routes = Subscription::default();
    let mut lds_asked = false;
    let mut have_lds = false;
    let mut full = false;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return SessionEnd::Over,
            _ = &mut reconnect => return SessionEnd::Reconnect,
            m = responses.message() => m,
        };
        let mut response: ResponseSummary = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = events.send(Observation::Ended(
                    "closed without status".to_string(),
                    String::new(),
                ));
                return SessionEnd::Over;
            }
            Err(status) => {
                let _ = events.send(ended(&status));
                return SessionEnd::Over;
            }
        };
        if !opened {
            opened = true;
            let _ = events.send(Observation::Opened);
        }
        let _ = events.send(Observation::Response(response.encoded_len));
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
        // The names of an EDS or RDS response, marked answered before the ACK goes out.
        let names = resources.iter().filter_map(AnySummary::name);
        if response.type_url == eds {
            endpoints.answered(&response, names);
        } else if response.type_url == rds {
            routes.answered(&response, names);
        }
        drop(resources);
        let ack_names = if response.type_url == eds {
            Some(&endpoints.list)
        } else if response.type_url == rds {
            Some(&routes.list)
        } else {
            None
        };
        let ack = DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        if requests.send(&ack, ack_names).await.is_err() {
            return SessionEnd::Over;
        }
        let _ = events.send(Observation::Ack {
            type_url: response.type_url.clone(),
            version: response.version_info.clone(),
            at: SystemTime::now(),
        });
        if response.type_url == cds {
            have_cds = true;
            if config.eds {
                if let Some(subscribe) = endpoints.wants(assignments, eds, lists) {
                    if requests
                        .send(&subscribe, Some(&endpoints.list))
                        .await
                        .is_err()
                    {
                        return SessionEnd::Over;
                    }
                }
            }
            if config.lds && !lds_asked {
                lds_asked = true;
                let subscribe = DiscoveryRequest {
                    type_url: lds.to_string(),
                    ..Default::default()
                };
                if requests.send(&subscribe, None).await.is_err() {
                    return SessionEnd::Over;
                }
            }
        } else if response.type_url == lds {
            have_lds = true;
            if let Some(subscribe) = routes.wants(route_names, rds, lists) {
                if requests.send(&subscribe, Some(&routes.list)).await.is_err() {
                    return SessionEnd::Over;
                }
            }
        }
        let listeners_done = !config.lds || (have_lds && routes.complete());
        if !full && have_cds && listeners_done && (!config.eds || endpoints.complete()) {
            full = true;
            let _ = events.send(Observation::FullConfig(started.elapsed()));
        }
    }
}
