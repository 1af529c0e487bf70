//! Helm and kubectl (installed by scripts/install-kube, run from scripts/test) and the
//! revplane chart rendered as JSON objects.
//!
//! Every helm call gets a private HELM_*_HOME, so tests never read or write the user's Helm
//! configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use revplane::mesh::{LabelSelector, Requirement};
use serde_json::{json, Value};

use super::kube::tool;

/// The chart under test.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/charts/revplane")
}

/// The helm binary (REVPLANE_HELM).
pub fn helm_bin() -> PathBuf {
    tool("REVPLANE_HELM", "helm-v3.22.0/helm")
}

/// The kubectl binary (REVPLANE_KUBECTL).
pub fn kubectl_bin() -> PathBuf {
    tool("REVPLANE_KUBECTL", "kubectl-v1.36.3/kubectl")
}

fn helm_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("revplane-helm")
            .tempdir()
            .unwrap()
            .keep()
    })
}

/// Runs `program args` (stdin from `input`), giving its stdout, or its stderr on failure.
fn run(mut cmd: Command, input: Option<&str>) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm args...`, against the cluster of `kubeconfig` if given.
pub fn helm(args: &[&str], kubeconfig: Option<&Path>) -> Result<String, String> {
    let home = helm_home();
    let mut cmd = Command::new(helm_bin());
    cmd.args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    if let Some(k) = kubeconfig {
        cmd.arg("--kubeconfig").arg(k);
    }
    run(cmd, None)
}

/// `kubectl --kubeconfig <kubeconfig> args...` with `input` on stdin.
pub fn kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> Result<String, String> {
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(cmd, Some(input))
}

/// Parses a multi-document YAML stream into its objects (empty documents dropped).
pub fn parse_manifests(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `helm template <release> <chart> -n <namespace> <args>`: the error message on failure.
pub fn try_render(release: &str, namespace: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    helm(&all, None).map(|text| parse_manifests(&text))
}

/// The objects of one revision, rendered with `helm template` (panics on a render error).
pub fn render(revision: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let set = format!("revision={revision}");
    let mut all = vec!["--set", set.as_str()];
    all.extend_from_slice(args);
    try_render(&format!("revplane-{revision}"), namespace, &all)
        .unwrap_or_else(|e| panic!("helm template of revision {revision} {args:?} failed: {e}"))
}

/// The one object of `kind` named `name` among `objects`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// A selector as the API server's JSON writes it (matchExpressions only, as the chart does).
pub fn selector_json(s: &LabelSelector) -> Value {
    let exprs: Vec<Value> = s
        .match_expressions
        .iter()
        .map(|r| match r {
            Requirement::In(k, v) => json!({"key": k, "operator": "In", "values": v}),
            Requirement::NotIn(k, v) => json!({"key": k, "operator": "NotIn", "values": v}),
            Requirement::Exists(k) => json!({"key": k, "operator": "Exists"}),
            Requirement::DoesNotExist(k) => json!({"key": k, "operator": "DoesNotExist"}),
        })
        .collect();
    let mut v = json!({ "matchExpressions": exprs });
    if !s.match_labels.is_empty() {
        v["matchLabels"] = json!(s.match_labels);
    }
    v
}

/// Writes `pem` to a temporary file (kept until the test binary's temp dir is cleaned).
pub fn pem_file(pem: &[u8]) -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file.into_temp_path()
}

/// A Secret data key, decoded.
pub fn secret_data(secret: &Value, key: &str) -> Vec<u8> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret.clone())
        .unwrap_or_else(|e| panic!("not a Secret: {e}: {secret}"));
    secret.data.unwrap()[key].0.clone()
}

pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}
