//! The raw-TCP floor of a fan-out, measured on this machine in the same run as the figure it
//! is compared with: a server process writes 300 bytes to each of `n` loopback connections
//! (one task per connection, as revplane has one per stream) and reads 150 bytes back from
//! each; the floor is the time from the first write to the last read. No HTTP/2, no protobuf:
//! what moving a push and its ACK through the kernel and a tokio runtime costs at best.
//!
//! The server side runs in a child process (the bench binary started again with
//! `REVPLANE_BENCH_FLOOR_SERVE` set): one process may hold at most 20,000 open files, and both
//! ends of 10,000 connections would need all of them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUSH: usize = 300;
const ACK: usize = 150;
const SERVE_ENV: &str = "REVPLANE_BENCH_FLOOR_SERVE";

/// Call first in a bench's `main`: when this process was started as the floor's server, serve
/// and exit.
pub fn serve_if_asked() {
    let Some(n) = std::env::var(SERVE_ENV).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    runtime().block_on(serve(n));
    std::process::exit(0);
}

/// The floor for `n` connections, in milliseconds.
pub fn measure(n: usize) -> f64 {
    let mut server = Command::new(std::env::current_exe().expect("bench binary"))
        .env(SERVE_ENV, n.to_string())
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
    let clients = rt.block_on(async move {
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect to the floor server");
            conn.set_nodelay(true).unwrap();
            tasks.push(tokio::spawn(async move {
                let mut push = [0u8; PUSH];
                conn.read_exact(&mut push).await.ok()?;
                conn.write_all(&[1u8; ACK]).await.ok()?;
                // Held open until the server has read every ACK and exits.
                let _ = conn.read(&mut push).await;
                Some(())
            }));
        }
        tasks
    });
    // Every connection is open: go.
    server.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let ms: f64 = lines
        .next()
        .and_then(|l| l.ok()?.parse().ok())
        .expect("floor server result");
    let _ = server.wait();
    rt.block_on(async {
        for task in clients {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    });
    ms
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn serve(n: usize) {
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
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                conn.write_all(&[0u8; PUSH]).await.unwrap();
                let mut ack = [0u8; ACK];
                conn.read_exact(&mut ack).await.unwrap();
                conn
            })
        })
        .collect();
    let mut held = Vec::with_capacity(n);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    println!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
    std::io::stdout().flush().unwrap();
}
