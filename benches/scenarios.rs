//! Load scenarios: the `revplane` server and the `revplane load` generator as two processes
//! (each stream is a connection, and one process may hold at most 20,000 open files).
//!
//! `cargo bench --bench scenarios` runs them at full size; `cargo test` runs them tiny as a
//! smoke test and asserts nothing about time. Sizes can be overridden:
//! `REVPLANE_BENCH_IDLE=1000,5000,10000`, `REVPLANE_BENCH_STORM=5000`,
//! `REVPLANE_BENCH_FANOUT=10000`, `REVPLANE_BENCH_CHURN=1000` (proxies),
//! `REVPLANE_BENCH_CHURN_SECS=60`, `REVPLANE_BENCH_LARGE=2000`,
//! `REVPLANE_BENCH_ONLY=idle|storm|fanout|churn|large|admission` (`admission`: the storm with
//! the default admission control and with none, alternated, `REVPLANE_BENCH_ROUNDS` times;
//! `REVPLANE_BENCH_ADMISSION_LARGE=1` adds the large storm both ways);
//! `REVPLANE_BENCH_SERVER_BIN=path` serves from another `revplane` build (A/B runs);
//! `REVPLANE_BENCH_CATALOGS=realistic,small` (storm and fan-out run on each: `realistic` is
//! 1,000 services of 2–10 endpoints, the headline; `small` is 10 services of 10 endpoints);
//! `REVPLANE_BENCH_SERVER_ARGS="--push-concurrency 2048"` adds flags to `revplane serve`.
//! `large` (not in the default run) is the storm of a large cluster: 10,000 services × 2 ports
//! (20,000 clusters, 4 endpoints each) and 2,000 proxies connecting at once.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;

/// The catalogs storm and fan-out run on, by name.
fn catalogs() -> Vec<(String, Shape)> {
    let names =
        std::env::var("REVPLANE_BENCH_CATALOGS").unwrap_or_else(|_| "realistic,small".into());
    names
        .split(',')
        .map(|name| {
            let shape = match name {
                "realistic" => Shape::realistic(if full() { 1000 } else { 20 }),
                "small" => Shape::fixed(10, 10),
                other => {
                    panic!("REVPLANE_BENCH_CATALOGS: unknown catalog {other} (realistic, small)")
                }
            };
            (name.to_string(), shape)
        })
        .collect()
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

fn storm(n: usize, name: &str, shape: Shape, secs: u64) {
    storm_with(n, name, shape, secs, &[]);
}

/// Admission control effectively off: every stream admitted at once, no push limit.
const NO_ADMISSION: [&str; 6] = [
    "--new-streams-per-second",
    "1000000",
    "--new-stream-burst",
    "1000000",
    "--push-concurrency",
    "1000000",
];

fn storm_with(n: usize, name: &str, shape: Shape, secs: u64, server_args: &[&str]) {
    let dir = tempdir();
    write_mesh(&dir, shape);
    let server = Server::start_with(&dir, "100ms", server_args);
    let cpu0 = server.cpu_seconds();
    let child = load(&server, n, if full() { secs } else { 3 });
    // Within the load run: a storm the server cannot take is reported, not a panic.
    let connected = match try_wait_connected(&server, n, Duration::from_secs(secs)) {
        Ok(took) => format!("all connected in {:.2} s", took.as_secs_f64()),
        Err(most) => format!("never all connected (at most {most} of {n} seen)"),
    };
    let r = report(child);
    let full = &r["first_full_config"];
    println!(
        "storm {n} proxies, {name} catalog ({}){}: {connected}; full config ACKed p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({} of {n}); refused {}; failed {}; server peak RSS {:.1} MiB, CPU {:.2} s",
        shape.describe(),
        if server_args == NO_ADMISSION {
            ", admission off"
        } else {
            ""
        },
        full["p50_ms"].as_f64().unwrap_or(0.0),
        full["p99_ms"].as_f64().unwrap_or(0.0),
        full["max_ms"].as_f64().unwrap_or(0.0),
        full["count"],
        r["streams_refused"],
        r["streams_failed"],
        server.status_kib("VmHWM:") as f64 / 1024.0,
        server.cpu_seconds() - cpu0,
    );
    drop(server);
    // The same bytes through raw TCP, once the server is gone: what the storm costs at best.
    let received = r["response_bytes"].as_u64().unwrap_or(0) as usize;
    let configured = full["count"].as_u64().unwrap_or(0) as usize;
    if let Some(push) = received.checked_div(configured) {
        let floor = floor::measure_push(configured, push, floor::ACK);
        println!(
            "  storm floor: {:.1} MB to each of {configured} connections over raw TCP in {:.0} ms, server CPU {:.2} s, clients' CPU {:.2} s; p99 is {:.1}x the floor",
            push as f64 / 1e6,
            floor.ms,
            floor.cpu_us_per_conn * configured as f64 / 1e6,
            floor.client_cpu_s,
            full["p99_ms"].as_f64().unwrap_or(0.0) / floor.ms,
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn fanout(n: usize, name: &str, shape: Shape) {
    // The floor first, on a quiet machine, for this run's comparison.
    let floor = floor::measure(n, floor::ACK);
    let floor_ms = floor.ms;
    let dir = tempdir();
    write_mesh(&dir, shape);
    // No quiet period: the figure is the push, not the debounce.
    let server = Server::start(&dir, "1ms");
    let child = load(&server, n, if full() { 60 } else { 6 });
    wait_connected(&server, n, Duration::from_secs(25));
    // The connect storm must be over: the figure is one change's push, not the storm's tail.
    let synced = wait_synced(&server, n, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(1));
    let encodes0 = server.metric("revplane_snapshot_encodes_total{revision=\"bench\"}");
    let sampler = CpuSampler::start(server.child.id());
    let edited = SystemTime::now();
    write_shaped(&dir, shape, 3, 1);
    let r = report(child);
    let samples = sampler.stop();
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
    // From the edit to the last ACK of the change: the push and its ACKs, nothing after
    // (the load generator leaving, 10,000 streams closing).
    let last_ack_ms = version["last_ack_unix_ms"].as_f64().unwrap_or(0.0);
    let cpu = samples.between(edit_ms, last_ack_ms);
    let first = first_ack_ms - edit_ms;
    let conv = &version["convergence"];
    let p99 = first + conv["p99_ms"].as_f64().unwrap_or(0.0);
    // From the moment the server had the change: the directory source takes an edited file
    // only once it reads the same twice, 50 ms apart (a Kubernetes watch event has no wait).
    let published_to_first = first_ack_ms - published_ms;
    let published_p99 = published_to_first + conv["p99_ms"].as_f64().unwrap_or(0.0);
    println!(
        "fan-out {n} streams, {name} catalog ({}), one assignment changed: {} ACKs; edit->first ACK {first:.0} ms, edit->ACK p50 {:.0} ms p99 {p99:.0} ms max {:.0} ms ({:.1}x the raw floor of {floor_ms:.0} ms, measured now); published->first ACK {published_to_first:.0} ms, published->ACK p99 {published_p99:.0} ms ({:.1}x the floor); serializations {encodes}; server CPU from the edit to the last ACK {cpu:.2} s = {:.1} us per stream per push; storm synced in {:.1} s",
        shape.describe(),
        version["acks"],
        first + conv["p50_ms"].as_f64().unwrap_or(0.0),
        first + conv["max_ms"].as_f64().unwrap_or(0.0),
        p99 / floor_ms,
        published_p99 / floor_ms,
        cpu * 1e6 / n as f64,
        synced.as_secs_f64(),
    );
    // The same floor with ACKs as long as this catalog's real ones (an EDS ACK names every
    // subscribed assignment): what the kernel and a runtime cost for the bytes a SotW ACK
    // moves, and a floor for the server's CPU per stream.
    // The largest request is the EDS ACK naming every assignment on a catalog of many
    // services; on a small one it may be the first request, with the node.
    let ack = (r["largest_request_bytes"].as_u64().unwrap_or(0) as usize).max(floor::ACK);
    // Measured on a quiet machine: the server's streams closed and the server gone.
    drop(server);
    let sized = floor::measure(n, ack);
    // CPU is read in 10 ms ticks: a small run (the smoke's 20 streams) may read none.
    let cpu_ratio = match sized.cpu_us_per_conn {
        c if c > 0.0 => format!("{:.1}x", cpu * 1e6 / n as f64 / c),
        _ => "too small to read".to_string(),
    };
    println!(
        "  floor CPU {:.1} us per connection with {} B ACKs; with ACKs the size of the largest request sent ({ack} B): floor {:.0} ms ({:.1}x), CPU {:.1} us per connection ({cpu_ratio})",
        floor.cpu_us_per_conn,
        floor::ACK,
        sized.ms,
        published_p99 / sized.ms.max(1.0),
        sized.cpu_us_per_conn,
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

/// The large cluster of issue 12: 10,000 services × 2 ports, 4 endpoints each.
fn large_shape() -> Shape {
    Shape {
        services: if full() { 10_000 } else { 20 },
        endpoints: Endpoints::Fixed(4),
        ports: 2,
    }
}

fn main() {
    floor::serve_if_asked();
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
        for (name, shape) in catalogs() {
            storm(env_or("REVPLANE_BENCH_STORM", 5000, 20), &name, shape, 20);
        }
    }
    if run("fanout") {
        for (name, shape) in catalogs() {
            fanout(env_or("REVPLANE_BENCH_FANOUT", 10_000, 20), &name, shape);
        }
    }
    if run("churn") {
        churn(
            env_or("REVPLANE_BENCH_CHURN", 1000, 10),
            env_or("REVPLANE_BENCH_CHURN_SECS", 60, 2),
        );
    }
    if only.as_deref() == Some("admission") {
        // The defaults against no admission control, alternated, on the realistic catalog;
        // with REVPLANE_BENCH_ADMISSION_LARGE=1 also on the large cluster's storm.
        let n = env_or("REVPLANE_BENCH_STORM", 5000, 20);
        let shape = Shape::realistic(if full() { 1000 } else { 20 });
        for _ in 0..env_or("REVPLANE_BENCH_ROUNDS", 2, 1) {
            storm_with(n, "realistic", shape, 20, &[]);
            storm_with(n, "realistic", shape, 20, &NO_ADMISSION);
        }
        if std::env::var("REVPLANE_BENCH_ADMISSION_LARGE").is_ok() {
            let large = large_shape();
            let n = env_or("REVPLANE_BENCH_LARGE", 2000, 10);
            storm_with(n, "large", large, 90, &[]);
            storm_with(n, "large", large, 90, &NO_ADMISSION);
        }
    }
    // Heavy (minutes, GBs): only when asked for.
    if only.as_deref() == Some("large") {
        storm(
            env_or("REVPLANE_BENCH_LARGE", 2000, 10),
            "large",
            large_shape(),
            90,
        );
    }
}
