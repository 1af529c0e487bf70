//! Soak: proxies stay connected while services and endpoints churn and a tenth of the
//! proxies reconnect every minute; the server must hold steady.
//!
//! `cargo bench --bench soak` runs it at full size: 1,000 proxies (`revplane load
//! --reconnect-every 10m`: 10% reconnect each minute, on connections of their own) for 30
//! minutes, an endpoint change every second and a service created and one deleted every
//! 10 s (the catalog keeps its size). `cargo test` runs it at smoke size in about 20 s (20
//! proxies for 12 s, each reconnecting every 4 s, everything else ten times faster). It
//! checks, and prints:
//!
//! - the server's RSS after the warm-up (5 minutes; smoke: 4 s), sampled every 10 s: its
//!   least-squares slope in MiB per hour (reported), and the median of the last third of the
//!   samples against the median of the first third (full size: at most 2% higher). The
//!   comparison of medians, not the slope, is the check: the allocator moves RSS by a few
//!   percent either way between samples, so over half an hour a slope of a fraction of a
//!   MiB per hour is within that noise, while a leak shows as a last third above the first;
//! - streams stuck un-acked: proxies whose last response is still pending, with the same
//!   nonce, in two looks at `/debug/proxies` after the churn stopped (must be none);
//! - file descriptors: the server's open files once every proxy left, against before any
//!   came (must be equal).
//!
//! Overrides: `REVPLANE_SOAK_PROXIES`, `REVPLANE_SOAK_SECS`, `REVPLANE_SOAK_WARMUP_SECS`,
//! `REVPLANE_SOAK_RECONNECT_EVERY` (a duration such as `10m`), `REVPLANE_SOAK_CSV` (a file
//! for the samples: seconds, RSS KiB, open files, connected proxies).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One look at the server.
struct Sample {
    at: f64,
    rss_kib: u64,
    open_files: usize,
    connected: f64,
}

/// The proxies whose last response of some type is pending, with that response's nonce.
/// Panics unless the page is served and lists about `proxies` streams (a look that sees
/// nothing would make the stuck check pass without checking).
fn pending(server: &Server, proxies: usize) -> BTreeSet<(String, String, String)> {
    let (code, body) = server
        .get("/debug/proxies?limit=10000")
        .expect("/debug/proxies answers");
    assert_eq!(code, 200, "/debug/proxies: {body}");
    let json: Value = serde_json::from_str(&body).expect("/debug/proxies is JSON");
    let listed = json["proxies"].as_array().map_or(0, Vec::len);
    assert!(
        listed + proxies / 10 >= proxies,
        "/debug/proxies lists {listed} streams of {proxies} proxies"
    );
    let mut out = BTreeSet::new();
    for proxy in json["proxies"].as_array().into_iter().flatten() {
        let node = proxy["node_id"].as_str().unwrap_or_default();
        for (kind, status) in proxy["types"].as_object().into_iter().flatten() {
            if status["pending"] == true {
                let nonce = status["nonce"].as_str().unwrap_or_default();
                out.insert((node.to_string(), kind.clone(), nonce.to_string()));
            }
        }
    }
    out
}

/// Least-squares slope of RSS over time, in KiB per second.
fn slope(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.at).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let cov: f64 = samples
        .iter()
        .map(|s| (s.at - mean_t) * (s.rss_kib as f64 - mean_r))
        .sum();
    let var: f64 = samples.iter().map(|s| (s.at - mean_t).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var
    }
}

fn remove_service(dir: &Path, i: usize) {
    let _ = std::fs::remove_file(dir.join(format!("svc{i}.yaml")));
}

fn main() {
    let scale = if full() { 1.0 } else { 0.1 };
    let secs = |s: f64| Duration::from_secs_f64(s * scale);
    let proxies: usize = env_or("REVPLANE_SOAK_PROXIES", 1000, 20);
    let run = Duration::from_secs(env_or("REVPLANE_SOAK_SECS", 1800, 12));
    let warmup = Duration::from_secs(env_or("REVPLANE_SOAK_WARMUP_SECS", 300, 4));
    let reconnect_every = std::env::var("REVPLANE_SOAK_RECONNECT_EVERY")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(run / 3);
    let (sample_every, endpoint_every, service_every) = (secs(10.0), secs(1.0), secs(10.0));
    let (quiet, look_apart) = (secs(20.0), secs(10.0));
    let services = 200;
    println!(
        "soak ({}): {proxies} proxies for {run:?}, reconnect every {reconnect_every:?}",
        if full() { "full size" } else { "smoke size" }
    );

    let dir = tempdir();
    mesh(&dir, services, 5);
    let server = Server::start(&dir, "100ms");
    std::thread::sleep(Duration::from_millis(500));
    let files_before = server.open_files();
    // Margin for connecting and for the looks; the load must still run at the second look.
    let load_secs = (run + quiet + look_apart + secs(60.0)).as_secs();
    let reconnect = humantime::format_duration(reconnect_every).to_string();
    let mut load = load_with(
        &server,
        proxies,
        load_secs,
        &["--reconnect-every", &reconnect],
    );
    wait_connected(&server, proxies, Duration::from_secs(120));

    let start = Instant::now();
    let (mut samples, mut endpoint_changes, mut service_changes) = (Vec::new(), 0usize, 0usize);
    let (mut next_sample, mut next_endpoint, mut next_service) =
        (Duration::ZERO, endpoint_every, service_every);
    while start.elapsed() < run {
        let now = start.elapsed();
        if now >= next_sample {
            samples.push(Sample {
                at: now.as_secs_f64(),
                rss_kib: server.status_kib("VmRSS:"),
                open_files: server.open_files(),
                connected: server.connected(),
            });
            next_sample += sample_every;
        }
        if now >= next_endpoint {
            endpoint_changes += 1;
            write_service(&dir, endpoint_changes * 37 % services, 5, endpoint_changes);
            next_endpoint += endpoint_every;
        }
        if now >= next_service {
            // A new service, and the one created ten changes ago goes: the size holds.
            service_changes += 1;
            write_service(&dir, services + service_changes, 5, 0);
            if service_changes > 10 {
                remove_service(&dir, services + service_changes - 10);
            }
            next_service += service_every;
        }
        let next = next_sample.min(next_endpoint).min(next_service);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    // Churn stopped: every stream must settle (reconnects go on meanwhile).
    std::thread::sleep(quiet);
    let first_look = pending(&server, proxies);
    std::thread::sleep(look_apart);
    let second_look = pending(&server, proxies);
    assert!(
        load.try_wait().expect("the load generator").is_none(),
        "the load generator ended before the second look"
    );
    let stuck: Vec<_> = first_look.intersection(&second_look).collect();
    let report = report(load);
    let gone = Instant::now();
    while server.connected() > 0.0 && gone.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let files_after = server.open_files();

    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= warmup.as_secs_f64())
        .collect();
    let kib_per_s = slope(&steady);
    let mib_per_hour = kib_per_s * 3600.0 / 1024.0;
    let mean_mib =
        steady.iter().map(|s| s.rss_kib as f64).sum::<f64>() / steady.len().max(1) as f64 / 1024.0;
    let (min_mib, max_mib) = steady.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| {
        let m = s.rss_kib as f64 / 1024.0;
        (lo.min(m), hi.max(m))
    });
    let third = steady.len() / 3;
    let median_mib = |part: &[&Sample]| {
        let mut kib: Vec<u64> = part.iter().map(|s| s.rss_kib).collect();
        kib.sort_unstable();
        kib.get(kib.len() / 2).copied().unwrap_or(0) as f64 / 1024.0
    };
    let (first_third, last_third) = (
        median_mib(&steady[..third]),
        median_mib(&steady[steady.len() - third..]),
    );
    let peak_files = samples.iter().map(|s| s.open_files).max().unwrap_or(0);
    let min_connected = samples.iter().map(|s| s.connected).fold(f64::MAX, f64::min);
    println!(
        "soak {proxies} proxies, {:.0} s: {endpoint_changes} endpoint changes, {service_changes} services created (and as many deleted), {} reconnects, {} streams opened, refused {}, failed {}",
        run.as_secs_f64(),
        report["reconnects"],
        report["streams_opened"],
        report["streams_refused"],
        report["streams_failed"],
    );
    println!(
        "  RSS after the {:.0} s warm-up: mean {mean_mib:.1} MiB (min {min_mib:.1}, max {max_mib:.1}), slope {mib_per_hour:+.2} MiB/hour over {} samples; median of the first third {first_third:.1} MiB, of the last third {last_third:.1} MiB",
        warmup.as_secs_f64(),
        steady.len()
    );
    println!(
        "  open files: {files_before} before, peak {peak_files} with the proxies, {files_after} after they left; fewest connected while churning {min_connected}; stuck un-acked {}",
        stuck.len()
    );
    if let Ok(path) = std::env::var("REVPLANE_SOAK_CSV") {
        let csv: String = std::iter::once("seconds,rss_kib,open_files,connected\n".to_string())
            .chain(samples.iter().map(|s| {
                format!(
                    "{:.1},{},{},{}\n",
                    s.at, s.rss_kib, s.open_files, s.connected
                )
            }))
            .collect();
        std::fs::write(path, csv).expect("write the samples");
    }

    assert!(stuck.is_empty(), "streams stuck un-acked: {stuck:?}");
    assert_eq!(
        files_after, files_before,
        "file descriptors leaked: {files_before} before the proxies, {files_after} after"
    );
    assert!(
        report["streams_refused"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{report}"
    );
    assert!(
        report["streams_failed"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{report}"
    );
    assert!(report["reconnects"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(
        min_connected + (proxies / 10) as f64 >= proxies as f64,
        "only {min_connected} of {proxies} proxies connected at one look while churning"
    );
    if full() {
        assert!(
            last_third <= first_third * 1.02,
            "RSS grows after the warm-up: median {first_third:.1} MiB in the first third, {last_third:.1} MiB in the last (slope {mib_per_hour:+.2} MiB/hour)"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
