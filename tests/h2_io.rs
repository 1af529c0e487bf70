//! The vendored h2 (`vendor/h2`, 1 KiB write buffer) over a transport without vectored
//! writes, as a TLS stream or any wrapping adapter is: the handshake, a request and a
//! response larger than the buffer must go through, whichever side lacks vectored writes.
//! Before the clamp in `vendor/h2/src/codec/framed_write.rs` the write buffer (1,024 bytes)
//! was smaller than the room the encoder demands without vectored writes (1,033 bytes): the
//! handshake's SETTINGS frame, buffered without `poll_ready`, hit
//! `assert!(self.has_capacity())` and the connection task panicked (client or server), and
//! `poll_ready` for any later frame could only return `Pending`, with no waker.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A duplex pipe that says whether it writes vectored (the pipe itself never does; saying so
/// only changes how h2 frames its writes).
struct Pipe {
    io: DuplexStream,
    vectored: bool,
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const RESPONSE_BYTES: usize = 100_000;

async fn serve(io: Pipe) {
    let mut connection = h2::server::handshake(io).await.expect("server handshake");
    while let Some(accepted) = connection.accept().await {
        let (request, mut respond) = accepted.expect("a request");
        tokio::spawn(async move {
            let mut body = request.into_body();
            let mut got = Vec::new();
            while let Some(data) = body.data().await {
                let data = data.expect("request body");
                let _ = body.flow_control().release_capacity(data.len());
                got.extend_from_slice(&data);
            }
            assert_eq!(got, b"hello");
            let mut send = respond
                .send_response(http::Response::new(()), false)
                .expect("response head");
            // Larger than the write buffer, in frames of both kinds (chained and copied).
            send.send_data(Bytes::from(vec![7u8; RESPONSE_BYTES]), false)
                .expect("response body");
            send.send_data(Bytes::from_static(b"end"), true)
                .expect("response end");
        });
    }
}

async fn exchange(client_vectored: bool, server_vectored: bool) -> usize {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve(Pipe {
        io: server_io,
        vectored: server_vectored,
    }));
    let client_io = Pipe {
        io: client_io,
        vectored: client_vectored,
    };
    let (client, connection) = h2::client::handshake(client_io)
        .await
        .expect("client handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("connection ready");
    let request = http::Request::post("http://revplane.test/echo")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::from_static(b"hello"), true)
        .unwrap();
    let response = response.await.expect("response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(data) = body.data().await {
        let data = data.expect("response body");
        let _ = body.flow_control().release_capacity(data.len());
        received += data.len();
    }
    received
}

#[tokio::test]
async fn a_request_and_a_large_response_go_through_an_io_without_vectored_writes() {
    for (client_vectored, server_vectored) in [(true, false), (false, true), (false, false)] {
        let received = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(client_vectored, server_vectored),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the HTTP/2 exchange hung (client vectored: {client_vectored}, server vectored: \
                 {server_vectored}): h2 never became ready to write"
            )
        });
        assert_eq!(received, RESPONSE_BYTES + 3);
    }
}
