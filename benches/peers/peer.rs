//! The go-control-plane peer (`benches/peers/go-control-plane/`): built with Go once per
//! source hash into `~/.cache/revplane/peers/`, never per run, and started fed from a
//! running revplane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// The go-control-plane version `go.mod` pins (checked against it when building).
pub const VERSION: &str = "v0.14.0";

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/go-control-plane")
}

/// `go version`'s answer; panics with what to do when Go is missing.
pub fn go_version() -> String {
    let out = Command::new("go")
        .arg("version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
            "the peers bench builds its go-control-plane server with Go, and `go version` failed \
             ({e}): install Go 1.24 or newer and put `go` on PATH"
        )
        });
    assert!(out.status.success(), "`go version` failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The peer binary, built if its cached copy is missing.
pub fn binary() -> PathBuf {
    let dir = source_dir();
    let mut text = Vec::new();
    for file in ["main.go", "go.mod", "go.sum"] {
        text.extend(std::fs::read(dir.join(file)).expect("peer source"));
    }
    let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
    assert!(
        go_mod.contains(&format!("github.com/envoyproxy/go-control-plane {VERSION}")),
        "go.mod no longer pins go-control-plane {VERSION}: update peer::VERSION"
    );
    let hash = xxhash_rust::xxh3::xxh3_64(&text);
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".to_string());
    let cache = Path::new(&home)
        .join(".cache/revplane/peers")
        .join(format!("go-control-plane-{VERSION}-{hash:016x}"));
    let bin = cache.join("peer");
    if bin.exists() {
        return bin;
    }
    let go = go_version();
    eprintln!(
        "building the go-control-plane peer with {go} into {}",
        cache.display()
    );
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join(format!("peer.{}.tmp", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-trimpath", "-mod=readonly", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&dir)
        .status()
        .expect("run go build");
    assert!(status.success(), "go build of {} failed", dir.display());
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// A running peer.
pub struct Peer {
    pub child: Child,
    pub xds: String,
    admin: String,
}

impl Peer {
    /// Starts the peer on its catalog from the revplane at `from`; returns once it serves.
    pub fn start(bin: &Path, from: &str) -> Peer {
        let (xds, admin) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let child = Command::new(bin)
            .args(["--from", from, "--revision", "bench", "--xds-addr", &xds])
            .args(["--admin-addr", &admin])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the go-control-plane peer");
        let mut peer = Peer { child, xds, admin };
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl(&["-sf", &format!("http://{}/ready", peer.admin)]).is_none() {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!(
                    "the peer exited with {status} before it was ready (run it by hand to see why)"
                );
            }
            assert!(Instant::now() < deadline, "the peer was not ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }

    /// Fetches the catalog again from revplane, to publish later.
    pub fn stage(&self) {
        let url = format!("http://{}/stage", self.admin);
        curl(&["-sf", "-XPOST", &url]).expect("the peer's refetch from revplane failed");
    }

    /// Sets what [`Self::stage`] fetched as the snapshot; the Unix time (ms) it did.
    pub fn publish(&self) -> f64 {
        let url = format!("http://{}/publish", self.admin);
        let body = curl(&["-sf", "-XPOST", &url]).expect("the peer's publish failed");
        let reply: serde_json::Value = serde_json::from_str(&body).expect("publish reply JSON");
        reply["published_unix_ms"]
            .as_f64()
            .expect("published_unix_ms")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl's body when it succeeded.
fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}
