//! Load scenarios: the `revplane` server and the `revplane load` generator as two processes
//! (each stream is a connection, and one process may hold at most 20,000 open files).
//!
//! `cargo bench --bench scenarios` runs them at full size; `cargo test` runs them tiny as a
//! smoke test and asserts nothing about time. Sizes can be overridden:
//! `REVPLANE_BENCH_IDLE=1000,5000,10000`, `REVPLANE_BENCH_STORM=5000`,
//! `REVPLANE_BENCH_FANOUT=10000`, `REVPLANE_BENCH_CHURN=1000` (proxies),
//! `REVPLANE_BENCH_CHURN_SECS=60`, `REVPLANE_BENCH_ONLY=idle|storm|fanout|churn`;
//! `REVPLANE_BENCH_SERVER_ARGS="--push-concurrency 2048"` adds flags to `revplane serve`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn env_or<T: std::str::FromStr>(name: &str, full_size: T, smoke: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_size } else { smoke })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A manifest directory: `services` Services in 10 namespaces, one file per service, each
/// with one slice of `endpoints` ready endpoints.
fn mesh(dir: &Path, services: usize, endpoints: usize) {
    for i in 0..services {
        write_service(dir, i, endpoints, 0);
    }
}

fn write_service(dir: &Path, i: usize, endpoints: usize, generation: usize) {
    let ns = format!("ns{}", i % 10);
    let eps: String = (0..endpoints)
        .map(|e| {
            format!(
                "- addresses: [10.{}.{}.{}]\n",
                (i >> 8) & 255,
                i & 255,
                (e + generation) % 250 + 1
            )
        })
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}"
    );
    let tmp = dir.join(format!(".svc{i}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join(format!("svc{i}.yaml"))).unwrap();
}

struct Server {
    child: Child,
    admin: String,
    xds: String,
}

impl Server {
    fn start(dir: &Path, debounce: &str) -> Server {
        let (xds, admin) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_revplane"))
            .args(["serve", "--revision", "bench", "--source"])
            .arg(dir)
            .args([
                "--xds-addr",
                &xds,
                "--admin-addr",
                &admin,
                "--debounce-after",
                debounce,
            ])
            .args(
                std::env::var("REVPLANE_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env("REVPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start revplane serve");
        let server = Server { child, admin, xds };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/ready").is_none_or(|(code, _)| code != 200) {
            assert!(Instant::now() < deadline, "server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.admin))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    fn metric(&self, sample: &str) -> f64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    }

    fn connected(&self) -> f64 {
        self.metric("revplane_xds_connected_proxies{revision=\"bench\"}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `revplane load` for `proxies` over `secs`; returns the child (JSON on stdout).
fn load(server: &Server, proxies: usize, secs: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "load",
            "--xds-addr",
            &server.xds,
            "--revision",
            "bench",
            "--json",
        ])
        .args([
            "--proxies",
            &proxies.to_string(),
            "--duration",
            &format!("{secs}s"),
        ])
        // The types the simulated proxies subscribe to (default: all four, as Envoy).
        .args(
            std::env::var("REVPLANE_BENCH_TYPES")
                .ok()
                .map(|t| vec!["--types".to_string(), t])
                .unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start revplane load")
}

fn report(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).expect("load report JSON")
}

fn wait_connected(server: &Server, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while server.connected() < n as f64 {
        assert!(
            start.elapsed() < within,
            "only {} of {n} connected",
            server.connected()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "revplane-bench-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idle(sizes: &[usize]) {
    for &n in sizes {
        let dir = tempdir();
        mesh(&dir, 10, 1);
        let server = Server::start(&dir, "100ms");
        std::thread::sleep(Duration::from_millis(300));
        let base = server.status_kib("VmRSS:");
        let mut child = load(&server, n, 120);
        let connect = wait_connected(&server, n, Duration::from_secs(50));
        std::thread::sleep(Duration::from_secs(2));
        let (cpu0, t0) = (server.cpu_seconds(), Instant::now());
        std::thread::sleep(Duration::from_secs(if full() { 5 } else { 1 }));
        let idle_cpu = (server.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        let rss = server.status_kib("VmRSS:");
        let per_stream = (rss.saturating_sub(base)) as f64 * 1024.0 / n as f64;
        println!(
            "idle {n:>6} streams: connected in {:.2} s, RSS {:.1} MiB (base {:.1} MiB), {:.1} KiB/stream, idle CPU {:.1}% of a core",
            connect.as_secs_f64(),
            rss as f64 / 1024.0,
            base as f64 / 1024.0,
            per_stream / 1024.0,
            idle_cpu * 100.0
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn storm(n: usize, services: usize) {
    let dir = tempdir();
    mesh(&dir, services, 10);
    let server = Server::start(&dir, "100ms");
    let child = load(&server, n, if full() { 20 } else { 3 });
    let connected = wait_connected(&server, n, Duration::from_secs(60));
    let r = report(child);
    let full = &r["first_full_config"];
    println!(
        "storm {n} proxies x {services} clusters/assignments: all connected in {:.2} s; full config ACKed p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} of {n}); refused {}; server peak RSS {:.1} MiB",
        connected.as_secs_f64(),
        full["p50_ms"].as_f64().unwrap_or(0.0),
        full["p99_ms"].as_f64().unwrap_or(0.0),
        full["max_ms"].as_f64().unwrap_or(0.0),
        full["count"],
        r["streams_refused"],
        server.status_kib("VmHWM:") as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn fanout(n: usize) {
    let dir = tempdir();
    mesh(&dir, 10, 10);
    // No quiet period: the figure is the push, not the debounce.
    let server = Server::start(&dir, "1ms");
    let child = load(&server, n, if full() { 30 } else { 4 });
    wait_connected(&server, n, Duration::from_secs(25));
    std::thread::sleep(Duration::from_secs(if full() { 3 } else { 1 }));
    let encodes0 = server.metric("revplane_snapshot_encodes_total{revision=\"bench\"}");
    let cpu0 = server.cpu_seconds();
    let edited = SystemTime::now();
    write_service(&dir, 3, 10, 1);
    // The push is over well within this window; later CPU (the load generator leaving,
    // 10,000 streams closing) is not the push's.
    std::thread::sleep(Duration::from_secs(if full() { 3 } else { 1 }));
    let cpu = server.cpu_seconds() - cpu0;
    let r = report(child);
    let encodes = server.metric("revplane_snapshot_encodes_total{revision=\"bench\"}") - encodes0;
    let published_ms =
        server.metric("revplane_snapshot_published_timestamp_seconds{revision=\"bench\"}") * 1000.0;
    let edit_ms = edited
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let version = r["versions"]
        .as_array()
        .and_then(|v| v.iter().rev().find(|v| v["type"] == "eds"))
        .cloned()
        .unwrap_or_default();
    let first_ack_ms = version["first_ack_unix_ms"].as_f64().unwrap_or(0.0);
    let first = first_ack_ms - edit_ms;
    let conv = &version["convergence"];
    let floor_ms = 85.0 * n as f64 / 9000.0;
    let p99 = first + conv["p99_ms"].as_f64().unwrap_or(0.0);
    // From the moment the server had the change: the directory source takes an edited file
    // only once it reads the same twice, 50 ms apart (a Kubernetes watch event has no wait).
    let published_to_first = first_ack_ms - published_ms;
    let published_p99 = published_to_first + conv["p99_ms"].as_f64().unwrap_or(0.0);
    println!(
        "fan-out {n} streams, one assignment changed: {} ACKs; edit->first ACK {first:.0} ms, edit->ACK p50 {:.0} ms p99 {p99:.0} ms max {:.0} ms ({:.1}x the raw floor of {floor_ms:.0} ms); published->first ACK {published_to_first:.0} ms, published->ACK p99 {published_p99:.0} ms ({:.1}x the floor); serializations {encodes}; server CPU in the {} s after the edit {cpu:.2} s",
        version["acks"],
        first + conv["p50_ms"].as_f64().unwrap_or(0.0),
        first + conv["max_ms"].as_f64().unwrap_or(0.0),
        p99 / floor_ms,
        published_p99 / floor_ms,
        if full() { 3 } else { 1 },
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn churn(n: usize, secs: u64) {
    let dir = tempdir();
    mesh(&dir, 1000, 5);
    let server = Server::start(&dir, "100ms");
    let child = load(&server, n, secs + 5);
    wait_connected(&server, n, Duration::from_secs(30));
    let cpu0 = server.cpu_seconds();
    let builds0 = server.metric("revplane_snapshot_builds_total{revision=\"bench\"}");
    let start = Instant::now();
    let mut events = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        write_service(&dir, events * 37 % 1000, 5, events + 1);
        events += 1;
        let next = Duration::from_secs_f64(events as f64 / 30.0);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let cpu = server.cpu_seconds() - cpu0;
    let builds = server.metric("revplane_snapshot_builds_total{revision=\"bench\"}") - builds0;
    let r = report(child);
    let mut p99s: Vec<f64> = r["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "eds")
        .filter_map(|v| v["convergence"]["p99_ms"].as_f64())
        .collect();
    p99s.sort_by(|a, b| a.total_cmp(b));
    let median_p99 = p99s.get(p99s.len() / 2).copied().unwrap_or(0.0);
    let worst = p99s.last().copied().unwrap_or(0.0);
    println!(
        "churn {n} proxies, 1000 services, {events} endpoint events in {secs} s: {builds} snapshots ({:.1}/s), {} EDS versions seen, fan-out p99 median {median_p99:.0} ms worst {worst:.0} ms, server CPU {:.0}% of a core",
        builds / secs as f64,
        p99s.len(),
        cpu / secs as f64 * 100.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let only = std::env::var("REVPLANE_BENCH_ONLY").ok();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    println!(
        "scenarios ({})",
        if full() { "full size" } else { "smoke size" }
    );
    if run("idle") {
        let sizes: Vec<usize> = std::env::var("REVPLANE_BENCH_IDLE")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_else(|| {
                if full() {
                    vec![1000, 5000, 10_000]
                } else {
                    vec![20]
                }
            });
        idle(&sizes);
    }
    if run("storm") {
        storm(
            env_or("REVPLANE_BENCH_STORM", 5000, 20),
            if full() { 1000 } else { 20 },
        );
    }
    if run("fanout") {
        fanout(env_or("REVPLANE_BENCH_FANOUT", 10_000, 20));
    }
    if run("churn") {
        churn(
            env_or("REVPLANE_BENCH_CHURN", 1000, 10),
            env_or("REVPLANE_BENCH_CHURN_SECS", 60, 2),
        );
    }
}
