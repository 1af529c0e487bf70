//! Real gRPC parts (installed by scripts/test into the cache; DESIGN.md §5): a Python grpcio
//! server process (`tests/python/grpc_server.py`) and client runs, proxyless through an xDS
//! bootstrap or through a sidecar, with either of two real xDS clients: grpcio's C-core
//! (`tests/python/grpc_call.py`) and grpc-go's (`tests/grpc-go`, same arguments and output).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

/// The grpcio version scripts/test installs.
pub const GRPCIO_VERSION: &str = "1.85.1";

/// Where grpcio is installed (scripts/test exports REVPLANE_PYTHONPATH); panics naming the
/// install command when it is missing.
pub fn grpcio_path() -> PathBuf {
    let path = std::env::var_os("REVPLANE_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(format!(".cache/revplane/grpcio-{GRPCIO_VERSION}"))
        });
    assert!(
        path.join("grpc/__init__.py").is_file() && path.join("grpc_health").is_dir(),
        "Python grpcio {GRPCIO_VERSION} not found at {}: run scripts/test, which installs it \
         (python3 -m pip install --target ~/.cache/revplane/grpcio-{GRPCIO_VERSION} \
         grpcio=={GRPCIO_VERSION} grpcio-health-checking=={GRPCIO_VERSION} protobuf)",
        path.display()
    );
    path
}

/// `python3 tests/python/<script>` with grpcio on its path (the interpreter scripts/test
/// installed for: REVPLANE_PYTHON, else `python3`).
pub fn python(script: &str) -> Command {
    let interpreter = std::env::var_os("REVPLANE_PYTHON").unwrap_or_else(|| "python3".into());
    let mut command = Command::new(interpreter);
    command
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .env("PYTHONPATH", grpcio_path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("GRPC_XDS_BOOTSTRAP")
        .env_remove("GRPC_XDS_BOOTSTRAP_CONFIG");
    command
}

/// The grpc-go client scripts/test builds from tests/grpc-go (REVPLANE_GRPC_GO_CALL); panics
/// naming the build command when it is missing.
pub fn grpc_go_call() -> PathBuf {
    let path = std::env::var_os("REVPLANE_GRPC_GO_CALL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/revplane/grpc-go-v1.85.0/grpc-call")
        });
    assert!(
        path.is_file(),
        "the grpc-go client is not built at {}: run scripts/test, which builds it \
         (cd tests/grpc-go && go build -o ~/.cache/revplane/grpc-go-v1.85.0/grpc-call .)",
        path.display()
    );
    path
}

/// Which real gRPC client library makes the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// Python grpcio (gRPC C-core's xDS client).
    Python,
    /// grpc-go (its own xDS client).
    Go,
}

impl Client {
    fn command(self) -> Command {
        match self {
            Client::Python => python("grpc_call.py"),
            Client::Go => {
                let mut command = Command::new(grpc_go_call());
                command
                    .env_remove("GRPC_XDS_BOOTSTRAP")
                    .env_remove("GRPC_XDS_BOOTSTRAP_CONFIG");
                command
            }
        }
    }

    /// How this client spells the control plane's status code PERMISSION_DENIED inside the
    /// UNAVAILABLE it reports (gRFC A54 forbids passing the code itself through).
    pub fn permission_denied(self) -> &'static str {
        match self {
            Client::Python => "PERMISSION_DENIED",
            Client::Go => "PermissionDenied",
        }
    }
}

/// A running `grpc_server.py` on 127.0.0.1; its Echo replies `<name>:<request>`. Killed on
/// drop.
pub struct GrpcServer {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GrpcServer {
    /// Starts the server named `name` on a free port and waits until it listens.
    pub fn start(name: &str) -> GrpcServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("grpc-server.log");
        let mut child = python("grpc_server.py")
            .arg(name)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start python3 grpc_server.py");
        let mut line = String::new();
        // The first line is {"port": N}; EOF means the server died (its log says why).
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        #[derive(Deserialize)]
        struct Ready {
            port: u16,
        }
        let ready: Ready = match read.ok().and_then(|_| serde_json::from_str(&line).ok()) {
            Some(ready) => ready,
            None => {
                let _ = child.kill();
                panic!(
                    "grpc_server.py did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        GrpcServer {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], ready.port)),
            child,
            log,
            _dir: dir,
        }
    }

    /// How many Echo calls it answered (one log line each).
    pub fn calls(&self) -> usize {
        self.log_text().matches("call from ").count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one call of a client returned.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CallOutcome {
    pub target: String,
    /// The status code name: `OK`, `UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...
    pub code: String,
    pub details: Option<String>,
    /// The server's reply (`<server name>:ping`) when `code` is `OK`.
    pub reply: Option<String>,
}

/// A client run: one outcome per target, and the client's own stderr (its library's logs).
#[derive(Debug)]
pub struct CallRun {
    pub outcomes: Vec<CallOutcome>,
    pub stderr: String,
}

/// The node a proxyless client announces in its xDS bootstrap.
#[derive(Clone, Debug)]
pub struct ProxylessNode {
    pub id: String,
    pub cluster: String,
    pub revision: String,
    pub namespace: String,
}

impl ProxylessNode {
    /// A client pod `<pod>` in `namespace`, injected for `revision`.
    pub fn new(pod: &str, namespace: &str, revision: &str) -> ProxylessNode {
        ProxylessNode {
            id: format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            cluster: format!("{}.{namespace}", pod.split('-').next().unwrap_or(pod)),
            revision: revision.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The gRFC A27 bootstrap naming `xds` as the only server, insecure, xDS v3, with the
    /// node metadata revplane reads (REVISION, NAMESPACE, GENERATOR: grpc).
    pub fn bootstrap(&self, xds: SocketAddr) -> serde_json::Value {
        serde_json::json!({
            "xds_servers": [{
                "server_uri": xds.to_string(),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {
                "id": self.id,
                "cluster": self.cluster,
                "metadata": {
                    "REVISION": self.revision,
                    "NAMESPACE": self.namespace,
                    "GENERATOR": "grpc",
                },
            },
        })
    }
}

/// Runs `client` for `targets` in a fresh process (its own xDS client). With `xds`, the
/// client reads the bootstrap of `node` pointed at it; `authority` sets `:authority`.
pub async fn call(
    client: Client,
    targets: &[String],
    timeout: Duration,
    xds: Option<(&ProxylessNode, SocketAddr)>,
    authority: Option<&str>,
) -> CallRun {
    let dir = tempfile::tempdir().unwrap();
    let mut command = client.command();
    command
        .arg("--timeout")
        .arg(timeout.as_secs_f64().to_string());
    if let Some(authority) = authority {
        command.arg("--authority").arg(authority);
    }
    command.args(targets);
    if let Some((node, addr)) = xds {
        let path = dir.path().join("bootstrap.json");
        std::fs::write(&path, node.bootstrap(addr).to_string()).unwrap();
        command.env("GRPC_XDS_BOOTSTRAP", &path);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("run the {client:?} gRPC client: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let outcomes: Vec<CallOutcome> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    assert_eq!(
        outcomes.len(),
        targets.len(),
        "the {client:?} client ({}) printed one outcome per target:\n{stdout}\n{stderr}",
        output.status
    );
    CallRun { outcomes, stderr }
}
