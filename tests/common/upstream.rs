//! Local upstream servers that sidecars route to: an HTTP/1.1 server that records what it
//! saw, and a TCP echo server. Both listen on `127.0.0.1:0`, the address an EndpointSlice
//! of the test's mesh lists.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One request an [`HttpUpstream`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The `Host` header as it arrived (through Envoy: the name the client used).
    pub host: Option<String>,
}

/// An HTTP/1.1 server on 127.0.0.1: answers every request `200` with its name as the body
/// and records it. Shut down with [`HttpUpstream::shutdown`] (graceful) or by dropping it.
pub struct HttpUpstream {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    close: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpUpstream {
    /// Starts a server named `name` on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let close = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            name.to_string(),
            seen.clone(),
            close.clone(),
            stopped,
        ));
        HttpUpstream {
            name: name.to_string(),
            addr,
            seen,
            close,
            stop,
            task,
        }
    }

    /// Every request answered so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were answered.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// From now on, answer with `Connection: close` (as a server that is about to stop),
    /// so clients open no further requests on its connections.
    pub fn answer_connection_close(&self) {
        self.close.store(true, Ordering::SeqCst);
    }

    /// Stops as a well-behaved server does on SIGTERM: no new connections, idle connections
    /// closed, requests in flight answered (with `Connection: close`) before their connection
    /// closes. Returns once every connection is closed.
    pub async fn shutdown(&mut self) {
        self.close.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    close: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (name, seen, close) = (name.clone(), seen.clone(), close.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen_request = SeenRequest {
                        method: req.method().to_string(),
                        path: req.uri().path().to_string(),
                        host: req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string),
                    };
                    seen.lock().unwrap().push(seen_request);
                    let mut response = Response::new(Full::new(Bytes::from(name.clone())));
                    if close.load(Ordering::SeqCst) {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = stopped.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    // Connections accepted before the stop: each closes when idle or after its response.
    while connections.join_next().await.is_some() {}
}

/// A TCP server on 127.0.0.1 that writes back every byte it reads; counts connections.
pub struct TcpEcho {
    pub addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    /// Starts the echo server on a free port of 127.0.0.1.
    pub async fn start() -> TcpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TcpEcho {
            addr,
            connections,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
