//! What a real cluster's controllers and kubelet would do, for tests that run an operator's
//! commands against a bare kube-apiserver (no controller manager, no kubelet, no kube-proxy).
//!
//! [`Kubelet::reconcile`] brings the machine in line with the API server, as a cluster would:
//! - each namespace gets its `default` ServiceAccount (the ServiceAccount controller);
//! - each revplane Deployment (`revplane-<rev>`, label `app=revplane`) runs as one
//!   `revplane serve` process with the Deployment's own args, its TLS Secret as files, and the
//!   addresses this test assigned (`--xds-addr`, `--admin-addr`, `--webhook-addr`); once
//!   ready, the Deployment's status says so (the Deployment controller); a deleted
//!   Deployment's process stops;
//! - each pod with a `revplane-proxy` container runs that container as a real Envoy, from its
//!   spec with `$(VAR)`s expanded from the downward API (pod IP 127.0.0.1), and is marked
//!   Ready once its revision lists it as attached; a deleted pod's Envoy stops.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::envoy::Envoy;
use super::kube::create_default_service_account;

/// Where the test runs one revision's server.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
}

struct Running {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulated cluster machinery of one test.
pub struct Kubelet {
    client: Client,
    kubeconfig: PathBuf,
    control_ns: String,
    /// Addresses by revision, assigned by the test.
    pub addresses: BTreeMap<String, Addresses>,
    servers: BTreeMap<String, Running>,
    /// Envoys by pod uid.
    proxies: BTreeMap<String, Envoy>,
}

impl Kubelet {
    pub fn new(client: Client, kubeconfig: PathBuf, control_ns: &str) -> Kubelet {
        Kubelet {
            client,
            kubeconfig,
            control_ns: control_ns.to_string(),
            addresses: BTreeMap::new(),
            servers: BTreeMap::new(),
            proxies: BTreeMap::new(),
        }
    }

    /// The log of a revision's server.
    pub fn server_log(&self, revision: &str) -> String {
        self.servers
            .get(revision)
            .map(|r| std::fs::read_to_string(&r.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Brings processes in line with the API server (see the module docs).
    pub async fn reconcile(&mut self) {
        self.service_accounts().await;
        self.deployments().await;
        self.pods().await;
    }

    async fn service_accounts(&self) {
        let namespaces = Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        for ns in namespaces {
            create_default_service_account(&self.client, ns.metadata.name.as_deref().unwrap())
                .await;
        }
    }

    async fn deployments(&mut self) {
        let api = Api::<Deployment>::namespaced(self.client.clone(), &self.control_ns);
        let deployments = api
            .list(&ListParams::default().labels("app=revplane"))
            .await
            .unwrap();
        let mut wanted = BTreeMap::new();
        for d in deployments {
            let labels = d.metadata.labels.clone().unwrap_or_default();
            let revision = labels["istio.io/rev"].clone();
            wanted.insert(revision, d);
        }
        let gone: Vec<String> = self
            .servers
            .keys()
            .filter(|rev| !wanted.contains_key(*rev))
            .cloned()
            .collect();
        for revision in gone {
            self.servers.remove(&revision);
            // Garbage collection of the Deployment's pods.
            let pods = Api::<Pod>::namespaced(self.client.clone(), &self.control_ns);
            let lp = ListParams::default().labels(&format!("app=revplane,istio.io/rev={revision}"));
            pods.delete_collection(&Default::default(), &lp)
                .await
                .unwrap();
        }
        for (revision, deployment) in wanted {
            if self.servers.contains_key(&revision) {
                continue;
            }
            let running = self.start_server(&revision, &deployment).await;
            self.servers.insert(revision.clone(), running);
            self.create_replica_pods(&revision, &deployment).await;
            let name = deployment.metadata.name.clone().unwrap();
            let replicas = deployment.spec.replicas.unwrap_or(1);
            let status = serde_json::json!({ "status": {
                "observedGeneration": deployment.metadata.generation,
                "replicas": replicas, "readyReplicas": replicas,
                "availableReplicas": replicas, "updatedReplicas": replicas,
                "conditions": [{
                    "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                }],
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        }
    }

    /// The Deployment's pods, as its ReplicaSet would create them (the server they stand for
    /// is the process started above).
    async fn create_replica_pods(&self, revision: &str, deployment: &Deployment) {
        let template = &deployment.spec.template;
        let replicas = deployment.spec.replicas.unwrap_or(1);
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.control_ns);
        for i in 0..replicas {
            let pod = Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("revplane-{revision}-{i}")),
                    namespace: Some(self.control_ns.clone()),
                    labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            pods.create(&Default::default(), &pod).await.unwrap();
        }
    }

    async fn start_server(&self, revision: &str, deployment: &Deployment) -> Running {
        let addresses = self
            .addresses
            .get(revision)
            .unwrap_or_else(|| panic!("the test assigned no addresses to revision {revision}"));
        let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
        let dir = tempfile::tempdir().unwrap();
        // The Secret mounted at /etc/revplane/tls.
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.control_ns)
            .get(&format!("revplane-{revision}-tls"))
            .await
            .unwrap();
        let data = secret.data.unwrap();
        for file in ["tls.crt", "tls.key"] {
            std::fs::write(dir.path().join(file), &data[file].0).unwrap();
        }
        let mut args: Vec<OsString> = Vec::new();
        for arg in container.args.clone().unwrap() {
            let (flag, _) = arg.split_once('=').unwrap_or((&arg, ""));
            let value = match flag {
                "--xds-addr" => addresses.xds.to_string(),
                "--admin-addr" => addresses.admin.to_string(),
                "--webhook-addr" => addresses.webhook.to_string(),
                "--tls-cert" => dir.path().join("tls.crt").display().to_string(),
                "--tls-key" => dir.path().join("tls.key").display().to_string(),
                _ => {
                    args.push(arg.clone().into());
                    continue;
                }
            };
            args.push(format!("{flag}={value}").into());
        }
        let log = dir.path().join("revplane.log");
        let child = Command::new(env!("CARGO_BIN_EXE_revplane"))
            .args(&args)
            .env("POD_NAMESPACE", &self.control_ns)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start revplane");
        let running = Running {
            child,
            admin: addresses.admin,
            log,
            _dir: dir,
        };
        for _ in 0..1500 {
            if let Ok(r) = reqwest::get(format!("http://{}/ready", running.admin)).await {
                if r.status().is_success() {
                    return running;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "revision {revision} not ready within 30 s: {}",
            std::fs::read_to_string(&running.log).unwrap_or_default()
        );
    }

    async fn pods(&mut self) {
        let api = Api::<Pod>::all(self.client.clone());
        let pods = api.list(&ListParams::default()).await.unwrap();
        let mut present = std::collections::BTreeSet::new();
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap();
            present.insert(uid.clone());
            if self.proxies.contains_key(&uid) {
                continue;
            }
            let Some(container) = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == "revplane-proxy"))
                .cloned()
            else {
                continue;
            };
            let (ns, name) = (
                pod.metadata.namespace.clone().unwrap(),
                pod.metadata.name.clone().unwrap(),
            );
            let env = downward_env(&pod, &container);
            let envoy = Envoy::start_container_unobserved(
                container.command.as_ref().unwrap(),
                container.args.as_ref().unwrap(),
                &env,
            );
            let revision = pod.metadata.labels.as_ref().unwrap()["istio.io/rev"].clone();
            let node = format!("sidecar~127.0.0.1~{name}.{ns}~{ns}.svc.cluster.local");
            self.wait_attached(&revision, &node, &envoy).await;
            self.proxies.insert(uid, envoy);
            let containers: Vec<serde_json::Value> = pod
                .spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name, "image": c.image, "imageID": "", "ready": true,
                        "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    })
                })
                .collect();
            let status = serde_json::json!({ "status": {
                "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": containers,
            }});
            Api::<Pod>::namespaced(self.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        }
        self.proxies.retain(|uid, _| present.contains(uid));
    }

    /// Waits until `revision`'s server lists `node` with every requested type acknowledged.
    async fn wait_attached(&self, revision: &str, node: &str, envoy: &Envoy) {
        let admin = self
            .servers
            .get(revision)
            .unwrap_or_else(|| panic!("a pod of revision {revision}, which does not run"))
            .admin;
        for _ in 0..500 {
            let body = reqwest::get(format!("http://{admin}/debug/proxies"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let proxies: serde_json::Value = serde_json::from_str(&body).unwrap();
            let synced = proxies["proxies"].as_array().unwrap().iter().any(|p| {
                p["node_id"] == node
                    && p["types"]["cds"]["acked_version"].is_string()
                    && p["types"]["cds"]["acked_version"] == p["types"]["cds"]["sent_version"]
            });
            if synced {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{node} did not attach to {revision} within 10 s: {}\n{}",
            envoy.log_text(),
            self.server_log(revision)
        );
    }
}

/// What the kubelet puts in a container's environment from the downward API (pod IP
/// 127.0.0.1).
pub fn downward_env(
    pod: &Pod,
    container: &k8s_openapi::api::core::v1::Container,
) -> BTreeMap<String, String> {
    let meta = &pod.metadata;
    container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let path = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            let value = match path {
                Some("metadata.name") => meta.name.clone().unwrap(),
                Some("metadata.namespace") => meta.namespace.clone().unwrap(),
                Some("status.podIP") => "127.0.0.1".to_string(),
                Some("spec.serviceAccountName") => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                other => e
                    .value
                    .clone()
                    .unwrap_or_else(|| panic!("env {} from {other:?}", e.name)),
            };
            (e.name.clone(), value)
        })
        .collect()
}
