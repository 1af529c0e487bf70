//! Both revisions installed side by side into the real kube-apiserver, an upgrade applied
//! as a server-side dry run, and the certificate kept across a real upgrade.

use std::path::Path;

use serde_json::Value;

use super::common::helm::*;
use super::common::kube::*;
use super::NS;

/// Applies `manifest` as a server-side dry run; every object must be accepted.
fn server_dry_run(kubeconfig: &Path, manifest: &str) {
    let applied = kubectl(
        kubeconfig,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager=revplane-chart-test",
            "-f",
            "-",
        ],
        manifest,
    )
    .unwrap_or_else(|e| panic!("the API server refused the manifest: {e}"));
    let accepted = applied.lines().filter(|l| l.contains("(server dry run)"));
    assert_eq!(
        accepted.count(),
        parse_manifests(manifest).len(),
        "{applied}"
    );
}

/// The caBundles (base64, space-separated) of a MutatingWebhookConfiguration's webhooks.
fn ca_bundles(kubeconfig: &Path, config: &str) -> String {
    let what = format!("mutatingwebhookconfiguration/{config}");
    let path = "jsonpath={.webhooks[*].clientConfig.caBundle}";
    kubectl(kubeconfig, &["get", &what, "-o", path], "")
        .unwrap_or_else(|e| panic!("kubectl get {what}: {e}"))
}

/// `kubectl get` of one field (a JSONPath) of a namespaced object.
fn get_field(kubeconfig: &Path, what: &str, path: &str) -> String {
    kubectl(
        kubeconfig,
        &["get", what, "-n", NS, "-o", &format!("jsonpath={{{path}}}")],
        "",
    )
    .unwrap_or_else(|e| panic!("kubectl get {what}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_object_is_accepted_by_the_apiserver_and_the_certificate_survives_upgrades() {
    let cluster = KubeCluster::shared().await;
    let kubeconfig = cluster.main.kubeconfig(ADMIN_TOKEN);
    let kc = Some(kubeconfig.as_path());
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    // Both revisions side by side, with a tag, and the URL variant: Helm refuses to install
    // an object another release owns, so this also proves they share none.
    let releases: [(&str, &[&str]); 2] = [
        ("stable", &["--set", "revisionTags={lts}"]),
        (
            "canary",
            &[
                "--set",
                "revisionTags={prod}",
                "--set",
                "injectionURL=https://127.0.0.1:15017/inject",
            ],
        ),
    ];
    for (rev, extra) in releases {
        let (release, set) = (format!("revplane-{rev}"), format!("revision={rev}"));
        let mut args = vec!["install", &release, chart, "--namespace", NS, "--set", &set];
        args.extend_from_slice(extra);
        helm(&args, kc).unwrap_or_else(|e| panic!("helm install {release}: {e}"));
        // Every object of the release is there.
        let manifest = helm(&["get", "manifest", &release, "--namespace", NS], kc).unwrap();
        let count = parse_manifests(&manifest).len();
        let got = kubectl(&kubeconfig, &["get", "-f", "-", "-o", "name"], &manifest)
            .unwrap_or_else(|e| panic!("{release}: {e}"));
        assert_eq!(got.lines().count(), count, "{got}");
    }

    let crt = "revplane-stable-tls";
    let before = get_field(&kubeconfig, &format!("secret/{crt}"), ".data.tls\\.crt");
    assert!(!before.is_empty());
    let ca = get_field(&kubeconfig, &format!("secret/{crt}"), ".data.ca\\.crt");
    assert_eq!(
        ca_bundles(&kubeconfig, "revplane-sidecar-injector-stable"),
        format!("{ca} {ca}")
    );

    // An upgrade, rendered against the cluster (lookup sees the Secret) and applied as a
    // server-side dry run: the API server accepts every object of the new revision of it.
    let upgrade = [
        "upgrade",
        "revplane-stable",
        chart,
        "--namespace",
        NS,
        "--set",
        "revision=stable",
        "--set",
        "revisionTags={lts,default}",
        "--set",
        "replicas=3",
    ];
    let mut dry = upgrade.to_vec();
    dry.extend(["--dry-run=server", "-o", "json"]);
    let release: Value = serde_json::from_str(&helm(&dry, kc).unwrap()).unwrap();
    let manifest = release["manifest"].as_str().unwrap();
    let objects = parse_manifests(manifest);
    let secret = find(&objects, "Secret", crt);
    assert_eq!(
        secret["data"]["tls.crt"], before,
        "the dry-run upgrade made a new certificate"
    );
    server_dry_run(&kubeconfig, manifest);

    // The real upgrade keeps the certificate, so the webhooks' CA still matches it.
    helm(&upgrade, kc).unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let after = get_field(&kubeconfig, &format!("secret/{crt}"), ".data.tls\\.crt");
    assert_eq!(
        after, before,
        "helm upgrade replaced the webhook certificate"
    );
    assert_eq!(
        ca_bundles(&kubeconfig, "revplane-sidecar-injector-stable"),
        format!("{ca} {ca}")
    );
    let tag_ca = ca_bundles(&kubeconfig, "revplane-revision-tag-default");
    assert_eq!(tag_ca, [ca.as_str(); 4].join(" "));

    // A revision with its own certificate (no Secret rendered) is accepted too.
    let pem = pem_file(&secret_data(secret, "ca.crt"));
    let byo = format!("caBundle={}", pem.display());
    let objects = render("byo", NS, &["--set-file", &byo]);
    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
    let manifest = objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    server_dry_run(&kubeconfig, &manifest);
}
