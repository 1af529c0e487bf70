//! A manifest directory for `revplane serve --source <dir>`, written by the test: Services
//! and EndpointSlices as an operator would apply them, rewritten in one step when a test
//! moves endpoints (write beside, then rename: the source never reads half a file).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// A manifest directory; removed on drop.
pub struct Manifests {
    pub dir: tempfile::TempDir,
}

impl Manifests {
    pub fn new() -> Manifests {
        Manifests {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or replaces) `<file>.yaml` with `documents`, atomically.
    pub fn write(&self, file: &str, documents: &[String]) {
        let hidden = self.path().join(format!(".{file}.tmp"));
        std::fs::write(&hidden, documents.join("---\n")).unwrap();
        std::fs::rename(&hidden, self.path().join(format!("{file}.yaml"))).unwrap();
    }
}

/// A Namespace.
pub fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// A ClusterIP Service `name.ns` with `cluster_ip` and `ports` as (port name, port).
pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  type: ClusterIP\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n\
         \x20 selector: {{app: {name}}}\n  ports:\n"
    );
    for (port_name, port) in ports {
        writeln!(
            yaml,
            "  - {{name: {port_name}, port: {port}, targetPort: {port}, protocol: TCP}}"
        )
        .unwrap();
    }
    yaml
}

/// What Kubernetes says of one endpoint (pod) of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Running and ready.
    Ready,
    /// Shutting down: not ready, still serving, terminating (revplane leaves it out).
    Terminating,
}

/// EndpointSlices of Service `service.ns` for its port `port_name`, one per entry of
/// `endpoints`: the test servers are pods that share an IP (127.0.0.1) but not a port, and a
/// slice has one port list for all its endpoints. Slice and pod are `<service>-<port>`.
pub fn slices(
    ns: &str,
    service: &str,
    port_name: &str,
    endpoints: &[(SocketAddr, Condition)],
) -> Vec<String> {
    endpoints
        .iter()
        .map(|(addr, condition)| {
            let (ready, terminating) = match condition {
                Condition::Ready => (true, false),
                Condition::Terminating => (false, true),
            };
            let pod = format!("{service}-{}", addr.port());
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n\
                 \x20 name: {pod}\n  namespace: {ns}\n\
                 \x20 labels: {{kubernetes.io/service-name: {service}}}\n\
                 addressType: IPv4\n\
                 ports:\n- {{name: {port_name}, port: {port}, protocol: TCP}}\n\
                 endpoints:\n- addresses: [\"{ip}\"]\n\
                 \x20 conditions: {{ready: {ready}, serving: true, terminating: {terminating}}}\n\
                 \x20 targetRef: {{kind: Pod, namespace: {ns}, name: {pod}}}\n",
                port = addr.port(),
                ip = addr.ip(),
            )
        })
        .collect()
}

/// The namespace, Service and slices of a one-port service whose endpoints are `endpoints`.
pub fn one_port_service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    port: (&str, u16),
    endpoints: &[(SocketAddr, Condition)],
) -> Vec<String> {
    let mut documents = vec![namespace(ns), service(ns, name, cluster_ip, &[port])];
    documents.extend(slices(ns, name, port.0, endpoints));
    documents
}

/// The ConfigMap `revplane-<revision>` in `revplane-system` with mesh config `mesh` (YAML).
pub fn mesh_config(revision: &str, mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: revplane-{revision}\n\
         \x20 namespace: revplane-system\ndata:\n  mesh: |\n{indented}"
    )
}
