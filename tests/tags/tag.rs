//! `revplane tag set|list|remove|generate` against the shared cluster.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use revplane::revision::tags::{service_client_config, tag_configuration};

use super::common::kube::*;
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn tag_set_creates_then_refuses_or_moves_as_asked() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let url = unreachable_url(cluster);
    install(&admin, "t1-canary", &url).await;
    install(&admin, "t1-stable", &url).await;

    let run = revplane(
        cluster,
        &["tag", "set", "t1-prod", "--revision", "t1-canary"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("istio.io/rev=t1-prod"),
        "{}",
        run.stdout
    );
    let tag = tag_object(&admin, "t1-prod").await.expect("the tag object");
    assert_eq!(label(&tag, "app"), Some("revplane"));
    assert_eq!(label(&tag, "istio.io/tag"), Some("t1-prod"));
    assert_eq!(label(&tag, "istio.io/rev"), Some("t1-canary"));
    let hooks = tag.webhooks.clone().unwrap();
    assert_eq!(hooks.len(), 2);
    let tag_url = url.url.clone().unwrap() + "/tag/t1-prod";
    for hook in &hooks {
        assert_eq!(hook.client_config.url.as_deref(), Some(tag_url.as_str()));
        assert_eq!(hook.client_config.ca_bundle, url.ca_bundle);
    }
    let revision = configs(&admin)
        .get("revplane-sidecar-injector-t1-canary")
        .await
        .unwrap();
    let built = tag_configuration("t1-prod", "t1-canary", &revision).unwrap();
    assert_eq!(
        tag.webhooks, built.webhooks,
        "stored as the pure module builds it"
    );
    let managers: Vec<_> = tag.metadata.managed_fields.iter().flatten().collect();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some("revplane")
                && m.operation.as_deref() == Some("Apply")),
        "server-side apply by revplane: {managers:?}"
    );

    let refused = revplane(
        cluster,
        &["tag", "set", "t1-prod", "--revision", "t1-stable"],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("tag t1-prod already points to revision t1-canary")
            && refused.stderr.contains("--overwrite"),
        "{}",
        refused.stderr
    );
    let tag = tag_object(&admin, "t1-prod").await.unwrap();
    assert_eq!(label(&tag, "istio.io/rev"), Some("t1-canary"), "unchanged");

    let moved = revplane(
        cluster,
        &[
            "tag",
            "set",
            "t1-prod",
            "--revision",
            "t1-stable",
            "--overwrite",
        ],
    )
    .await;
    assert!(moved.ok, "{}", moved.stderr);
    assert!(
        moved
            .stdout
            .contains("moved from revision t1-canary to t1-stable"),
        "{}",
        moved.stdout
    );
    let tag = tag_object(&admin, "t1-prod").await.unwrap();
    assert_eq!(label(&tag, "istio.io/rev"), Some("t1-stable"));
    assert_eq!(tag.webhooks.unwrap().len(), 2);
    // Setting it to where it already points is not an overwrite.
    let same = revplane(
        cluster,
        &["tag", "set", "t1-prod", "--revision", "t1-stable"],
    )
    .await;
    assert!(same.ok, "{}", same.stderr);
    assert!(same.stdout.contains("already points"), "{}", same.stdout);

    let missing = revplane(cluster, &["tag", "set", "t1-x", "--revision", "t1-missing"]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains("revision t1-missing is not installed")
            && missing.stderr.contains("helm install revplane-t1-missing"),
        "{}",
        missing.stderr
    );
    assert!(tag_object(&admin, "t1-x").await.is_none());

    let shadow = revplane(
        cluster,
        &["tag", "set", "t1-canary", "--revision", "t1-stable"],
    )
    .await;
    assert!(!shadow.ok);
    assert!(
        shadow
            .stderr
            .contains("t1-canary is the name of an installed revision"),
        "{}",
        shadow.stderr
    );
    assert!(tag_object(&admin, "t1-canary").await.is_none());

    let invalid = revplane(
        cluster,
        &["tag", "set", "Prod.v2", "--revision", "t1-stable"],
    )
    .await;
    assert_eq!(invalid.code, Some(2), "a usage error");
    assert!(
        invalid.stderr.contains("invalid tag name"),
        "{}",
        invalid.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_list_and_remove_follow_the_namespaces_that_use_a_tag() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    install(&admin, "t2-rev", &unreachable_url(cluster)).await;
    let set = revplane(cluster, &["tag", "set", "t2-prod", "--revision", "t2-rev"]).await;
    assert!(set.ok, "{}", set.stderr);
    create_namespace(&admin, "t2-shop", &[("istio.io/rev", "t2-prod")]).await;
    // istio-injection wins over istio.io/rev: this namespace does not use the tag.
    create_namespace(
        &admin,
        "t2-off",
        &[("istio.io/rev", "t2-prod"), ("istio-injection", "disabled")],
    )
    .await;

    let list = revplane(cluster, &["tag", "list"]).await;
    assert!(list.ok, "{}", list.stderr);
    assert!(
        list.stdout.starts_with("TAG ") && list.stdout.lines().next().unwrap().contains("REVISION"),
        "{}",
        list.stdout
    );
    assert_eq!(
        row(&list.stdout, "t2-prod"),
        Some(vec!["t2-prod".into(), "t2-rev".into(), "t2-shop".into()]),
        "{}",
        list.stdout
    );
    let json = revplane(cluster, &["tag", "list", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let mine = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == "t2-prod")
        .unwrap();
    assert_eq!(
        *mine,
        serde_json::json!({"tag": "t2-prod", "revision": "t2-rev", "installed": true, "stale_ca": false, "namespaces": ["t2-shop"]})
    );

    let refused = revplane(cluster, &["tag", "remove", "t2-prod"]).await;
    assert!(!refused.ok);
    assert!(
        refused
            .stderr
            .contains("still used by namespace(s) t2-shop")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert!(tag_object(&admin, "t2-prod").await.is_some(), "kept");

    let forced = revplane(cluster, &["tag", "remove", "t2-prod", "--force"]).await;
    assert!(forced.ok, "{}", forced.stderr);
    assert!(
        forced.stdout.contains("Tag t2-prod removed") && forced.stdout.contains("t2-shop"),
        "{}",
        forced.stdout
    );
    assert!(tag_object(&admin, "t2-prod").await.is_none());
    assert_eq!(
        row(&revplane(cluster, &["tag", "list"]).await.stdout, "t2-prod"),
        None
    );

    // A tag whose revision was uninstalled is shown as such: its pods would be refused.
    install(&admin, "t2-gone", &unreachable_url(cluster)).await;
    let set = revplane(cluster, &["tag", "set", "t2-old", "--revision", "t2-gone"]).await;
    assert!(set.ok, "{}", set.stderr);
    configs(&admin)
        .delete("revplane-sidecar-injector-t2-gone", &Default::default())
        .await
        .unwrap();
    let list = revplane(cluster, &["tag", "list"]).await;
    assert_eq!(
        row(&list.stdout, "t2-old"),
        Some(
            ["t2-old", "t2-gone", "(not", "installed)", "-"]
                .map(String::from)
                .to_vec()
        ),
        "{}",
        list.stdout
    );

    let again = revplane(cluster, &["tag", "remove", "t2-prod"]).await;
    assert!(!again.ok);
    assert!(
        again.stderr.contains("there is no tag t2-prod"),
        "{}",
        again.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_generate_prints_the_object_set_applies_and_applies_nothing() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let ca = std::fs::read(cluster.dir.join("ca.crt")).unwrap();
    install(
        &admin,
        "t3-rev",
        &service_client_config("t3-rev", "t3-cp", &ca),
    )
    .await;

    let generated = revplane(
        cluster,
        &["tag", "generate", "t3-blue", "--revision", "t3-rev"],
    )
    .await;
    assert!(generated.ok, "{}", generated.stderr);
    let printed: MutatingWebhookConfiguration = serde_yaml_ng::from_str(&generated.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", generated.stdout));
    assert!(
        tag_object(&admin, "t3-blue").await.is_none(),
        "generate applies nothing"
    );
    let paths: Vec<_> = printed
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.client_config.service.as_ref().unwrap().path.clone())
        .collect();
    assert_eq!(paths, vec![Some("/inject/tag/t3-blue".to_string()); 2]);

    let set = revplane(cluster, &["tag", "set", "t3-blue", "--revision", "t3-rev"]).await;
    assert!(set.ok, "{}", set.stderr);
    let live = tag_object(&admin, "t3-blue").await.unwrap();
    assert_eq!(printed.metadata.name, live.metadata.name);
    assert_eq!(printed.metadata.labels, live.metadata.labels);
    assert_eq!(printed.webhooks, live.webhooks);

    // `default` also answers istio-injection=enabled and sidecar.istio.io/inject=true.
    let default = revplane(
        cluster,
        &["tag", "generate", "default", "--revision", "t3-rev"],
    )
    .await;
    let printed: MutatingWebhookConfiguration = serde_yaml_ng::from_str(&default.stdout).unwrap();
    assert_eq!(printed.webhooks.unwrap().len(), 4);
    let missing = revplane(
        cluster,
        &["tag", "generate", "t3-x", "--revision", "t3-none"],
    )
    .await;
    assert!(
        !missing.ok && missing.stderr.contains("revision t3-none is not installed"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_whose_revision_changed_its_certificate_is_marked_stale_until_set_again() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let client_config = unreachable_url(cluster);
    install(&admin, "ca-canary", &client_config).await;
    assert!(
        revplane(
            cluster,
            &["tag", "set", "ca-prod", "--revision", "ca-canary"]
        )
        .await
        .ok
    );
    let list = revplane(cluster, &["tag", "list"]).await.stdout;
    assert_eq!(row(&list, "ca-prod").unwrap()[1], "ca-canary", "{list}");
    // The revision's certificate is replaced (a new CA): its own webhooks get the new bundle.
    let mut rotated = client_config.clone();
    rotated.ca_bundle = Some(k8s_openapi::ByteString(
        super::common::certs::TestCa::new("rotated")
            .pem()
            .into_bytes(),
    ));
    install(&admin, "ca-canary", &rotated).await;
    let list = revplane(cluster, &["tag", "list"]).await.stdout;
    let cells = row(&list, "ca-prod").unwrap().join(" ");
    assert!(
        cells.contains("stale CA bundle") && cells.contains("--overwrite"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&revplane(cluster, &["tag", "list", "--json"]).await.stdout).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "ca-prod")
        .unwrap();
    assert_eq!(entry["stale_ca"], true);
    // Setting it again copies the revision's current client config.
    assert!(
        revplane(
            cluster,
            &["tag", "set", "ca-prod", "--revision", "ca-canary"]
        )
        .await
        .ok
    );
    let list = revplane(cluster, &["tag", "list"]).await.stdout;
    assert_eq!(row(&list, "ca-prod").unwrap()[1], "ca-canary", "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_installed_by_helm_is_moved_or_removed_with_helm_only() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let client_config = unreachable_url(cluster);
    install(&admin, "hm-stable", &client_config).await;
    install(&admin, "hm-canary", &client_config).await;
    assert!(
        revplane(
            cluster,
            &["tag", "set", "hm-prod", "--revision", "hm-stable"]
        )
        .await
        .ok
    );
    // As `helm install --set revisionTags={hm-prod}` leaves it: owned by the release.
    let owned = serde_json::json!({"metadata": {"annotations": {
        "meta.helm.sh/release-name": "revplane-hm-stable",
        "meta.helm.sh/release-namespace": "revplane-system",
    }}});
    configs(&admin)
        .patch(
            "revplane-revision-tag-hm-prod",
            &PatchParams::default(),
            &Patch::Merge(owned),
        )
        .await
        .unwrap();
    for args in [
        &[
            "tag",
            "set",
            "hm-prod",
            "--revision",
            "hm-canary",
            "--overwrite",
        ][..],
        &["tag", "remove", "hm-prod", "--force"][..],
    ] {
        let run = revplane(cluster, args).await;
        assert!(!run.ok, "{args:?} refused");
        assert!(
            run.stderr.contains("Helm release revplane-hm-stable")
                && run.stderr.contains("revisionTags"),
            "{}",
            run.stderr
        );
    }
    let tag = tag_object(&admin, "hm-prod").await.unwrap();
    assert_eq!(label(&tag, "istio.io/rev"), Some("hm-stable"), "unchanged");
}
