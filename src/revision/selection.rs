//! Which pods a revision (or a revision tag) injects: Istio's selection rules, as label
//! selectors (DESIGN.md §1).
//!
//! The same selectors are written into the revision's and each tag's
//! MutatingWebhookConfiguration, where the API server evaluates them, and evaluated again by
//! the injection webhook on every call, so the webhook never injects a pod that is not its
//! own. Pure: no Kubernetes client, no I/O.
//!
//! | namespace labels | pod labels | injected by |
//! |---|---|---|
//! | `istio.io/rev=<r>`, no `istio-injection` | any but `sidecar.istio.io/inject=false` | `<r>` |
//! | `istio-injection=enabled` | any but `sidecar.istio.io/inject=false` | `default` |
//! | neither | `istio.io/rev=<r>` (not opted out) | `<r>` |
//! | neither | `sidecar.istio.io/inject=true`, no `istio.io/rev` | `default` |
//! | `istio-injection=disabled`, or pod `sidecar.istio.io/inject=false` | | nobody |

use std::collections::BTreeMap;

use crate::mesh::{LabelSelector, Requirement};

/// Namespace or pod label naming the revision (or tag) that injects it.
pub const REV_LABEL: &str = "istio.io/rev";
/// Namespace label of the `default` revision: `enabled` or `disabled`.
pub const INJECTION_LABEL: &str = "istio-injection";
/// Pod label opting in (`true`, for `default`) or out (`false`, for everyone).
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Label of a tag's webhook configuration naming the tag.
pub const TAG_LABEL: &str = "istio.io/tag";
/// The revision or tag name that also answers `istio-injection=enabled` and
/// `sidecar.istio.io/inject=true`.
pub const DEFAULT_NAME: &str = "default";

/// One webhook of a revision's (or tag's) configuration: whom it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSelector {
    /// The webhook's name within its configuration.
    pub name: &'static str,
    /// Namespaces it applies to.
    pub namespace: LabelSelector,
    /// Pods it applies to.
    pub object: LabelSelector,
}

/// Why a webhook call for a pod leads to no injection, or which webhook selects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The pod is this name's to inject, selected by the named webhook.
    Selected(&'static str),
    /// The pod opted out (`sidecar.istio.io/inject=false`) or its namespace did
    /// (`istio-injection=disabled`).
    OptedOut,
    /// The pod belongs to another revision, or to none.
    NotSelected,
}

fn exprs(requirements: Vec<Requirement>) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: requirements,
    }
}

fn is(key: &str, value: &str) -> Requirement {
    Requirement::In(key.to_string(), vec![value.to_string()])
}

fn is_not(key: &str, value: &str) -> Requirement {
    Requirement::NotIn(key.to_string(), vec![value.to_string()])
}

fn absent(key: &str) -> Requirement {
    Requirement::DoesNotExist(key.to_string())
}

/// The webhooks that inject for `name` (a revision or a tag), as Istio's: two that select by
/// `istio.io/rev`, and for `default` two more that select by `istio-injection=enabled` and
/// `sidecar.istio.io/inject=true`.
pub fn webhook_selectors(name: &str) -> Vec<WebhookSelector> {
    let mut hooks = vec![
        WebhookSelector {
            name: "rev.namespace.sidecar-injector.revplane.io",
            namespace: exprs(vec![is(REV_LABEL, name), absent(INJECTION_LABEL)]),
            object: exprs(vec![is_not(INJECT_LABEL, "false")]),
        },
        WebhookSelector {
            name: "rev.object.sidecar-injector.revplane.io",
            namespace: exprs(vec![absent(REV_LABEL), absent(INJECTION_LABEL)]),
            object: exprs(vec![is_not(INJECT_LABEL, "false"), is(REV_LABEL, name)]),
        },
    ];
    if name == DEFAULT_NAME {
        hooks.push(WebhookSelector {
            name: "namespace.sidecar-injector.revplane.io",
            namespace: exprs(vec![is(INJECTION_LABEL, "enabled")]),
            object: exprs(vec![is_not(INJECT_LABEL, "false")]),
        });
        hooks.push(WebhookSelector {
            name: "object.sidecar-injector.revplane.io",
            namespace: exprs(vec![absent(INJECTION_LABEL), absent(REV_LABEL)]),
            object: exprs(vec![is(INJECT_LABEL, "true"), absent(REV_LABEL)]),
        });
    }
    hooks
}

/// Whether `name`'s webhooks select a pod with `pod` labels in a namespace with `namespace`
/// labels, as the API server decides it.
pub fn select(
    name: &str,
    namespace: &BTreeMap<String, String>,
    pod: &BTreeMap<String, String>,
) -> Selection {
    if let Some(hook) = webhook_selectors(name)
        .into_iter()
        .find(|h| h.namespace.matches(namespace) && h.object.matches(pod))
    {
        return Selection::Selected(hook.name);
    }
    let opted_out = pod.get(INJECT_LABEL).is_some_and(|v| v == "false")
        || namespace
            .get(INJECTION_LABEL)
            .is_some_and(|v| v == "disabled");
    if opted_out {
        Selection::OptedOut
    } else {
        Selection::NotSelected
    }
}

/// The revision or tag a pod is meant for under these labels, whoever serves it (`None`:
/// nobody injects it). Used to explain a refusal.
pub fn intended(
    namespace: &BTreeMap<String, String>,
    pod: &BTreeMap<String, String>,
) -> Option<String> {
    if pod.get(INJECT_LABEL).is_some_and(|v| v == "false") {
        return None;
    }
    match (namespace.get(INJECTION_LABEL), namespace.get(REV_LABEL)) {
        (Some(v), _) if v == "enabled" => Some(DEFAULT_NAME.to_string()),
        (Some(_), _) => None,
        (None, Some(rev)) => Some(rev.clone()),
        (None, None) => match pod.get(REV_LABEL) {
            Some(rev) => Some(rev.clone()),
            None if pod.get(INJECT_LABEL).is_some_and(|v| v == "true") => {
                Some(DEFAULT_NAME.to_string())
            }
            None => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (namespace labels, pod labels, who injects). Every name in `NAMES` is asked; exactly
    /// the expected one selects the pod (or none).
    #[test]
    fn the_selection_table() {
        const NAMES: [&str; 4] = ["stable", "canary", "prod", "default"];
        let rev = |r| (REV_LABEL, r);
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Labels, Labels, Option<&str>)] = &[
            // Namespace label istio.io/rev selects, whatever the pod says (but opt-out).
            (&[rev("canary")], &[], Some("canary")),
            (&[rev("canary")], &[rev("stable")], Some("canary")),
            (&[rev("canary")], &[(INJECT_LABEL, "true")], Some("canary")),
            (&[rev("canary")], &[(INJECT_LABEL, "false")], None),
            // A tag is just a name.
            (&[rev("prod")], &[("app", "web")], Some("prod")),
            // istio-injection wins over istio.io/rev on the namespace.
            (
                &[rev("canary"), (INJECTION_LABEL, "enabled")],
                &[],
                Some("default"),
            ),
            (&[rev("canary"), (INJECTION_LABEL, "disabled")], &[], None),
            (
                &[(INJECTION_LABEL, "enabled")],
                &[rev("canary")],
                Some("default"),
            ),
            (
                &[(INJECTION_LABEL, "enabled")],
                &[(INJECT_LABEL, "false")],
                None,
            ),
            (&[(INJECTION_LABEL, "disabled")], &[rev("canary")], None),
            (
                &[(INJECTION_LABEL, "disabled")],
                &[(INJECT_LABEL, "true")],
                None,
            ),
            // Neither namespace label: the pod's labels decide.
            (&[], &[rev("stable")], Some("stable")),
            (&[], &[rev("stable"), (INJECT_LABEL, "false")], None),
            (&[], &[(INJECT_LABEL, "true")], Some("default")),
            (
                &[],
                &[(INJECT_LABEL, "true"), rev("canary")],
                Some("canary"),
            ),
            (&[], &[], None),
            (&[("team", "a")], &[("app", "web")], None),
            (&[], &[rev("default")], Some("default")),
            (&[rev("default")], &[], Some("default")),
        ];
        for (ns, pod, expected) in cases {
            let (ns, pod) = (labels(ns), labels(pod));
            let selected: Vec<&str> = NAMES
                .into_iter()
                .filter(|n| matches!(select(n, &ns, &pod), Selection::Selected(_)))
                .collect();
            let want: Vec<&str> = expected.iter().copied().collect();
            assert_eq!(selected, want, "namespace {ns:?}, pod {pod:?}");
            assert_eq!(
                intended(&ns, &pod).as_deref(),
                *expected,
                "intended: namespace {ns:?}, pod {pod:?}"
            );
        }
    }

    #[test]
    fn refusals_say_whether_the_pod_opted_out() {
        let ns = labels(&[(REV_LABEL, "canary")]);
        assert_eq!(
            select("canary", &ns, &labels(&[(INJECT_LABEL, "false")])),
            Selection::OptedOut
        );
        assert_eq!(select("stable", &ns, &labels(&[])), Selection::NotSelected);
        assert_eq!(
            select(
                "default",
                &labels(&[(INJECTION_LABEL, "disabled")]),
                &labels(&[])
            ),
            Selection::OptedOut
        );
        assert_eq!(
            select("canary", &ns, &labels(&[])),
            Selection::Selected("rev.namespace.sidecar-injector.revplane.io")
        );
    }

    #[test]
    fn only_default_answers_the_legacy_labels() {
        assert_eq!(webhook_selectors("canary").len(), 2);
        let names: Vec<&str> = webhook_selectors("default")
            .iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(
            names,
            [
                "rev.namespace.sidecar-injector.revplane.io",
                "rev.object.sidecar-injector.revplane.io",
                "namespace.sidecar-injector.revplane.io",
                "object.sidecar-injector.revplane.io"
            ]
        );
    }
}
