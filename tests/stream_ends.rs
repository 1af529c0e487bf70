//! Every admitted ADS stream's end is counted by reason (`revplane_xds_stream_ends_total`):
//! a proxy that closes its side, resets its stream or closes its connection without a goodbye
//! (a killed proxy) left on its own; a stream whose connection breaks under it (a TCP reset)
//! is `stream_lost`, and so is a hung proxy's, let go after the HTTP/2 keepalive timeout.
//! In-process server, raw HTTP/2 client (so the connection can be cut).

mod common;

use std::time::Duration;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const ADS: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// An admitted stream that got its first response, on a connection of its own.
struct RawStream {
    send: h2::SendStream<Bytes>,
    body: h2::RecvStream,
    connection: tokio::task::JoinHandle<()>,
}

/// `reset_on_close`: the socket closes with a TCP reset (linger 0) instead of a FIN.
async fn open(addr: std::net::SocketAddr, node: &str, reset_on_close: bool) -> RawStream {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    if reset_on_close {
        socket2::SockRef::from(&tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    tcp.set_nonblocking(true).unwrap();
    open_on(TcpStream::from_std(tcp).unwrap(), addr, node).await
}

/// [`open`] over `io`.
async fn open_on<T>(io: T, addr: std::net::SocketAddr, node: &str) -> RawStream
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(io).await.unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::post(format!("http://{addr}{ADS}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(grpc_framed(&first_cds(node, "canary")), false)
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .expect("a first response")
        .expect("a DATA frame")
        .unwrap();
    let _ = body.flow_control().release_capacity(first.len());
    RawStream {
        send,
        body,
        connection,
    }
}

async fn ends(admin: std::net::SocketAddr, reason: &str) -> f64 {
    metric(
        admin,
        &format!("revplane_xds_stream_ends_total{{revision=\"canary\",reason=\"{reason}\"}}"),
    )
    .await
}

#[tokio::test]
async fn each_way_a_stream_ends_is_counted_by_reason() {
    let server = start("canary", &example_mesh()).await;
    let (xds, admin) = (server.xds_addr, server.admin_addr);

    // The proxy ends its side: the ordinary way to leave.
    let mut closed = open(
        xds,
        "sidecar~10.0.0.1~closed.shop~shop.svc.cluster.local",
        false,
    )
    .await;
    closed.send.send_data(Bytes::new(), true).unwrap();
    eventually(Duration::from_secs(5), "client_closed counted", || async {
        ends(admin, "client_closed").await == 1.0
    })
    .await;

    // The proxy resets its stream (Envoy does on shutdown).
    let mut reset = open(
        xds,
        "sidecar~10.0.0.2~reset.shop~shop.svc.cluster.local",
        false,
    )
    .await;
    reset.send.send_reset(h2::Reason::CANCEL);
    eventually(Duration::from_secs(5), "client_reset counted", || async {
        ends(admin, "client_reset").await == 1.0
    })
    .await;

    // The proxy's connection closes without a goodbye (a killed proxy): it left.
    let killed = open(
        xds,
        "sidecar~10.0.0.3~killed.shop~shop.svc.cluster.local",
        false,
    )
    .await;
    killed.connection.abort();
    drop(killed.body);
    eventually(
        Duration::from_secs(5),
        "a closed connection counted",
        || async { ends(admin, "client_closed").await == 2.0 },
    )
    .await;

    // The connection breaks under the stream (a TCP reset): lost, not the proxy's doing.
    let lost = open(
        xds,
        "sidecar~10.0.0.4~lost.shop~shop.svc.cluster.local",
        true,
    )
    .await;
    lost.connection.abort();
    drop(lost.body);
    eventually(Duration::from_secs(5), "stream_lost counted", || async {
        ends(admin, "stream_lost").await == 1.0
    })
    .await;

    eventually(Duration::from_secs(5), "nobody connected", || async {
        metric(admin, "revplane_xds_connected_proxies{revision=\"canary\"}").await == 0.0
    })
    .await;
    // Each end counted once, under one reason.
    for (reason, count) in [
        ("client_closed", 2.0),
        ("client_reset", 1.0),
        ("stream_lost", 1.0),
        ("refused", 0.0),
    ] {
        assert_eq!(ends(admin, reason).await, count, "{reason}");
    }
    drop((closed, reset));
    server.stop().await;
}

/// A connection whose client stops reading and writing when told to (a hung proxy: its host
/// keeps the socket open, nothing answers on it).
struct Freezable {
    tcp: TcpStream,
    frozen: Arc<AtomicBool>,
}

impl AsyncRead for Freezable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_proxy_that_stops_answering_is_closed_after_the_keepalive_timeout() {
    let mut args = serve_args("canary", &example_mesh());
    args.keepalive_interval = Duration::from_millis(500);
    args.keepalive_timeout = Duration::from_millis(500);
    let xds = tokio::net::TcpListener::bind(args.xds_addr).await.unwrap();
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .unwrap();
    let server = revplane::app::start_on(args, xds, admin).await.unwrap();
    let (xds, admin) = (server.xds_addr, server.admin_addr);

    let frozen = Arc::new(AtomicBool::new(false));
    let tcp = Freezable {
        tcp: TcpStream::connect(xds).await.unwrap(),
        frozen: frozen.clone(),
    };
    let hung = open_on(
        tcp,
        xds,
        "sidecar~10.0.0.5~hung.shop~shop.svc.cluster.local",
    )
    .await;
    // The proxy stops answering; its socket stays open (its host's TCP still answers, so
    // only the HTTP/2 PING can tell). The server closes the connection once the PING goes
    // unanswered for --keepalive-timeout.
    frozen.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "the hung proxy let go", || async {
        metric(admin, "revplane_xds_connected_proxies{revision=\"canary\"}").await == 0.0
    })
    .await;
    // The proxy did not leave: its stream was lost (and logged as such).
    assert_eq!(ends(admin, "stream_lost").await, 1.0);
    assert_eq!(ends(admin, "client_closed").await, 0.0);
    drop(hung);
    server.stop().await;
}
