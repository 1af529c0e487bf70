//! What a client can make the xDS server hold before the revision gate, and what one that left
//! gives back: the handshake deadline and the connection limit, the first-request limit and
//! the budget for partly received requests (in-process); the memory-pinning attack against the
//! `revplane` process (its RSS); admission places of clients that left while queued.

mod common;

use std::time::{Duration, Instant};

use common::process::Revplane;
use common::*;
use revplane::app::{self, Server};
use revplane::cli::ServeArgs;
use revplane::load::stall::{self, StallConfig, StallReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start_with(revision: &str, edit: impl FnOnce(&mut ServeArgs)) -> Server {
    let mut args = serve_args(revision, &example_mesh());
    edit(&mut args);
    let xds = TcpListener::bind(args.xds_addr).await.unwrap();
    let admin = TcpListener::bind(args.admin_addr).await.unwrap();
    app::start_on(args, xds, admin).await.unwrap()
}

/// Reads until the server closes the connection; `false` if it is still open after `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn silent_and_trickling_connections_are_closed_after_the_handshake_timeout() {
    let server = start_with("canary", |a| a.handshake_timeout = Duration::from_secs(1)).await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(TcpStream::connect(server.xds_addr).await.unwrap());
    }
    // Part of the preface is not the preface.
    conns[0].write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A real client that then stays idle keeps its connection.
    let mut proxy = AdsClient::open(&server, first_cds("sidecar~10.0.0.1~a.shop~shop", "canary"))
        .await
        .unwrap();
    let cds = proxy.recv().await.unwrap();

    let start = Instant::now();
    for conn in &mut conns {
        assert!(
            closed_within(conn, Duration::from_secs(5)).await,
            "a connection that never sent the HTTP/2 preface is still open after 5 s"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        server
            .xds_metrics
            .refused_connection_count("handshake_timeout"),
        50
    );
    // Still connected (a closed connection would end the stream with an error).
    proxy.ack(&cds, &[]).await;
    proxy.expect_silence(Duration::from_millis(1500)).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once_and_slots_come_back() {
    let server = start_with("canary", |a| {
        a.max_connections = 5;
        a.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(server.xds_addr).await.unwrap());
    }
    let open = server.xds_metrics.connections.clone();
    until("5 connections accepted", Duration::from_secs(2), || {
        open.get() == 5
    })
    .await;
    let mut extra = TcpStream::connect(server.xds_addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_millis(500)).await,
        "the sixth connection is closed at once"
    );
    assert_eq!(
        server
            .xds_metrics
            .refused_connection_count("connection_limit"),
        1
    );
    drop(held);
    until("slots given back", Duration::from_secs(2), || {
        open.get() == 0
    })
    .await;
    let mut proxy = AdsClient::open(&server, first_cds("sidecar~10.0.0.2~b.shop~shop", "canary"))
        .await
        .unwrap();
    assert!(proxy.recv().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_first_request_over_its_limit_is_refused_and_later_requests_may_be_larger() {
    let server = start("canary", &example_mesh()).await;
    let names = unknown_clusters(5_000);
    let mut first = first_cds("sidecar~10.0.0.3~c.shop~shop", "canary");
    first.resource_names = names.clone();
    let refused = match AdsClient::open(&server, first).await {
        Ok(mut client) => client.recv().await.unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains("--max-first-request-bytes"),
        "{refused:?}"
    );
    assert_eq!(server.xds_metrics.rejected_count("request_too_large"), 1);

    let mut proxy = subscribed_to_eds(&server, "sidecar~10.0.0.4~d.shop~shop", names).await;
    let eds = proxy.recv().await.expect("a large later request is served");
    assert_eq!(eds.type_url, EDS);
    server.stop().await;
}

/// `n` cluster names the example mesh does not have (~50 bytes each).
fn unknown_clusters(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("outbound|80||svc-{i}.shop.svc.cluster.local"))
        .collect()
}

/// A canary proxy that took its clusters and then asked for their assignments and `more`.
async fn subscribed_to_eds(server: &Server, node: &str, more: Vec<String>) -> AdsClient {
    let mut proxy = AdsClient::open(server, first_cds(node, "canary"))
        .await
        .unwrap();
    let cds = proxy.recv().await.unwrap();
    proxy.ack(&cds, &[]).await;
    let mut subscribe = common::names(&cds);
    subscribe.extend(more);
    proxy.send(request(EDS, &subscribe, "", "")).await;
    proxy
}

fn ended(report: &StallReport, code: &str) -> usize {
    report.ended.get(code).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn partly_received_requests_share_one_budget_and_streams_over_it_are_refused() {
    let server = start_with("canary", |a| a.request_buffer_bytes = 256 * 1024).await;
    let budget = server.xds_metrics.request_buffer_bytes.clone();
    // Before the gate: first requests just under their limit, 60 KB each.
    let report = stall::run(&StallConfig {
        xds_addr: server.xds_addr,
        streams: 20,
        connections: 1,
        declared_bytes: 60_000,
        revision: None,
        duration: Duration::from_secs(2),
    })
    .await
    .unwrap();
    assert!(report.stalled <= 5, "{report:?}");
    assert!(ended(&report, "ResourceExhausted") >= 15, "{report:?}");
    assert!(server.xds_metrics.rejected_count("request_buffer_full") >= 15);
    until(
        "the budget given back when streams end",
        Duration::from_secs(2),
        || budget.get() == 0,
    )
    .await;

    // After the gate: a valid first request, then a large one that stalls.
    let report = stall::run(&StallConfig {
        xds_addr: server.xds_addr,
        streams: 10,
        connections: 1,
        declared_bytes: 1024 * 1024 - 1,
        revision: Some("canary".to_string()),
        duration: Duration::from_secs(3),
    })
    .await
    .unwrap();
    assert!(report.stalled <= 1, "{report:?}");
    assert!(ended(&report, "ResourceExhausted") >= 9, "{report:?}");
    server.stop().await;
}

/// A proxy past the revision gate whose large request finds the budget full waits for room
/// instead of being refused (a connect storm of 1 MB EDS subscriptions used to turn proxies
/// away); it is served once the stream holding the budget goes.
#[tokio::test(flavor = "multi_thread")]
async fn an_admitted_proxy_waits_for_room_in_a_full_budget_instead_of_being_refused() {
    let server = start_with("canary", |a| a.request_buffer_bytes = 256 * 1024).await;
    let budget = server.xds_metrics.request_buffer_bytes.clone();
    // A stream past the gate stalls inside a 200 KB request for 3 s: ~224 KiB of the budget.
    let xds_addr = server.xds_addr;
    let stalled = tokio::spawn(async move {
        stall::run(&StallConfig {
            xds_addr,
            streams: 1,
            connections: 1,
            declared_bytes: 200_000,
            revision: Some("canary".to_string()),
            duration: Duration::from_secs(3),
        })
        .await
    });
    until(
        "the stalled request holds the budget",
        Duration::from_secs(2),
        || budget.get() > 200 * 1024,
    )
    .await;
    let sent = Instant::now();
    let node = "sidecar~10.0.0.9~w.shop~shop";
    let mut proxy = subscribed_to_eds(&server, node, unknown_clusters(3_000)).await;
    let eds = proxy
        .recv()
        .await
        .expect("served after a wait, not refused");
    assert_eq!(eds.type_url, EDS);
    assert!(
        sent.elapsed() > Duration::from_secs(1),
        "answered after {:?}: the budget was never full",
        sent.elapsed()
    );
    assert_eq!(server.xds_metrics.rejected_count("request_buffer_full"), 0);
    stalled.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_leave_while_queued_for_admission_give_their_places_back() {
    let server = start_with("canary", |a| {
        a.new_streams_per_second = 2;
        a.new_stream_burst = 1;
    })
    .await;
    let mut first = AdsClient::open(&server, first_cds("sidecar~10.0.1.0~e.shop~shop", "canary"))
        .await
        .unwrap();
    first.recv().await.unwrap();
    // A storm: 12 more queue up (6 s of turns at 2 a second), then all of them leave.
    let mut storm = Vec::new();
    for i in 0..12 {
        let node = format!("sidecar~10.0.1.{}~s{i}.shop~shop", i + 1);
        storm.push(
            AdsClient::open(&server, first_cds(&node, "canary"))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(storm);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let start = Instant::now();
    let mut late = AdsClient::open(
        &server,
        first_cds("sidecar~10.0.2.0~late.shop~shop", "canary"),
    )
    .await
    .unwrap();
    late.recv().await.expect("admitted");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the client after the storm waited {:?} behind clients that had left",
        start.elapsed()
    );
    server.stop().await;
}

/// The attack of issue 11 against the server process: 2 connections × 100 streams, each a
/// length prefix near `--max-request-bytes` (4 MiB) and 90% of the body, then stalling.
/// Before the limits the server grew by ~760 MiB; now the streams are refused as they come.
/// Then the same with prefixes just under the first-request limit from 2,000 streams: bounded
/// by the request budget.
#[tokio::test(flavor = "multi_thread")]
async fn the_memory_pinning_attack_cannot_grow_the_server_past_the_budget() {
    let server = Revplane::start("canary", &example_mesh()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = status_mib(server.pid(), "VmRSS:");
    let near_limit = stall::run(&StallConfig {
        xds_addr: server.xds,
        streams: 200,
        connections: 2,
        declared_bytes: 4 * 1024 * 1024 - 1024,
        revision: None,
        duration: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let peak = status_mib(server.pid(), "VmHWM:");
    println!("200 streams stalling near --max-request-bytes: RSS {base:.1} MiB -> peak {peak:.1} MiB; {near_limit:?}");
    assert!(
        peak - base < 64.0,
        "server RSS grew from {base:.0} to {peak:.0} MiB under 200 stalled 4 MiB requests: {near_limit:?}"
    );
    assert_eq!(ended(&near_limit, "OutOfRange"), 200, "{near_limit:?}");

    let under_first_limit = stall::run(&StallConfig {
        xds_addr: server.xds,
        streams: 2_000,
        connections: 20,
        declared_bytes: 64 * 1024 - 64,
        revision: None,
        duration: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let peak = status_mib(server.pid(), "VmHWM:");
    println!("2,000 streams stalling under the first-request limit: RSS {base:.1} MiB -> peak {peak:.1} MiB; {under_first_limit:?}");
    // The budget (64 MiB) plus what the 2,000 streams themselves take (tasks, HTTP/2 state:
    // ~20 KiB each, as an idle proxy's stream; 32 KiB allowed).
    assert!(
        peak - base < 64.0 + 2_000.0 * 32.0 / 1024.0,
        "server RSS grew from {base:.0} to {peak:.0} MiB: {under_first_limit:?}"
    );
    assert!(under_first_limit.stalled <= 1_100, "{under_first_limit:?}");
}
