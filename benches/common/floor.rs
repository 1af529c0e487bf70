//! The raw-TCP floor of a fan-out, measured on this machine in the same run as the figure it
//! is compared with: a server process writes 300 bytes to each of `n` loopback connections
//! (one task per connection, as revplane has one per stream) and reads an ACK back from each
//! (150 bytes, or as many as a real ACK has); the floor is the time from the first write to
//! the last read, and the server process's CPU over it. No HTTP/2, no protobuf: what moving
//! a push and its ACK through the kernel and a tokio runtime costs at best.
//!
//! The storm's floor ([`measure_push`]) is the same with a push as large as the config each
//! proxy of the storm received (17.6 MB on the large cluster), read by each client 64 KiB at
//! a time, on connections opened before the clock starts; the clients' CPU is reported too,
//! since in the storm the load generator shares the machine with the server.
//!
//! The server side runs in a child process (the bench binary started again with
//! `REVPLANE_BENCH_FLOOR_SERVE` set): one process may hold at most 20,000 open files, and both
//! ends of 10,000 connections would need all of them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUSH: usize = 300;
/// The ACK of the floor the issue set the target against.
pub const ACK: usize = 150;
const SERVE_ENV: &str = "REVPLANE_BENCH_FLOOR_SERVE";

/// One measurement of the floor.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// From the first write to the last ACK read.
    pub ms: f64,
    /// The server process's CPU over that time, per connection.
    pub cpu_us_per_conn: f64,
    /// The clients' process's CPU over that time, in all (seconds).
    pub client_cpu_s: f64,
}

/// What a client reads at most per call.
const CLIENT_READ: usize = 64 * 1024;

/// Call first in a bench's `main`: when this process was started as the floor's server, serve
/// and exit.
pub fn serve_if_asked() {
    let Some((n, push, ack)) = std::env::var(SERVE_ENV).ok().and_then(|v| {
        let mut parts = v.split(',').map(|p| p.parse().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    }) else {
        return;
    };
    runtime().block_on(serve(n, push, ack));
    std::process::exit(0);
}

/// The floor for `n` connections whose ACKs are `ack` bytes long.
pub fn measure(n: usize, ack: usize) -> Floor {
    measure_push(n, PUSH, ack)
}

/// The floor for `n` connections, each sent `push` bytes and answering with `ack` bytes.
pub fn measure_push(n: usize, push: usize, ack: usize) -> Floor {
    let mut server = Command::new(std::env::current_exe().expect("bench binary"))
        .env(SERVE_ENV, format!("{n},{push},{ack}"))
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the floor server");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .next()
        .and_then(|l| l.ok()?.parse().ok())
        .expect("floor server port");
    // One runtime for the whole measurement: the client tasks live in it.
    let rt = runtime();
    let ack_bytes: std::sync::Arc<[u8]> = vec![1u8; ack].into();
    let clients = rt.block_on(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect to the floor server");
            conn.set_nodelay(true).unwrap();
            let ack_bytes = ack_bytes.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; push.min(CLIENT_READ)];
                let mut left = push;
                while left > 0 {
                    let want = left.min(buf.len());
                    match conn.read(&mut buf[..want]).await {
                        Ok(0) | Err(_) => return None,
                        Ok(got) => left -= got,
                    }
                }
                conn.write_all(&ack_bytes).await.ok()?;
                // Held open until the server has read every ACK and exits.
                let _ = conn.read(&mut buf).await;
                Some(())
            }));
        }
        tasks
    });
    // Every connection is open: go.
    let client_cpu0 = super::cpu_seconds_of(std::process::id());
    server.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let floor = lines
        .next()
        .and_then(|l| {
            let l = l.ok()?;
            let (ms, cpu) = l.split_once(' ')?;
            Some(Floor {
                ms: ms.parse().ok()?,
                cpu_us_per_conn: cpu.parse::<f64>().ok()? * 1e6 / n as f64,
                client_cpu_s: super::cpu_seconds_of(std::process::id()) - client_cpu0,
            })
        })
        .expect("floor server result");
    let _ = server.wait();
    rt.block_on(async {
        for task in clients {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    });
    floor
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn serve(n: usize, push: usize, ack: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let (conn, _) = listener.accept().await.unwrap();
        conn.set_nodelay(true).unwrap();
        conns.push(conn);
    }
    // Wait for the go line on stdin.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .unwrap();
    // Each connection's read buffer (at most a frame's size, as an HTTP/2 server reads),
    // allocated and touched before the clock starts: the figure is the push and the ACK.
    let bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![1u8; ack.min(16 * 1024)]).collect();
    // One push for every connection, as revplane shares a response's bytes across streams.
    let pushed: std::sync::Arc<[u8]> = vec![0u8; push].into();
    let cpu0 = super::cpu_seconds_of(std::process::id());
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(bufs)
        .map(|(mut conn, mut buf)| {
            let pushed = pushed.clone();
            tokio::spawn(async move {
                conn.write_all(&pushed).await.unwrap();
                let mut left = ack;
                while left > 0 {
                    let want = left.min(buf.len());
                    let got = conn.read(&mut buf[..want]).await.unwrap();
                    assert!(got > 0, "the floor's client closed inside an ACK");
                    left -= got;
                }
                conn
            })
        })
        .collect();
    let mut held = Vec::with_capacity(n);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let cpu = super::cpu_seconds_of(std::process::id()) - cpu0;
    println!("{ms:.1} {cpu:.2}");
    std::io::stdout().flush().unwrap();
}
