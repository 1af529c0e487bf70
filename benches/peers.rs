//! revplane side by side with go-control-plane (issue 12): the same catalog, the same
//! simulated proxies (`revplane load --types cds,eds`), the same one-endpoint change.
//!
//! The peer (`benches/peers/go-control-plane/`, built with Go once per source hash into
//! `~/.cache/revplane/peers/`) takes its catalog from a revplane over ADS; the bench first
//! checks that both serve the same resources (one ADS fetch of each; `peers/served.rs` says
//! what "the same" means), then
//! for each round runs each server, alternating which goes first, fresh for every scenario:
//!
//! - `fanout`: N proxies connect and are configured; idle memory per stream (RSS before and
//!   after, from `/proc`) and idle CPU; then one endpoint changes: publication → ACK for every
//!   proxy, and the server's CPU from publication to the last ACK (CPU per stream per push);
//! - `storm`: M proxies at once on a fresh server: time until the last one has its full
//!   config, and the server's peak RSS (`VmHWM`).
//!
//! It prints medians (min–max) over the rounds, the ratios revplane / peer, the versions and
//! the load average, and writes the CDF of publication → ACK of the median round as an SVG.
//!
//! `cargo bench --bench peers` runs full size; `cargo test --bench peers` a smoke size (Go
//! must be on PATH either way). Overrides: `REVPLANE_PEERS_SERVICES=1000`,
//! `REVPLANE_PEERS_FANOUT=10000`, `REVPLANE_PEERS_STORM=5000` (proxies),
//! `REVPLANE_PEERS_ROUNDS=3`; how long each load run lasts, revplane's and the peer's:
//! `REVPLANE_PEERS_FANOUT_SECS=60`, `REVPLANE_PEERS_PEER_FANOUT_SECS=210`,
//! `REVPLANE_PEERS_STORM_SECS=20`, `REVPLANE_PEERS_PEER_STORM_SECS=75`; `REVPLANE_BENCH_ONLY=fanout|storm`,
//! `REVPLANE_PEERS_SVG=docs/img/fanout-cdf.svg` (full size writes there by default).

#[path = "peers/cdf.rs"]
mod cdf;
mod common;
#[path = "peers/peer.rs"]
mod peer;
#[path = "peers/served.rs"]
mod served;
#[path = "peers/stats.rs"]
mod stats;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peer::Peer;
use stats::{Row, Samples};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Revplane,
    Peer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Revplane => "revplane",
            Kind::Peer => "go-control-plane",
        }
    }
}

const PUBLISHED: &str = "revplane_snapshot_published_timestamp_seconds{revision=\"bench\"}";

/// A server being measured.
enum Under {
    Revplane(Server),
    Peer(Peer),
}

impl Under {
    fn pid(&self) -> u32 {
        match self {
            Under::Revplane(s) => s.child.id(),
            Under::Peer(p) => p.child.id(),
        }
    }

    fn xds(&self) -> &str {
        match self {
            Under::Revplane(s) => &s.xds,
            Under::Peer(p) => &p.xds,
        }
    }
}

/// One fan-out run.
struct Fanout {
    kib_per_stream: f64,
    idle_cpu: f64,
    /// Every proxy's publication → ACK (ms).
    ack_ms: Vec<f64>,
    push_cpu_s: f64,
}

/// One storm run.
struct Storm {
    last_full_s: f64,
    peak_mib: f64,
}

struct Bench {
    dir: PathBuf,
    shape: Shape,
    /// The revplane the peer takes its catalog from (idle, no proxies).
    feeder: Server,
    peer_bin: PathBuf,
    generation: usize,
    loadavg: Vec<f64>,
}

impl Bench {
    fn start(&self, kind: Kind) -> Under {
        match kind {
            // No quiet period: the figure is the push, not the debounce.
            Kind::Revplane => Under::Revplane(Server::start(&self.dir, "1ms")),
            Kind::Peer => Under::Peer(Peer::start(&self.peer_bin, &self.feeder.xds)),
        }
    }

    fn fanout(&mut self, kind: Kind, n: usize, secs: u64) -> Fanout {
        let under = self.start(kind);
        let pid = under.pid();
        std::thread::sleep(Duration::from_millis(300));
        let (base, fds) = (status_kib(pid, "VmRSS:"), open_files(pid));
        let started = Instant::now();
        let child = load(under.xds(), n, secs, true);
        let deadline = started + Duration::from_secs(secs);
        while open_files(pid) < fds + n {
            assert!(
                Instant::now() < deadline,
                "{}: fewer than {n} connections",
                kind.name()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        settle(pid, deadline);
        std::thread::sleep(Duration::from_millis(500));
        let rss = status_kib(pid, "VmRSS:");
        let (cpu0, t0) = (cpu_seconds_of(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(if full() { 3 } else { 1 }));
        let idle_cpu = (cpu_seconds_of(pid) - cpu0) / t0.elapsed().as_secs_f64();

        self.generation += 1;
        let feeder_before = self.feeder.metric(PUBLISHED);
        let (cpu0, before) = match &under {
            Under::Revplane(server) => (cpu_seconds_of(pid), server.metric(PUBLISHED)),
            Under::Peer(_) => (0.0, 0.0),
        };
        write_shaped(&self.dir, self.shape, 3, self.generation);
        wait_published(&self.feeder, feeder_before);
        let (published_ms, cpu0) = match &under {
            Under::Revplane(server) => (wait_published(server, before) * 1000.0, cpu0),
            Under::Peer(peer) => {
                peer.stage();
                let cpu0 = cpu_seconds_of(pid);
                (peer.publish(), cpu0)
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_secs(if full() { 15 } else { 2 }) {
            eprintln!(
                "warning: {}: the change came {:.1} s before the load run ends: raise REVPLANE_PEERS_[PEER_]FANOUT_SECS",
                kind.name(),
                left.as_secs_f64()
            );
        }
        let (report, cpu) = wait_sampling(child, pid);
        let version = report["versions"]
            .as_array()
            .and_then(|v| v.iter().rev().find(|v| v["type"] == "eds"))
            .cloned()
            .unwrap_or_default();
        let acks: Vec<f64> = version["ack_unix_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_f64()).collect())
            .unwrap_or_default();
        assert!(
            version["first_ack_unix_ms"].as_f64().unwrap_or(0.0) + 1.0 >= published_ms,
            "{}: no EDS version was ACKed after the change",
            kind.name()
        );
        check(
            acks.len() == n,
            &format!(
                "{}: {} of {n} proxies ACKed the change before the run ended (REVPLANE_PEERS_[PEER_]FANOUT_SECS)",
                kind.name(),
                acks.len()
            ),
        );
        let last_ack = acks.iter().copied().fold(0.0, f64::max);
        let push_cpu_s = cpu.at(last_ack + 100.0) - cpu0;
        Fanout {
            kib_per_stream: rss.saturating_sub(base) as f64 / n as f64,
            idle_cpu,
            ack_ms: acks.iter().map(|t| t - published_ms).collect(),
            push_cpu_s,
        }
    }

    fn storm(&self, kind: Kind, n: usize, secs: u64) -> Storm {
        let under = self.start(kind);
        std::thread::sleep(Duration::from_millis(300));
        let r = report(load(under.xds(), n, secs, false));
        let full = &r["first_full_config"];
        let count = full["count"].as_u64().unwrap_or(0);
        check(
            count as usize == n,
            &format!(
                "{}: {count} of {n} proxies had their full config within {secs} s (REVPLANE_PEERS_[PEER_]STORM_SECS)",
                kind.name()
            ),
        );
        Storm {
            last_full_s: full["max_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            peak_mib: status_kib(under.pid(), "VmHWM:") as f64 / 1024.0,
        }
    }
}

/// A failed expectation: fatal at smoke size; at full size a warning, so that the other
/// figures of a long run are not lost (the figure it concerns covers only what was seen).
fn check(ok: bool, what: &str) {
    assert!(ok || full(), "{what}");
    if !ok {
        eprintln!("warning: {what}");
    }
}

/// `revplane load` against `xds`: CDS and EDS (all the peer serves), JSON report.
fn load(xds: &str, proxies: usize, secs: u64, ack_times: bool) -> Child {
    Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args(["load", "--xds-addr", xds, "--revision", "bench", "--json"])
        .args(["--types", "cds,eds", "--proxies", &proxies.to_string()])
        .args(["--duration", &format!("{secs}s")])
        .args(ack_times.then_some("--ack-times"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start revplane load")
}

/// Returns once the server used under 5% of a core for a whole second.
fn settle(pid: u32, deadline: Instant) {
    loop {
        let cpu0 = cpu_seconds_of(pid);
        std::thread::sleep(Duration::from_secs(1));
        if cpu_seconds_of(pid) - cpu0 < 0.05 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server was still busy when the load run ended: raise REVPLANE_PEERS_[PEER_]FANOUT_SECS"
        );
    }
}

/// Waits until `server` published a snapshot after the one published at `before` (Unix
/// seconds); returns when it did.
fn wait_published(server: &Server, before: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let published = server.metric(PUBLISHED);
        if published != before {
            return published;
        }
        assert!(
            Instant::now() < deadline,
            "revplane did not publish the change in 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the load run while sampling the server's CPU; its report and the samples.
fn wait_sampling(child: Child, pid: u32) -> (serde_json::Value, CpuSamples) {
    let sampler = CpuSampler::start(pid);
    // `report` reads the output while the run goes on (it outgrows a pipe's buffer).
    let report = report(child);
    (report, sampler.stop())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

fn main() {
    let only = std::env::var("REVPLANE_BENCH_ONLY").ok();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let services = env_or("REVPLANE_PEERS_SERVICES", 1000, 20);
    let fanout_n = env_or("REVPLANE_PEERS_FANOUT", 10_000, 20);
    let storm_n = env_or("REVPLANE_PEERS_STORM", 5000, 20);
    let rounds = env_or("REVPLANE_PEERS_ROUNDS", 3, 1);
    // How long each load run lasts, per server: the peer takes minutes where revplane takes
    // seconds, and a load run cannot end early.
    let fanout_secs = [
        env_or("REVPLANE_PEERS_FANOUT_SECS", 60, 8),
        env_or("REVPLANE_PEERS_PEER_FANOUT_SECS", 210, 8),
    ];
    let storm_secs = [
        env_or("REVPLANE_PEERS_STORM_SECS", 20, 4),
        env_or("REVPLANE_PEERS_PEER_STORM_SECS", 75, 4),
    ];
    let svg = std::env::var("REVPLANE_PEERS_SVG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            if full() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/fanout-cdf.svg")
            } else {
                std::env::temp_dir().join("revplane-peers-fanout-cdf.svg")
            }
        });

    let peer_bin = peer::binary();
    let shape = Shape::realistic(services);
    println!(
        "revplane against go-control-plane {} ({}); {}; {}",
        peer::VERSION,
        peer::go_version(),
        if full() { "full size" } else { "smoke size" },
        shape.describe()
    );
    println!("load average at start: {}", loadavg().trim());
    let dir = tempdir();
    write_mesh(&dir, shape);
    let feeder = Server::start(&dir, "1ms");
    let mut bench = Bench {
        dir: dir.clone(),
        shape,
        feeder,
        peer_bin,
        generation: 0,
        loadavg: Vec::new(),
    };
    {
        let peer = Peer::start(&bench.peer_bin, &bench.feeder.xds);
        let ours = served::fetch(&bench.feeder.xds);
        let theirs = served::fetch(&peer.xds);
        let e = served::assert_equivalent("revplane", &ours, "go-control-plane", &theirs);
        // One assignment per service cluster (the passthrough and black-hole clusters have none).
        assert_eq!(e.assignments, shape.clusters(), "assignments served");
        println!(
            "equivalent: {} clusters and {} assignments, {} bytes: the same names, lengths and messages from both; {} identical on the wire, the rest in another field order",
            e.clusters, e.assignments, e.bytes, e.wire_identical
        );
    }

    let mut fanouts: [Vec<Fanout>; 2] = [Vec::new(), Vec::new()];
    let mut storms: [Vec<Storm>; 2] = [Vec::new(), Vec::new()];
    let mut loads = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Kind::Revplane, Kind::Peer]
        } else {
            [Kind::Peer, Kind::Revplane]
        };
        for kind in order {
            let i = kind as usize;
            if run("fanout") {
                loads.push(loadavg());
                let f = bench.fanout(kind, fanout_n, fanout_secs[i]);
                println!(
                    "round {} {:<16} fan-out {fanout_n}: {:.1} KiB/stream idle, p99 {:.1} ms, push CPU {:.3} s",
                    round + 1,
                    kind.name(),
                    f.kib_per_stream,
                    stats::quantile(&f.ack_ms, 0.99),
                    f.push_cpu_s
                );
                fanouts[i].push(f);
            }
            if run("storm") {
                loads.push(loadavg());
                let s = bench.storm(kind, storm_n, storm_secs[i]);
                println!(
                    "round {} {:<16} storm {storm_n}: last full config {:.2} s, peak RSS {:.1} MiB",
                    round + 1,
                    kind.name(),
                    s.last_full_s,
                    s.peak_mib
                );
                storms[i].push(s);
            }
        }
    }
    loads.push(loadavg());
    bench.loadavg = loads
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();

    let rows = table(&fanouts, &storms, fanout_n);
    println!("\nmedian (min-max) over {rounds} round(s); ratio = revplane / go-control-plane");
    for row in &rows {
        println!("{row}");
    }
    let l = Samples::of(bench.loadavg.clone());
    println!(
        "1-minute load average before each run: median {:.2} (min {:.2}, max {:.2}); at end: {}",
        l.median(),
        l.min(),
        l.max(),
        loadavg().trim()
    );
    if run("fanout") {
        let pick = |runs: &[Fanout]| {
            let mut by_p99: Vec<&Fanout> = runs.iter().collect();
            by_p99.sort_by(|a, b| {
                stats::quantile(&a.ack_ms, 0.99).total_cmp(&stats::quantile(&b.ack_ms, 0.99))
            });
            by_p99[by_p99.len() / 2].ack_ms.clone()
        };
        let (ours, theirs) = (pick(&fanouts[0]), pick(&fanouts[1]));
        let title = format!(
            "One endpoint change, {fanout_n} proxies, {} services: publication to ACK",
            services
        );
        cdf::write(
            &svg,
            &title,
            &[
                cdf::Curve {
                    name: "revplane",
                    ms: &ours,
                },
                cdf::Curve {
                    name: &format!("go-control-plane {}", peer::VERSION),
                    ms: &theirs,
                },
            ],
        )
        .expect("write the CDF SVG");
        println!("CDF of the median round: {}", svg.display());
    }
    // The feeder first, so that it does not see its directory go.
    drop(bench);
    let _ = std::fs::remove_dir_all(dir);
}

fn table(fanouts: &[Vec<Fanout>; 2], storms: &[Vec<Storm>; 2], n: usize) -> Vec<Row> {
    let f = |g: &dyn Fn(&Fanout) -> f64| {
        [0, 1].map(|i| Samples::of(fanouts[i].iter().map(g).collect()))
    };
    let s =
        |g: &dyn Fn(&Storm) -> f64| [0, 1].map(|i| Samples::of(storms[i].iter().map(g).collect()));
    let mut rows = Vec::new();
    if !fanouts[0].is_empty() {
        rows.push(Row::new(
            "idle memory per stream (KiB)",
            f(&|r| r.kib_per_stream),
        ));
        rows.push(Row::new(
            "idle CPU (% of a core)",
            f(&|r| r.idle_cpu * 100.0),
        ));
        rows.push(Row::new(
            "change -> ACK p50 (ms)",
            f(&|r| stats::quantile(&r.ack_ms, 0.5)),
        ));
        rows.push(Row::new(
            "change -> ACK p99 (ms)",
            f(&|r| stats::quantile(&r.ack_ms, 0.99)),
        ));
        rows.push(Row::new(
            "change -> last ACK (ms)",
            f(&|r| stats::quantile(&r.ack_ms, 1.0)),
        ));
        rows.push(Row::new("push CPU (s)", f(&|r| r.push_cpu_s)));
        rows.push(Row::new(
            "CPU per stream per push (us)",
            f(&|r| r.push_cpu_s * 1e6 / n as f64),
        ));
    }
    if !storms[0].is_empty() {
        rows.push(Row::new(
            "storm: last full config (s)",
            s(&|r| r.last_full_s),
        ));
        rows.push(Row::new("storm: peak RSS (MiB)", s(&|r| r.peak_mib)));
    }
    rows
}
