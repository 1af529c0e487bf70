//! The load generator against the real server in-process, at small N: its numbers must add up.

mod common;

use std::time::Duration;

use common::*;
use revplane::load::{run, LoadConfig};

fn config(
    server: &revplane::app::Server,
    proxies: usize,
    revision: &str,
    duration: Duration,
) -> LoadConfig {
    LoadConfig {
        xds_addr: server.xds_addr,
        proxies,
        revision: revision.to_string(),
        eds: true,
        lds: true,
        rds: true,
        duration,
        connections: None,
        ramp: Duration::ZERO,
        reconnect_every: None,
        ack_times: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_proxy_opens_gets_full_config_and_acks_every_version() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let load = tokio::spawn(run(config(&server, 25, "canary", Duration::from_secs(3))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();
    std::fs::write(&shop, text.replace("port: 18180", "port: 18181")).unwrap();
    let report = load.await.unwrap().unwrap();

    assert_eq!(report.streams_opened, 25);
    assert!(
        report.streams_refused.is_empty() && report.streams_failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.first_full_config.count, 25);
    let types: Vec<&str> = report.versions.iter().map(|v| v.r#type.as_str()).collect();
    assert_eq!(
        types,
        ["cds", "eds", "lds", "rds", "eds"],
        "one CDS, LDS and RDS version, the EDS version before and after the change"
    );
    for v in &report.versions {
        assert_eq!(v.acks, 25, "every proxy ACKs every version: {v:?}");
        assert!(
            v.convergence.max_ms >= v.convergence.p99_ms
                && v.convergence.p99_ms >= v.convergence.p50_ms
        );
        assert!(v.last_ack_unix_ms >= v.first_ack_unix_ms);
    }
    // 25 × (CDS, initial EDS, LDS, RDS) + 25 EDS after the change.
    assert_eq!(report.responses, 125);
    // Every response is counted with its length: at least a resource each, far from 64 KiB.
    assert!(
        (125 * 100..125 * 65_536).contains(&report.response_bytes),
        "{report:?}"
    );
    // The first request, with the node and its metadata, is the largest on a small mesh.
    assert!(
        (200..4096).contains(&report.largest_request_bytes),
        "{report:?}"
    );
    let table = report.to_table();
    assert!(
        table.contains("proxies 25   opened 25   refused 0"),
        "{table}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxies_reconnect_on_schedule_and_leave_no_stream_behind() {
    let server = start("canary", &example_mesh()).await;
    // Each of 20 proxies reconnects every 2 s, the first after 0.1 s, the last after 2 s:
    // 10 reconnects a second, 3 or 4 per proxy in 7 s.
    let report = run(LoadConfig {
        reconnect_every: Some(Duration::from_secs(2)),
        ..config(&server, 20, "canary", Duration::from_secs(7))
    })
    .await
    .unwrap();
    assert!(
        report.streams_refused.is_empty() && report.streams_failed.is_empty(),
        "{report:?}"
    );
    assert!((55..=80).contains(&report.reconnects), "{report:?}");
    // A session counts as opened at its first response: all but a few cut short count.
    assert!(
        report.streams_opened + 3 >= 20 + report.reconnects,
        "{report:?}"
    );
    assert!(
        report.first_full_config.count + 3 >= report.streams_opened,
        "each new stream gets its full config again: {report:?}"
    );
    assert!(
        report
            .to_table()
            .contains(&format!("reconnects {}", report.reconnects)),
        "{}",
        report.to_table()
    );
    eventually(Duration::from_secs(5), "every stream closed", || async {
        server.xds_metrics.connected_proxies.get() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_streams_are_counted_by_status_code() {
    let server = start("stable", &example_mesh()).await;
    let report = run(config(&server, 12, "canary", Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(report.streams_opened, 0);
    assert_eq!(
        report.streams_refused.get("PermissionDenied"),
        Some(&12),
        "{report:?}"
    );
    // Why, in the server's words: the gate's message names both revisions.
    let why = &report.streams_refused_first_message["PermissionDenied"];
    assert!(
        why.contains("canary") && why.contains("stable"),
        "{report:?}"
    );
    assert!(report.versions.is_empty());
    assert_eq!(server.xds_metrics.rejected_count("revision_mismatch"), 12);
    let shared = LoadConfig {
        connections: Some(3),
        ..config(&server, 9, "stable", Duration::from_secs(2))
    };
    let report = run(shared).await.unwrap();
    assert_eq!(
        report.streams_opened, 9,
        "shared connections carry every stream"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_storm_beyond_the_admission_queue_is_refused_not_buffered() {
    let mut args = serve_args("canary", &example_mesh());
    args.new_streams_per_second = 20;
    args.new_stream_burst = 5;
    args.admission_max_wait = Duration::from_secs(1);
    let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = revplane::app::start_on(args, xds, admin).await.unwrap();
    let report = run(config(&server, 60, "canary", Duration::from_secs(4)))
        .await
        .unwrap();
    let refused = report
        .streams_refused
        .get("ResourceExhausted")
        .copied()
        .unwrap_or(0);
    // 5 at once, then 20/s for at most 1 s of queueing: about 25 admitted.
    assert!((20..=30).contains(&report.streams_opened), "{report:?}");
    assert_eq!(report.streams_opened + refused, 60, "{report:?}");
    assert_eq!(report.first_full_config.count, report.streams_opened);
    assert_eq!(
        server.xds_metrics.rejected_count("overloaded"),
        refused as u64
    );
    server.stop().await;
}
