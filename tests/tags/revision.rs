//! `revplane revision list` against the shared cluster: replicas, tags, namespaces, pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use revplane::revision::tags::service_client_config;

use super::common::kube::*;
use super::*;

/// Creates Deployment `name` in `ns` with `desired` replicas and `ready` ready ones (no
/// controller runs here, so the status stays as written).
async fn deployment(admin: &Client, ns: &str, name: &str, rev: &str, desired: i32, ready: i32) {
    create_namespace(admin, ns, &[]).await;
    let api = Api::<Deployment>::namespaced(admin.clone(), ns);
    let labels = serde_json::json!({"app": "revplane", "istio.io/rev": rev});
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"replicas": desired, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "revplane", "image": "revplane"}]}}},
    }))
    .unwrap();
    let pp = PatchParams::apply("revplane-tests").force();
    api.patch(name, &pp, &Patch::Apply(&d)).await.unwrap();
    let status = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "status": {"replicas": desired, "readyReplicas": ready}});
    api.patch_status(name, &pp, &Patch::Apply(&status))
        .await
        .unwrap();
}

/// Creates pod `name` labelled `istio.io/rev=<rev>` in `ns` (which no webhook selects).
async fn pod(admin: &Client, ns: &str, name: &str, rev: &str) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"istio.io/rev": rev}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn revision_list_shows_replicas_tags_namespaces_and_pods() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let ca = std::fs::read(cluster.dir.join("ca.crt")).unwrap();
    // t4-a: called through its Service in t4-cp; t4-b: by URL, Deployment found by labels.
    install(&admin, "t4-a", &service_client_config("t4-a", "t4-cp", &ca)).await;
    install(&admin, "t4-b", &unreachable_url(cluster)).await;
    install(&admin, "t4-c", &unreachable_url(cluster)).await;
    deployment(&admin, "t4-cp", "revplane-t4-a", "t4-a", 2, 1).await;
    deployment(&admin, "t4-ext", "revplane-external", "t4-b", 1, 1).await;
    // `default` is a tag here: it also takes the namespaces labelled istio-injection=enabled.
    for (tag, rev) in [
        ("t4-prod", "t4-a"),
        ("t4-blue", "t4-a"),
        ("default", "t4-c"),
    ] {
        let set = revplane(cluster, &["tag", "set", tag, "--revision", rev]).await;
        assert!(set.ok, "{}", set.stderr);
    }
    create_namespace(&admin, "t4-direct", &[("istio.io/rev", "t4-a")]).await;
    create_namespace(&admin, "t4-tagged", &[("istio.io/rev", "t4-prod")]).await;
    create_namespace(&admin, "t4-b-ns", &[("istio.io/rev", "t4-b")]).await;
    create_namespace(&admin, "t4-legacy", &[("istio-injection", "enabled")]).await;
    // Pods carry istio.io/rev as injected pods do; their namespace opts out of injection.
    create_namespace(&admin, "t4-pods", &[("istio-injection", "disabled")]).await;
    create_default_service_account(&admin, "t4-pods").await;
    pod(&admin, "t4-pods", "a-1", "t4-a").await;
    pod(&admin, "t4-pods", "a-2", "t4-a").await;
    pod(&admin, "t4-pods", "b-1", "t4-b").await;

    let list = revplane(cluster, &["revision", "list"]).await;
    assert!(list.ok, "{}", list.stderr);
    let header: Vec<&str> = list
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["REVISION", "READY", "TAGS", "NAMESPACES", "PODS"]);
    let expect = |cells: [&str; 5]| Some(cells.map(String::from).to_vec());
    assert_eq!(
        row(&list.stdout, "t4-a"),
        expect([
            "t4-a",
            "1/2",
            "t4-blue,t4-prod",
            "t4-direct,t4-tagged(t4-prod)",
            "2"
        ]),
        "{}",
        list.stdout
    );
    assert_eq!(
        row(&list.stdout, "t4-b"),
        expect(["t4-b", "1/1", "-", "t4-b-ns", "1"])
    );
    assert_eq!(
        row(&list.stdout, "t4-c"),
        expect(["t4-c", "-", "default", "t4-legacy(default)", "0"])
    );

    let json = revplane(cluster, &["revision", "list", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let a = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == "t4-a")
        .unwrap();
    assert_eq!(
        *a,
        serde_json::json!({
            "revision": "t4-a",
            "replicas": {"ready": 1, "desired": 2},
            "tags": ["t4-blue", "t4-prod"],
            "namespaces": [{"name": "t4-direct", "via": null}, {"name": "t4-tagged", "via": "t4-prod"}],
            "pods": 2,
        })
    );
}
