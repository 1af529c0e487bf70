//! The rendered MutatingWebhookConfigurations against `webhook_selectors`, and the
//! certificate the chart generates for them.

use revplane::revision::selection::webhook_selectors;
use serde_json::{json, Value};

use super::common::helm::*;
use super::NS;

fn assert_webhooks(objects: &[Value], name: &str, selects: &str, client: Value, ca: &[u8]) {
    let config = find(objects, "MutatingWebhookConfiguration", name);
    let typed: k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration =
        serde_json::from_value(config.clone()).unwrap();
    let hooks = config["webhooks"].as_array().unwrap();
    let want = webhook_selectors(selects);
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    let want_names: Vec<&str> = want.iter().map(|h| h.name).collect();
    assert_eq!(names, want_names, "{name}");
    for ((hook, want), typed) in hooks.iter().zip(&want).zip(typed.webhooks.unwrap()) {
        assert_eq!(
            hook["namespaceSelector"],
            selector_json(&want.namespace),
            "{name}"
        );
        assert_eq!(
            hook["objectSelector"],
            selector_json(&want.object),
            "{name}"
        );
        let mut cc = hook["clientConfig"].clone();
        cc.as_object_mut().unwrap().remove("caBundle");
        assert_eq!(cc, client, "{name}");
        assert_eq!(typed.client_config.ca_bundle.unwrap().0, ca, "{name}");
        assert_eq!(
            hook["rules"],
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                     "resources": ["pods"], "scope": "*"}])
        );
        for (k, v) in [
            ("failurePolicy", json!("Fail")),
            ("matchPolicy", json!("Equivalent")),
            ("sideEffects", json!("None")),
            ("admissionReviewVersions", json!(["v1"])),
            ("reinvocationPolicy", json!("Never")),
            ("timeoutSeconds", json!(10)),
        ] {
            assert_eq!(hook[k], v, "{name}: {k}");
        }
    }
}

fn service(rev: &str, path: &str) -> Value {
    json!({"service": {"name": format!("revplane-{rev}"), "namespace": NS, "path": path, "port": 443}})
}

#[test]
fn webhooks_are_exactly_the_selection_rules() {
    // A revision with a tag `prod` and the tag `default` (four webhooks).
    let objects = render("canary", NS, &["--set", "revisionTags={prod,default}"]);
    let ca = secret_data(find(&objects, "Secret", "revplane-canary-tls"), "ca.crt");
    assert_webhooks(
        &objects,
        "revplane-sidecar-injector-canary",
        "canary",
        service("canary", "/inject"),
        &ca,
    );
    for tag in ["prod", "default"] {
        let name = format!("revplane-revision-tag-{tag}");
        let path = format!("/inject/tag/{tag}");
        assert_webhooks(&objects, &name, tag, service("canary", &path), &ca);
        let labels = &find(&objects, "MutatingWebhookConfiguration", &name)["metadata"]["labels"];
        assert_eq!(
            (&labels["istio.io/tag"], &labels["istio.io/rev"]),
            (&json!(tag), &json!("canary"))
        );
    }
    // The revision named `default`.
    let objects = render("default", NS, &[]);
    let ca = secret_data(find(&objects, "Secret", "revplane-default-tls"), "ca.crt");
    assert_webhooks(
        &objects,
        "revplane-sidecar-injector-default",
        "default",
        service("default", "/inject"),
        &ca,
    );

    // injectionURL: called exactly as given; tags extend its path (trailing '/' dropped).
    let mut ca = Vec::new();
    for (url, tag_url) in [
        (
            "https://127.0.0.1:15017/inject",
            "https://127.0.0.1:15017/inject/tag/prod",
        ),
        (
            "https://injector.example.com:8443/inject/",
            "https://injector.example.com:8443/inject/tag/prod",
        ),
    ] {
        let set = format!("injectionURL={url}");
        let objects = render(
            "canary",
            NS,
            &["--set", &set, "--set", "revisionTags={prod}"],
        );
        ca = secret_data(find(&objects, "Secret", "revplane-canary-tls"), "ca.crt");
        let own = "revplane-sidecar-injector-canary";
        assert_webhooks(&objects, own, "canary", json!({ "url": url }), &ca);
        let tag = "revplane-revision-tag-prod";
        assert_webhooks(&objects, tag, "prod", json!({ "url": tag_url }), &ca);
    }

    // Bring your own certificate: no Secret is rendered, the webhooks trust the given CA.
    let pem = pem_file(&ca);
    let objects = render(
        "canary",
        NS,
        &[
            "--set-file",
            &format!("caBundle={}", pem.display()),
            "--set",
            "revisionTags={prod}",
        ],
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "a Secret was rendered beside caBundle"
    );
    assert_webhooks(
        &objects,
        "revplane-sidecar-injector-canary",
        "canary",
        service("canary", "/inject"),
        &ca,
    );
    assert_webhooks(
        &objects,
        "revplane-revision-tag-prod",
        "prod",
        service("canary", "/inject/tag/prod"),
        &ca,
    );
}

#[test]
fn the_generated_certificate_serves_the_service_and_the_injection_url() {
    for (url, san) in [
        ("", "DNS:revplane-canary.revplane-system.svc"),
        ("https://127.0.0.1:15017/inject", "IP Address:127.0.0.1"),
        (
            "https://injector.example.com:8443/inject",
            "DNS:injector.example.com",
        ),
    ] {
        let objects = render("canary", NS, &["--set", &format!("injectionURL={url}")]);
        let secret = find(&objects, "Secret", "revplane-canary-tls");
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let (cert, ca) = (
            pem_file(&secret_data(secret, "tls.crt")),
            pem_file(&secret_data(secret, "ca.crt")),
        );
        let cert = cert.to_str().unwrap();
        let text = openssl(&["x509", "-in", cert, "-noout", "-ext", "subjectAltName"]);
        for want in [
            san,
            "DNS:revplane-canary,",
            "DNS:revplane-canary.revplane-system.svc.cluster.local",
        ] {
            assert!(text.contains(want), "{url}: {want} not in {text}");
        }
        let verified = openssl(&["verify", "-CAfile", ca.to_str().unwrap(), cert]);
        assert!(verified.contains(": OK"), "{verified}");
        assert!(!secret_data(secret, "tls.key").is_empty());
    }
}
