//! Tag objects: what `revplane tag set/generate` and the chart write, field by field.

use serde_json::json;

use super::*;

const CA: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn canary_by_service() -> MutatingWebhookConfiguration {
    revision_configuration(
        "canary",
        &service_client_config("canary", "revplane-system", CA),
    )
}

fn canary_by_url() -> MutatingWebhookConfiguration {
    revision_configuration(
        "canary",
        &url_client_config("https://127.0.0.1:15017/inject", CA),
    )
}

fn webhook_names(config: &MutatingWebhookConfiguration) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| w.name.clone())
        .collect()
}

fn client_configs(config: &MutatingWebhookConfiguration) -> Vec<serde_json::Value> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| serde_json::to_value(&w.client_config).unwrap())
        .collect()
}

/// The whole object, as the contract writes it, for one tag over a Service client config.
#[test]
fn a_tag_over_a_service_is_the_contracts_object() {
    let tag = tag_configuration("prod", "canary", &canary_by_service()).unwrap();
    let client = json!({
        "service": {"name": "revplane-canary", "namespace": "revplane-system",
                    "path": "/inject/tag/prod", "port": 443},
        "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
    });
    let common = json!({
        "clientConfig": client,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                   "resources": ["pods"], "scope": "*"}],
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "reinvocationPolicy": "Never",
        "timeoutSeconds": 10,
    });
    let hook = |name: &str, ns: serde_json::Value, obj: serde_json::Value| {
        let mut h = common.clone();
        h["name"] = json!(name);
        h["namespaceSelector"] = json!({ "matchExpressions": ns });
        h["objectSelector"] = json!({ "matchExpressions": obj });
        h
    };
    let expected = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "revplane-revision-tag-prod",
            "labels": {"app": "revplane", "istio.io/tag": "prod", "istio.io/rev": "canary"},
        },
        "webhooks": [
            hook(
                "rev.namespace.sidecar-injector.revplane.io",
                json!([{"key": "istio.io/rev", "operator": "In", "values": ["prod"]},
                       {"key": "istio-injection", "operator": "DoesNotExist"}]),
                json!([{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]),
            ),
            hook(
                "rev.object.sidecar-injector.revplane.io",
                json!([{"key": "istio.io/rev", "operator": "DoesNotExist"},
                       {"key": "istio-injection", "operator": "DoesNotExist"}]),
                json!([{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
                       {"key": "istio.io/rev", "operator": "In", "values": ["prod"]}]),
            ),
        ],
    });
    assert_eq!(serde_json::to_value(&tag).unwrap(), expected);
}

#[test]
fn a_tag_over_a_url_extends_the_url_path() {
    let tag = tag_configuration("prod", "canary", &canary_by_url()).unwrap();
    let expected = json!({
        "url": "https://127.0.0.1:15017/inject/tag/prod",
        "caBundle": serde_json::to_value(ByteString(CA.to_vec())).unwrap(),
    });
    assert_eq!(client_configs(&tag), vec![expected.clone(), expected]);
}

#[test]
fn the_default_tag_also_answers_the_legacy_labels() {
    for revision in [canary_by_service(), canary_by_url()] {
        let tag = tag_configuration("default", "canary", &revision).unwrap();
        assert_eq!(
            webhook_names(&tag),
            [
                "rev.namespace.sidecar-injector.revplane.io",
                "rev.object.sidecar-injector.revplane.io",
                "namespace.sidecar-injector.revplane.io",
                "object.sidecar-injector.revplane.io",
            ]
        );
        let selectors: Vec<_> = tag
            .webhooks
            .iter()
            .flatten()
            .map(|w| serde_json::to_value(&w.namespace_selector).unwrap())
            .collect();
        assert_eq!(
            selectors[2],
            json!({"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]})
        );
        // Every webhook calls the same tag path.
        let paths: Vec<String> = client_configs(&tag)
            .iter()
            .map(|c| {
                c["url"]
                    .as_str()
                    .or(c["service"]["path"].as_str())
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            paths.iter().all(|p| p.ends_with("/inject/tag/default")),
            "{paths:?}"
        );
    }
    // The revision's own configuration selects by its own name, and a non-default one has two.
    assert_eq!(webhook_names(&canary_by_service()).len(), 2);
}

#[test]
fn labels_name_the_tag_and_its_revision() {
    let tag = tag_configuration("blue", "1-25-0", &canary_by_url()).unwrap();
    assert_eq!(
        tag.metadata.name.as_deref(),
        Some("revplane-revision-tag-blue")
    );
    let labels = tag.metadata.labels.unwrap();
    assert_eq!(labels["app"], "revplane");
    assert_eq!(labels["istio.io/tag"], "blue");
    assert_eq!(labels["istio.io/rev"], "1-25-0");
    let revision = canary_by_service().metadata;
    assert_eq!(
        revision.name.as_deref(),
        Some("revplane-sidecar-injector-canary")
    );
    let labels = revision.labels.unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["istio.io/rev"], "canary");
}

#[test]
fn a_tag_reads_back_as_what_built_it() {
    for (tag, revision) in [("prod", "canary"), ("default", "stable")] {
        let config = tag_configuration(tag, revision, &canary_by_url()).unwrap();
        assert_eq!(
            read_tag(&config).unwrap(),
            Tag {
                name: tag.into(),
                revision: revision.into()
            }
        );
        // Through YAML, as `tag generate` prints it.
        let yaml = serde_yaml_ng::to_string(&config).unwrap();
        let parsed: MutatingWebhookConfiguration = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(parsed, config);
    }
    let err = read_tag(&canary_by_service()).unwrap_err();
    assert!(err.to_string().contains("no istio.io/tag label"), "{err}");
    let mut renamed = tag_configuration("prod", "canary", &canary_by_url()).unwrap();
    renamed.metadata.name = Some("revplane-revision-tag-other".into());
    assert!(matches!(read_tag(&renamed), Err(TagError::NotATag { .. })));
}

#[test]
fn tag_paths_extend_whatever_path_the_revision_has() {
    let url = |u: &str| {
        tag_client_config("prod", &url_client_config(u, CA))
            .url
            .unwrap()
    };
    assert_eq!(url("https://h:1/inject"), "https://h:1/inject/tag/prod");
    assert_eq!(url("https://h:1/inject/"), "https://h:1/inject/tag/prod");
    assert_eq!(url("https://h:1"), "https://h:1/tag/prod");
    assert_eq!(url("https://h/a/b?x=1"), "https://h/a/b/tag/prod?x=1");
    let mut service = service_client_config("canary", "ns", CA);
    service.service.as_mut().unwrap().path = None;
    let path = tag_client_config("prod", &service).service.unwrap().path;
    assert_eq!(path.as_deref(), Some("/tag/prod"));
}

#[test]
fn a_revision_without_client_config_cannot_be_tagged() {
    let mut config = canary_by_url();
    config.webhooks = Some(Vec::new());
    let err = tag_configuration("prod", "canary", &config).unwrap_err();
    assert!(
        err.to_string()
            .contains("revplane-sidecar-injector-canary has no webhook"),
        "{err}"
    );
}

#[test]
fn tag_names_are_dns_labels() {
    assert_eq!(parse_tag("prod").unwrap(), "prod");
    let err = parse_tag("Prod.v2").unwrap_err();
    assert!(
        err.to_string().contains("invalid tag name \"Prod.v2\""),
        "{err}"
    );
}

#[test]
fn namespaces_count_for_the_name_their_labels_select() {
    let ns = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let all = [
        ("shop", ns(&[("istio.io/rev", "prod")])),
        ("cart", ns(&[("istio.io/rev", "prod")])),
        ("web", ns(&[("istio.io/rev", "canary")])),
        ("legacy", ns(&[("istio-injection", "enabled")])),
        // istio-injection wins over istio.io/rev: this one is default's, not prod's.
        (
            "mixed",
            ns(&[("istio.io/rev", "prod"), ("istio-injection", "enabled")]),
        ),
        (
            "off",
            ns(&[("istio.io/rev", "prod"), ("istio-injection", "disabled")]),
        ),
        ("plain", ns(&[("team", "a")])),
    ];
    let by_name = namespaces_by_name(all.iter().map(|(n, l)| (*n, l)));
    let expected: BTreeMap<String, Vec<String>> = [
        ("prod", vec!["cart", "shop"]),
        ("canary", vec!["web"]),
        ("default", vec!["legacy", "mixed"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(by_name, expected);
}
