//! End-to-end tier for `revplane tag ...` and `revplane revision list`: the `revplane`
//! binary as a process, run as an operator would (KUBECONFIG with the admin token), against
//! a real kube-apiserver and etcd.
//!
//! A revision is "installed" here by creating its MutatingWebhookConfiguration (built by
//! `revision::tags`, calling a URL on 127.0.0.1 where nothing listens). The API server never
//! calls it: pods are only created in namespaces labelled `istio-injection=disabled`, which
//! no webhook selects. Webhook configurations are cluster-scoped and the cluster is shared by
//! every test of this binary, so every revision, tag and namespace name starts with the
//! test's own prefix.

mod chart;
#[path = "../common/mod.rs"]
mod common;
mod revision;
mod tag;

use std::net::TcpListener;
use std::process::{Command, Output};

use common::kube::*;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use revplane::revision::tags::{revision_configuration, url_client_config};

/// What one `revplane` run printed.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `revplane <args>` with the admin kubeconfig of the shared cluster.
async fn revplane(cluster: &KubeCluster, args: &[&str]) -> Run {
    let kubeconfig = cluster.main.kubeconfig(ADMIN_TOKEN);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out: Output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_revplane"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A client config calling an HTTPS URL on 127.0.0.1 where nothing listens.
fn unreachable_url(cluster: &KubeCluster) -> WebhookClientConfig {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = std::fs::read(cluster.dir.join("ca.crt")).unwrap();
    url_client_config(&format!("https://127.0.0.1:{port}/inject"), &ca)
}

/// Creates revision `rev`'s MutatingWebhookConfiguration, as the chart does.
async fn install(admin: &Client, rev: &str, client_config: &WebhookClientConfig) {
    let config = revision_configuration(rev, client_config);
    configs(admin)
        .patch(
            config.metadata.name.as_deref().unwrap(),
            &PatchParams::apply("revplane-tests").force(),
            &Patch::Apply(&config),
        )
        .await
        .unwrap();
}

fn configs(admin: &Client) -> Api<MutatingWebhookConfiguration> {
    Api::all(admin.clone())
}

async fn tag_object(admin: &Client, tag: &str) -> Option<MutatingWebhookConfiguration> {
    configs(admin)
        .get_opt(&format!("revplane-revision-tag-{tag}"))
        .await
        .unwrap()
}

fn label<'a>(config: &'a MutatingWebhookConfiguration, key: &str) -> Option<&'a str> {
    config
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The row of a table whose first column is `first`, split on whitespace.
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
}
