//! `revplane load`: simulated proxies against any ADS server, measured.
//!
//! Each simulated proxy opens its own ADS stream (by default on its own HTTP/2 connection,
//! as every Envoy has its own), sends `node` with its id and `REVISION` metadata, subscribes
//! like Envoy (CDS wildcard, then EDS for the clusters it got; with LDS, a listener wildcard
//! after the first clusters, then RDS for the route configurations those listeners name), and
//! ACKs every response; with `reconnect_every` each proxy also closes its stream and
//! connection and opens new ones on a schedule (a rolling restart, a soak). The
//! run reports streams opened and refused, time to first full config, and for every config
//! version the fan-out convergence (first to last proxy ACK). It never looks inside the
//! server, so it measures ours and any other implementation alike.
//!
//! [`stall`] is the other mode (`--stall-bytes`): streams that pin memory instead of behaving.

mod ads;
mod chunks;
mod names;
mod proxy;
pub mod report;
pub mod stall;
mod summary;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::snapshot::ResourceType;
use proxy::Observation;
use report::{LoadReport, Spread, VersionReport};

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
    /// Each proxy closes its stream (and its own connection) and opens a new one this often,
    /// the proxies' turns spread evenly over the period (`10m`: 10% of them every minute).
    pub reconnect_every: Option<Duration>,
    /// Report every ACK's time per version ([`VersionReport::ack_unix_ms`]), for a
    /// distribution rather than its percentiles.
    pub ack_times: bool,
}

/// Runs the simulation and returns its report.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        config.reconnect_every.is_none_or(|every| !every.is_zero()),
        "--reconnect-every must be longer than 0 (each proxy would reconnect in a loop)"
    );
    let started = Instant::now();
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared: Vec<Channel> = match config.connections {
        Some(n) => {
            let mut channels = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                channels.push(proxy::endpoint(config.xds_addr).connect().await?);
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
    let lists = names::NameLists::default();
    let largest_request = Arc::new(AtomicUsize::new(0));
    for i in 0..config.proxies {
        let channel = (!shared.is_empty()).then(|| shared[i % shared.len()].clone());
        let (config, tx, stop, lists) = (config.clone(), tx.clone(), stop.clone(), lists.clone());
        let largest_request = largest_request.clone();
        tokio::spawn(async move {
            tokio::time::sleep(step * i as u32).await;
            let run = proxy::Run {
                config: &config,
                events: &tx,
                stop: &stop,
                lists: &lists,
                largest_request: &largest_request,
            };
            proxy::proxy(i, channel, run).await;
        });
    }
    drop(tx);

    let mut opened = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_messages: BTreeMap<String, String> = BTreeMap::new();
    let mut full = Vec::new();
    let mut acks: HashMap<(String, String), Vec<SystemTime>> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut responses = 0u64;
    let mut response_bytes = 0u64;
    let mut reconnects = 0usize;
    let deadline = tokio::time::sleep(config.duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            observation = rx.recv() => match observation {
                None => break,
                Some(Observation::Opened) => opened += 1,
                Some(Observation::Ended(code, message)) => {
                    first_messages.entry(code.clone()).or_insert(message);
                    *refused.entry(code).or_default() += 1;
                }
                Some(Observation::Failed(why)) => *failed.entry(why).or_default() += 1,
                Some(Observation::FullConfig(d)) => full.push(d),
                Some(Observation::Response(bytes)) => {
                    responses += 1;
                    response_bytes += bytes as u64;
                }
                Some(Observation::Reconnected) => reconnects += 1,
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
            let r#type = ResourceType::from_type_url(&key.0)
                .map_or(key.0.clone(), |t| t.short().to_string());
            VersionReport::of(r#type, key.1.clone(), &acks[&key], config.ack_times)
        })
        .collect();
    Ok(LoadReport {
        proxies: config.proxies,
        streams_opened: opened,
        streams_refused: refused,
        streams_refused_first_message: first_messages,
        largest_request_bytes: largest_request.load(Ordering::Relaxed),
        streams_failed: failed,
        first_full_config: Spread::of(&full),
        versions,
        responses,
        response_bytes,
        reconnects,
        duration_ms: started.elapsed().as_millis(),
    })
}
