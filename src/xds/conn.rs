//! Accepting xDS connections, before HTTP/2 exists for them: at most `max_connections` open
//! at once (one more is closed as it comes, and counted), and a connection that has not sent
//! the 24-byte HTTP/2 preface within the handshake timeout is closed (a silent or trickling
//! client would otherwise hold its socket and HTTP/2 state for ever: no keepalive runs before
//! the handshake).
//!
//! [`Incoming`] replaces tonic's plain listener stream; each [`XdsConn`] holds its slot until
//! it is dropped and passes vectored writes through (h2 writes large responses as vectored
//! I/O when the transport supports it).
//!
//! A peer that vanishes is found by TCP itself: keepalive probes after [`TCP_KEEPALIVE_IDLE`]
//! without traffic, and [`TCP_USER_TIMEOUT`] for data the peer's kernel does not take (not
//! acknowledged, or its window shut the whole time). A proxy that is slowly reading a large
//! response keeps its connection, however long that takes: HTTP/2's keepalive PING queues
//! behind the megabytes already in the sockets, and hyper counts only request frames as
//! signs of life, so it alone would cut such a proxy off (`--keepalive-timeout` is long for
//! that reason).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::metrics::XdsMetrics;

/// The client connection preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;

/// After a failed accept (out of file descriptors, most often), wait this long before the
/// next: retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Refusals are logged at most this often; the metric counts every one.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A connection without traffic this long is probed by TCP keepalive ...
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... every this long, and closed after this many probes go unanswered.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Data the peer's kernel has not taken for this long (unacknowledged, or held back by a
/// receive window that stayed shut) closes the connection: the peer is gone, or its process
/// has stopped reading.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a new connection has to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
}

/// Accepted connections, within [`ConnLimits`].
#[derive(Debug)]
pub struct Incoming {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    limits: ConnLimits,
    open: Gauge,
    over_limit: Counter,
    handshake_timeouts: Counter,
    pause: Option<Pin<Box<Sleep>>>,
    last_logged: Option<Instant>,
}

impl Incoming {
    /// Connections accepted on `listener`.
    pub fn new(listener: TcpListener, limits: ConnLimits, metrics: &XdsMetrics) -> Self {
        Incoming {
            listener,
            slots: Arc::new(Semaphore::new(
                limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            limits,
            open: metrics.connections.clone(),
            over_limit: metrics.refused_connections("connection_limit"),
            handshake_timeouts: metrics.refused_connections("handshake_timeout"),
            pause: None,
            last_logged: None,
        }
    }

    fn log_refusal(&mut self) {
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            self.last_logged = Some(now);
            tracing::warn!(
                max_connections = self.limits.max_connections,
                "closing new xDS connections: --max-connections are open (logged at most every \
                 {REFUSAL_LOG_INTERVAL:?}; revplane_xds_refused_connections_total counts them)"
            );
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<XdsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        loop {
            if let Some(pause) = me.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                me.pause = None;
            }
            let (tcp, _) = match ready!(me.listener.poll_accept(cx)) {
                Ok((tcp, addr)) => {
                    if let Err(e) = find_vanished_peers(&tcp) {
                        tracing::debug!(error = %e, "cannot set TCP keepalive on an xDS connection");
                    }
                    (tcp, addr)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an xDS connection; retrying shortly");
                    me.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                    continue;
                }
            };
            match me.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    me.open.inc();
                    return Poll::Ready(Some(Ok(XdsConn {
                        tcp,
                        handshake: Some((
                            Box::pin(tokio::time::sleep(me.limits.handshake_timeout)),
                            PREFACE_LEN,
                        )),
                        timeout: me.limits.handshake_timeout,
                        open: me.open.clone(),
                        handshake_timeouts: me.handshake_timeouts.clone(),
                        _slot: slot,
                    })));
                }
                Err(_) => {
                    // Dropping the socket closes it: the client sees the connection closed
                    // and retries with its backoff.
                    me.over_limit.inc();
                    me.log_refusal();
                }
            }
        }
    }
}

/// One accepted xDS connection.
#[derive(Debug)]
pub struct XdsConn {
    tcp: TcpStream,
    /// Until the preface is in: its deadline and how many of its bytes are still to come.
    handshake: Option<(Pin<Box<Sleep>>, usize)>,
    timeout: Duration,
    open: Gauge,
    handshake_timeouts: Counter,
    _slot: OwnedSemaphorePermit,
}

/// TCP keepalive and user timeout on an accepted connection (see the module docs).
fn find_vanished_peers(tcp: &TcpStream) -> io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(TCP_KEEPALIVE_PROBES),
    )?;
    socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}

impl Drop for XdsConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connected for XdsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for XdsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        // Read first: bytes already waiting count even if the server was slow to look.
        let read = Pin::new(&mut me.tcp).poll_read(cx, buf);
        let Some((deadline, left)) = me.handshake.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                *left = left.saturating_sub(buf.filled().len() - before);
                if *left == 0 {
                    me.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                me.handshake = None;
                me.handshake_timeouts.inc();
                tracing::debug!(timeout = ?me.timeout, "closing an xDS connection that sent no HTTP/2 preface");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no HTTP/2 preface within {:?} of connecting (--handshake-timeout)",
                        me.timeout
                    ),
                )))
            }
        }
    }
}

impl AsyncWrite for XdsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
