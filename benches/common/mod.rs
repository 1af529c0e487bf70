//! What the load scenarios share: a manifest directory, the `revplane serve` process read
//! through `/proc` and its admin port, and the `revplane load` process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod floor;

/// Full size under `cargo bench`, smoke size under `cargo test`.
pub fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

pub fn env_or<T: std::str::FromStr>(name: &str, full_size: T, smoke: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_size } else { smoke })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shape of a bench catalog: how many Services, how many endpoints each, how many ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub services: usize,
    /// Ready endpoints per service: all `Fixed(n)`, or 2–10 varying by service (`Realistic`).
    pub endpoints: Endpoints,
    /// HTTP ports per service (one cluster and one assignment each).
    pub ports: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    Fixed(usize),
    /// 2 to 10 endpoints, spread evenly over the services (a mean of 6).
    Realistic,
}

impl Shape {
    pub fn fixed(services: usize, endpoints: usize) -> Shape {
        Shape {
            services,
            endpoints: Endpoints::Fixed(endpoints),
            ports: 1,
        }
    }

    /// The catalog real clusters look like: services of 2–10 endpoints, one port.
    pub fn realistic(services: usize) -> Shape {
        Shape {
            services,
            endpoints: Endpoints::Realistic,
            ports: 1,
        }
    }

    pub fn endpoints_of(&self, i: usize) -> usize {
        match self.endpoints {
            Endpoints::Fixed(n) => n,
            Endpoints::Realistic => 2 + (i * 7) % 9,
        }
    }

    pub fn clusters(&self) -> usize {
        self.services * self.ports
    }

    pub fn describe(&self) -> String {
        let eps = match self.endpoints {
            Endpoints::Fixed(n) => format!("{n} endpoints"),
            Endpoints::Realistic => "2-10 endpoints".to_string(),
        };
        format!("{} services x {} port(s), {eps}", self.services, self.ports)
    }
}

/// A manifest directory: `services` Services in 10 namespaces, one file per service, each
/// with one slice of `endpoints` ready endpoints.
pub fn mesh(dir: &Path, services: usize, endpoints: usize) {
    write_mesh(dir, Shape::fixed(services, endpoints));
}

/// A manifest directory of `shape`, one file per service.
pub fn write_mesh(dir: &Path, shape: Shape) {
    for i in 0..shape.services {
        write_shaped(dir, shape, i, 0);
    }
}

pub fn write_service(dir: &Path, i: usize, endpoints: usize, generation: usize) {
    write_shaped(dir, Shape::fixed(i + 1, endpoints), i, generation);
}

/// Writes service `i` of `shape` (write and rename, as the docs ask); `generation` shifts its
/// endpoint addresses, so a new generation is an endpoint change.
pub fn write_shaped(dir: &Path, shape: Shape, i: usize, generation: usize) {
    let ns = format!("ns{}", i % 10);
    let eps: String = (0..shape.endpoints_of(i))
        .map(|e| {
            format!(
                "- addresses: [10.{}.{}.{}]\n",
                (i >> 8) & 255,
                i & 255,
                (e + generation) % 250 + 1
            )
        })
        .collect();
    let (svc_ports, slice_ports): (Vec<String>, Vec<String>) = (0..shape.ports)
        .map(|p| {
            // `http`, `http-1`, …: the first port's text is what the benches always wrote.
            let name = if p == 0 {
                "http".to_string()
            } else {
                format!("http-{p}")
            };
            (
                format!("{{name: {name}, port: {}}}", 80 + p),
                format!("{{name: {name}, port: {}}}", 8080 + p),
            )
        })
        .unzip();
    let (svc_ports, slice_ports) = (svc_ports.join(", "), slice_ports.join(", "));
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec: {{ports: [{svc_ports}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{i}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n\
         addressType: IPv4\nports: [{slice_ports}]\nendpoints:\n{eps}"
    );
    let tmp = dir.join(format!(".svc{i}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join(format!("svc{i}.yaml"))).unwrap();
}

pub struct Server {
    pub child: Child,
    pub admin: String,
    pub xds: String,
}

impl Server {
    pub fn start(dir: &Path, debounce: &str) -> Server {
        Server::start_with(dir, debounce, &[])
    }

    /// [`Server::start`] with more `revplane serve` flags (after `REVPLANE_BENCH_SERVER_ARGS`).
    /// `REVPLANE_BENCH_SERVER_BIN` runs another `revplane` binary as the server (an A/B run
    /// against an older build; the load generator stays this build's).
    pub fn start_with(dir: &Path, debounce: &str, extra: &[&str]) -> Server {
        let (xds, admin) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let binary = std::env::var("REVPLANE_BENCH_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_revplane").to_string());
        let child = Command::new(binary)
            .args(["serve", "--revision", "bench", "--source"])
            .arg(dir)
            .args([
                "--xds-addr",
                &xds,
                "--admin-addr",
                &admin,
                "--debounce-after",
                debounce,
            ])
            .args(
                std::env::var("REVPLANE_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .args(extra)
            .env("REVPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start revplane serve");
        let server = Server { child, admin, xds };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/ready").is_none_or(|(code, _)| code != 200) {
            assert!(Instant::now() < deadline, "server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.admin))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, body.to_string()))
    }

    pub fn metric(&self, sample: &str) -> f64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.child.id(), field)
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.child.id())
    }

    /// File descriptors the server holds open now.
    pub fn open_files(&self) -> usize {
        open_files(self.child.id())
    }

    pub fn connected(&self) -> f64 {
        self.metric("revplane_xds_connected_proxies{revision=\"bench\"}")
    }
}

/// User + system CPU seconds process `pid` used so far (from `/proc`, 10 ms ticks).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A process's CPU time sampled every 10 ms on a thread of its own, stamped with the Unix
/// time: the CPU a push took is read off afterwards, between the change and the last ACK.
pub struct CpuSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, f64)>>,
}

impl CpuSampler {
    pub fn start(pid: u32) -> CpuSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((unix_ms(), cpu_seconds_of(pid)));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        CpuSampler { stop, thread }
    }

    /// Stops sampling; the samples as (Unix ms, CPU seconds).
    pub fn stop(self) -> CpuSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        CpuSamples(self.thread.join().unwrap())
    }
}

pub struct CpuSamples(Vec<(f64, f64)>);

impl CpuSamples {
    /// CPU seconds used by Unix time `t_ms`: the first sample at or after it (the last one
    /// if none is).
    pub fn at(&self, t_ms: f64) -> f64 {
        self.0
            .iter()
            .find(|(t, _)| *t >= t_ms)
            .or(self.0.last())
            .map_or(0.0, |(_, cpu)| *cpu)
    }

    /// CPU seconds used from Unix time `from_ms` to `to_ms` (the last sample at or before
    /// `from_ms`, the first at or after `to_ms`).
    pub fn between(&self, from_ms: f64, to_ms: f64) -> f64 {
        let start = self
            .0
            .iter()
            .rev()
            .find(|(t, _)| *t <= from_ms)
            .or(self.0.first());
        let end = self.0.iter().find(|(t, _)| *t >= to_ms).or(self.0.last());
        match (start, end) {
            (Some((_, a)), Some((_, b))) => b - a,
            _ => 0.0,
        }
    }
}

pub fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// File descriptors process `pid` holds open now.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Starts `revplane load` for `proxies` over `secs`; returns the child (JSON on stdout).
pub fn load(server: &Server, proxies: usize, secs: u64) -> Child {
    load_with(server, proxies, secs, &[])
}

/// [`load`] with more `revplane load` flags.
pub fn load_with(server: &Server, proxies: usize, secs: u64, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_revplane"))
        .args([
            "load",
            "--xds-addr",
            &server.xds,
            "--revision",
            "bench",
            "--json",
        ])
        .args([
            "--proxies",
            &proxies.to_string(),
            "--duration",
            &format!("{secs}s"),
        ])
        // The types the simulated proxies subscribe to (default: all four, as Envoy).
        .args(
            std::env::var("REVPLANE_BENCH_TYPES")
                .ok()
                .map(|t| vec!["--types".to_string(), t])
                .unwrap_or_default(),
        )
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start revplane load")
}

pub fn report(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).expect("load report JSON")
}

pub fn wait_connected(server: &Server, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while server.connected() < n as f64 {
        assert!(
            start.elapsed() < within,
            "only {} of {n} connected",
            server.connected()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Like [`wait_connected`], for a storm that may overwhelm the server: `Err` with the most
/// proxies seen connected when not all of them were within `within` (or the server stopped
/// answering its admin port meanwhile).
pub fn try_wait_connected(server: &Server, n: usize, within: Duration) -> Result<Duration, f64> {
    let start = Instant::now();
    let mut most = 0.0f64;
    loop {
        let now = server.connected();
        most = most.max(now);
        if now >= n as f64 {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(most);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `n` proxies are connected and every response the server sent was answered
/// (each type's pushes equal its ACK count): a connect storm is over.
pub fn wait_synced(server: &Server, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let body = server.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        let sample = |name: &str, kind: &str| {
            let prefix = format!("{name}{{revision=\"bench\",type=\"{kind}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let answered = ["cds", "eds", "lds", "rds"].iter().all(|kind| {
            sample("revplane_xds_pushes_total", kind)
                <= sample("revplane_xds_convergence_time_seconds_count", kind)
        });
        if server.connected() >= n as f64
            && answered
            && sample("revplane_xds_convergence_time_seconds_count", "cds") >= n as f64
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "proxies not in sync within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "revplane-bench-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
