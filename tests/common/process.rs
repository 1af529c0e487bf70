//! The `revplane` binary as a separate process, as an operator runs it.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `revplane serve`; killed on drop.
pub struct Revplane {
    child: Child,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Revplane {
    /// Starts `revplane serve --revision <revision> --source <source>` and waits for /ready.
    pub async fn start(revision: &str, source: &Path) -> Revplane {
        let server = Revplane::spawn(revision, &[OsStr::new("--source"), source.as_os_str()], &[]);
        server.wait_ready().await;
        server
    }

    /// Starts `revplane serve --source kube` with `kubeconfig`, without waiting for /ready.
    pub fn spawn_kube(revision: &str, kubeconfig: &Path) -> Revplane {
        Revplane::spawn(
            revision,
            &[
                OsStr::new("--source"),
                OsStr::new("kube"),
                OsStr::new("--namespace"),
                OsStr::new("revplane-system"),
            ],
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        )
    }

    /// Starts `revplane serve --revision <revision> <args>` on free ports.
    pub fn spawn(revision: &str, args: &[&OsStr], env: &[(&str, &OsStr)]) -> Revplane {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("revplane.log");
        let (xds, admin) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_revplane"))
            .args(["serve", "--revision", revision])
            .args(args)
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start revplane");
        Revplane {
            child,
            xds,
            admin,
            log,
            _dir: dir,
        }
    }

    /// Waits until /ready answers 200 (at most 30 s).
    pub async fn wait_ready(&self) {
        for _ in 0..1500 {
            if let Ok(r) = reqwest::get(format!("http://{}/ready", self.admin)).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("revplane not ready within 30 s: {}", self.log_text());
    }

    /// The server's process id (for its /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("revplane did not exit within 10 s of SIGTERM");
    }
}

impl Drop for Revplane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `revplane <args>` to completion off the async runtime, as an operator would.
pub async fn run_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_revplane"))
            .args(&args)
            .env("NO_COLOR", "1")
            .env_remove("REVPLANE_PROXY_STATUS_XDS_ADDR")
            .output()
            .expect("run revplane")
    })
    .await
    .unwrap()
}
