//! A simulated proxy's connection, read ahead: while responses stream in, the socket is read
//! [`AHEAD`] bytes at a time and the HTTP/2 reader is served from that. The reader asks for
//! about one frame (16 KiB) per read, so without this a large catalog's responses (~17 MB
//! per proxy on 10,000 services × 2 ports) cost two `recvfrom` calls per frame, each with
//! its share of the kernel's TCP work: the most expensive part of a large storm's load
//! generator, which shares the machine with the server it measures. The buffer is dropped
//! whenever the socket has nothing more to read, so an idle proxy holds none.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much one read of the socket takes at most.
pub(super) const AHEAD: usize = 64 * 1024;

/// A stream read ahead; writes go straight through.
#[derive(Debug)]
pub(super) struct ReadAhead<T> {
    io: T,
    /// Read from the socket and not yet handed on (empty and unallocated when idle).
    ahead: BytesMut,
}

impl<T> ReadAhead<T> {
    pub fn new(io: T) -> Self {
        ReadAhead {
            io,
            ahead: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            if out.remaining() >= AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            this.ahead.reserve(AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.ahead) {
                Poll::Pending => {
                    // Nothing to read: an idle connection keeps no buffer.
                    this.ahead = BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(read) => {
                    ready!(Poll::Ready(read))?;
                }
            }
        }
        let n = out.remaining().min(this.ahead.len());
        out.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Connects to the server's xDS address (TCP, no delay), read ahead; any URI given is
/// ignored: a run has one server.
#[derive(Clone, Debug)]
pub(super) struct Connector {
    pub addr: SocketAddr,
}

type Connected = TokioIo<ReadAhead<TcpStream>>;

impl tower::Service<http::Uri> for Connector {
    type Response = Connected;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let addr = self.addr;
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(ReadAhead::new(stream)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that returned something.
    struct Counting<T> {
        io: T,
        reads: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let read = Pin::new(&mut this.io).poll_read(cx, out);
            if read.is_ready() {
                this.reads += 1;
            }
            read
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_one_and_an_idle_stream_holds_no_buffer() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let mut near = ReadAhead::new(Counting { io: near, reads: 0 });
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        let mut at = 0;
        // Reads of a frame header's size: AHEAD bytes from the stream at a time.
        while at < 2 * AHEAD {
            let n = near.read(&mut got[at..at + 9]).await.unwrap();
            assert!(n > 0);
            at += n;
        }
        assert_eq!(near.io.reads, 2, "{at} bytes read in pieces of 9");
        // A read larger than AHEAD goes straight to the stream.
        near.read_exact(&mut got[at..]).await.unwrap();
        assert_eq!(got, sent);
        // Nothing more to read: the next read waits, and the buffer is gone.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            near.read(&mut [0u8; 9]),
        )
        .await;
        assert!(waiting.is_err(), "nothing was sent");
        assert_eq!(near.ahead.capacity(), 0);
        // Writes pass through; the end of the stream reads as 0.
        near.write_all(b"ack").await.unwrap();
        let mut ack = [0u8; 3];
        far.read_exact(&mut ack).await.unwrap();
        assert_eq!(&ack, b"ack");
        drop(far);
        assert_eq!(near.read(&mut [0u8; 9]).await.unwrap(), 0);
    }
}
