//! One admission decision: is this pod ours to inject, and with what. Pure: the namespace's
//! labels and the mesh config come in as values.
//!
//! The API server already selected the pod with the webhook's selectors; this checks again
//! with the same selectors ([`crate::revision::selection`]) and leaves a pod that is not its
//! own untouched, saying why in a warning.

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;

use super::patch;
use super::template::SidecarSpec;
use crate::mesh::MeshConfig;
use crate::revision::selection::{self, Selection, INJECT_LABEL};
use crate::revision::Revision;

/// Which of this revision's webhooks was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The revision's own (`/inject`).
    Revision,
    /// A tag's (`/inject/tag/<tag>`): the tag points at this revision.
    Tag(Revision),
}

impl Route {
    /// The name the webhook selects by: the revision's or the tag's.
    pub fn name<'a>(&'a self, revision: &'a Revision) -> &'a str {
        match self {
            Route::Revision => revision.as_str(),
            Route::Tag(tag) => tag.as_str(),
        }
    }
}

/// What the webhook does with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Inject: apply this patch.
    Inject(Patch),
    /// The pod already has the sidecar.
    AlreadyInjected,
    /// The pod or its namespace opted out.
    OptedOut,
    /// A pod no revision injects, whatever its labels: it runs in the host's network, or in
    /// a system namespace.
    NotEligible(&'static str),
    /// Not this revision's pod; `intended` is who should inject it, if anyone.
    NotSelected {
        /// The revision or tag the labels select, if any.
        intended: Option<String>,
    },
}

impl Outcome {
    /// The `result` label of `revplane_sidecar_injections_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Inject(_) => "injected",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::OptedOut => "opted_out",
            Outcome::NotEligible(_) => "not_eligible",
            Outcome::NotSelected { .. } => "not_selected",
        }
    }

    /// The warning returned with an allowed, unchanged pod.
    pub fn warning(&self, revision: &Revision, route: &Route, pod: &str) -> Option<String> {
        let via = match route {
            Route::Revision => String::new(),
            Route::Tag(tag) => format!(" (through tag {tag})"),
        };
        match self {
            Outcome::Inject(_) => None,
            Outcome::AlreadyInjected => Some(format!(
                "revplane {revision}: pod {pod} already has a {} container; not injected again",
                super::template::PROXY_CONTAINER
            )),
            Outcome::OptedOut => Some(format!(
                "revplane {revision}{via}: pod {pod} opted out of injection (sidecar.istio.io/inject=false or istio-injection=disabled); not injected"
            )),
            Outcome::NotEligible(why) => Some(format!(
                "revplane {revision}{via}: pod {pod} {why}; not injected"
            )),
            Outcome::NotSelected { intended } => Some(match intended {
                Some(other) => format!(
                    "revplane {revision}{via}: pod {pod} is selected for {other:?}, not {:?}; not injected (check the webhook configurations' selectors)",
                    route.name(revision)
                ),
                None => format!(
                    "revplane {revision}{via}: pod {pod} is selected by no revision (label its namespace istio.io/rev=<revision>); not injected"
                ),
            }),
        }
    }
}

/// Namespaces whose pods are never injected (Istio's).
pub const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// Why a pod is never injected, whatever selects it (Istio's rules).
fn ineligible(namespace: &str, pod: &Pod) -> Option<&'static str> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        // Its sidecar would share the node's network: admin ports and node ids collide.
        return Some("runs in the host's network (hostNetwork)");
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Some("is in a system namespace");
    }
    None
}

/// Whether the pod opted out with the legacy annotation `sidecar.istio.io/inject: "false"`
/// (a label, when present, wins, as in Istio).
fn opted_out_by_annotation(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let label = meta.labels.as_ref().and_then(|l| l.get(INJECT_LABEL));
    let annotation = meta.annotations.as_ref().and_then(|a| a.get(INJECT_LABEL));
    label.is_none() && annotation.is_some_and(|v| v == "false")
}

/// Decides for a pod being created in `namespace`, whose labels are `namespace_labels`.
pub fn decide(
    revision: &Revision,
    route: &Route,
    namespace: &str,
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    mesh: &MeshConfig,
    control_namespace: &str,
) -> Outcome {
    if let Some(why) = ineligible(namespace, pod) {
        return Outcome::NotEligible(why);
    }
    let empty = BTreeMap::new();
    let pod_labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let selected = selection::select(route.name(revision), namespace_labels, pod_labels);
    if matches!(selected, Selection::Selected(_)) && opted_out_by_annotation(pod) {
        return Outcome::OptedOut;
    }
    match selected {
        Selection::OptedOut => return Outcome::OptedOut,
        Selection::NotSelected => {
            return Outcome::NotSelected {
                intended: selection::intended(namespace_labels, pod_labels),
            }
        }
        Selection::Selected(_) => {}
    }
    if patch::has_sidecar(pod) {
        return Outcome::AlreadyInjected;
    }
    let workload = pod_labels
        .get("app")
        .or_else(|| pod_labels.get("app.kubernetes.io/name"))
        .map(String::as_str)
        .or(pod.metadata.name.as_deref())
        .or_else(|| {
            pod.metadata
                .generate_name
                .as_deref()
                .map(|g| g.trim_end_matches('-'))
        })
        .unwrap_or("unknown");
    let spec = SidecarSpec {
        revision,
        control_namespace,
        mesh,
        workload,
    };
    let tag = match route {
        Route::Revision => None,
        Route::Tag(tag) => Some(tag.as_str()),
    };
    Outcome::Inject(patch::injection(
        pod,
        &spec.container(),
        revision.as_str(),
        tag,
    ))
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

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn decide_for(route: &Route, ns: &[(&str, &str)], p: &Pod) -> Outcome {
        decide(
            &"canary".parse().unwrap(),
            route,
            "shop",
            p,
            &labels(ns),
            &MeshConfig::default(),
            "revplane-system",
        )
    }

    #[test]
    fn a_pod_in_a_namespace_of_the_revision_is_injected() {
        let p = pod("metadata: {name: web}\nspec: {containers: [{name: app}]}\n");
        let out = decide_for(&Route::Revision, &[("istio.io/rev", "canary")], &p);
        assert_eq!(out.result(), "injected");
    }

    #[test]
    fn a_pod_opting_out_or_of_another_revision_is_left_alone_with_a_reason() {
        let canary = "canary".parse().unwrap();
        let out_opt = pod("metadata: {name: web, labels: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: app}]}\n");
        let o = decide_for(&Route::Revision, &[("istio.io/rev", "canary")], &out_opt);
        assert_eq!(o, Outcome::OptedOut);
        assert!(o
            .warning(&canary, &Route::Revision, "shop/web")
            .unwrap()
            .contains("opted out"));

        let p = pod("metadata: {name: web}\nspec: {containers: [{name: app}]}\n");
        let o = decide_for(&Route::Revision, &[("istio.io/rev", "stable")], &p);
        assert_eq!(
            o,
            Outcome::NotSelected {
                intended: Some("stable".into())
            }
        );
        let w = o.warning(&canary, &Route::Revision, "shop/web").unwrap();
        assert!(w.contains("\"stable\"") && w.contains("canary"), "{w}");
    }

    #[test]
    fn a_tag_route_selects_by_the_tag_and_names_it() {
        let prod = Route::Tag("prod".parse().unwrap());
        let p = pod("metadata: {name: web}\nspec: {containers: [{name: app}]}\n");
        let Outcome::Inject(patch) = decide_for(&prod, &[("istio.io/rev", "prod")], &p) else {
            panic!("injected through the tag")
        };
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(ops[1]["value"]["revplane.io/tag"], "prod", "{ops}");
        assert_eq!(
            decide_for(&prod, &[("istio.io/rev", "canary")], &p).result(),
            "not_selected",
            "the tag route answers only for the tag's name"
        );
    }

    #[test]
    fn host_network_pods_system_namespaces_and_the_legacy_annotation_are_left_alone() {
        let ns = [("istio.io/rev", "canary")];
        let host =
            pod("metadata: {name: agent}\nspec: {hostNetwork: true, containers: [{name: app}]}\n");
        assert_eq!(
            decide_for(&Route::Revision, &ns, &host).result(),
            "not_eligible"
        );
        let p = pod("metadata: {name: dns}\nspec: {containers: [{name: app}]}\n");
        let system = decide(
            &"canary".parse().unwrap(),
            &Route::Revision,
            "kube-system",
            &p,
            &labels(&ns),
            &MeshConfig::default(),
            "revplane-system",
        );
        assert_eq!(system, Outcome::NotEligible("is in a system namespace"));
        let annotated = pod("metadata: {name: web, annotations: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: app}]}\n");
        assert_eq!(
            decide_for(&Route::Revision, &ns, &annotated),
            Outcome::OptedOut
        );
        let label_wins = pod("metadata: {name: web, labels: {sidecar.istio.io/inject: 'true'}, annotations: {sidecar.istio.io/inject: 'false'}}\nspec: {containers: [{name: app}]}\n");
        assert_eq!(
            decide_for(&Route::Revision, &ns, &label_wins).result(),
            "injected"
        );
    }

    #[test]
    fn injecting_twice_adds_nothing() {
        let p = pod(
            "metadata: {name: web}\nspec: {containers: [{name: app}, {name: revplane-proxy}]}\n",
        );
        assert_eq!(
            decide_for(&Route::Revision, &[("istio.io/rev", "canary")], &p),
            Outcome::AlreadyInjected
        );
    }
}
