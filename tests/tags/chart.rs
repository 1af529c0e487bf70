//! The chart's tag configurations are the objects `revplane tag set` writes: built by
//! `revision::tags` from the chart's own revision configuration, they agree webhook for
//! webhook (rendered with the real Helm; no cluster needed).

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use revplane::revision::tags::{revision_configuration, tag_configuration};

use super::common::helm::{find, render};

fn typed(objects: &[serde_json::Value], name: &str) -> MutatingWebhookConfiguration {
    serde_json::from_value(find(objects, "MutatingWebhookConfiguration", name).clone()).unwrap()
}

#[test]
fn the_charts_tags_are_what_tag_set_writes() {
    for extra in [
        vec![],
        vec!["--set", "injectionURL=https://127.0.0.1:15017/inject"],
    ] {
        let mut args = vec!["--set", "revisionTags={prod,default}"];
        args.extend(extra.iter().copied());
        let objects = render("t5-canary", "revplane-system", &args);
        let revision = typed(&objects, "revplane-sidecar-injector-t5-canary");
        let client = &revision.webhooks.as_ref().unwrap()[0].client_config;
        assert_eq!(
            revision.webhooks,
            revision_configuration("t5-canary", client).webhooks,
            "{extra:?}"
        );
        // `revision list` finds a revision by these labels.
        let labels = revision.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("revplane"));
        assert_eq!(
            labels.get("istio.io/rev").map(String::as_str),
            Some("t5-canary")
        );
        for tag in ["prod", "default"] {
            let rendered = typed(&objects, &format!("revplane-revision-tag-{tag}"));
            let ours = tag_configuration(tag, "t5-canary", &revision).unwrap();
            assert_eq!(rendered.webhooks, ours.webhooks, "{tag} {extra:?}");
            let labels = rendered.metadata.labels.unwrap();
            for (k, v) in ours.metadata.labels.unwrap() {
                assert_eq!(labels.get(&k), Some(&v), "{tag} {extra:?}: label {k}");
            }
        }
    }
}
