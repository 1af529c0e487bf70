//! The JSONPatch (RFC 6902) that turns a pod into an injected pod: the sidecar container
//! appended, label `istio.io/rev=<resolved revision>`, and annotation `revplane.io/tag` when
//! injected through a tag. Pure.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

use super::template::PROXY_CONTAINER;
use crate::revision::selection::REV_LABEL;

/// Annotation naming the tag a pod was injected through.
pub const TAG_ANNOTATION: &str = "revplane.io/tag";

/// Whether the pod already has the sidecar (injecting twice must not add a second one).
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER))
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

/// The patch injecting `container` for `revision`, through `tag` if any.
pub fn injection(pod: &Pod, container: &Container, revision: &str, tag: Option<&str>) -> Patch {
    let mut ops = Vec::new();
    let meta = &pod.metadata;
    match meta.labels {
        Some(_) => ops.push(add(
            &["metadata", "labels", REV_LABEL],
            Value::from(revision),
        )),
        None => ops.push(add(
            &["metadata", "labels"],
            serde_json::json!({ REV_LABEL: revision }),
        )),
    }
    if let Some(tag) = tag {
        match meta.annotations {
            Some(_) => ops.push(add(
                &["metadata", "annotations", TAG_ANNOTATION],
                Value::from(tag),
            )),
            None => ops.push(add(
                &["metadata", "annotations"],
                serde_json::json!({ TAG_ANNOTATION: tag }),
            )),
        }
    }
    let container = serde_json::to_value(container).expect("a Container serializes");
    ops.push(add(&["spec", "containers", "-"], container));
    Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::template::SidecarSpec;
    use crate::mesh::MeshConfig;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn sidecar() -> Container {
        let rev = "canary".parse().unwrap();
        let mesh = MeshConfig::default();
        SidecarSpec {
            revision: &rev,
            control_namespace: "revplane-system",
            mesh: &mesh,
            workload: "web",
        }
        .container()
    }

    fn apply(pod: &Pod, patch: &Patch) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, patch).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn a_plain_pod_gets_the_sidecar_and_the_revision_label() {
        let p = pod("metadata: {name: web, namespace: shop}\nspec:\n  containers: [{name: app, image: nginx}]\n");
        let patch = injection(&p, &sidecar(), "canary", None);
        let out = apply(&p, &patch);
        let names: Vec<&str> = out
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["app", PROXY_CONTAINER]);
        assert_eq!(out.metadata.labels.as_ref().unwrap()[REV_LABEL], "canary");
        assert!(out.metadata.annotations.is_none());
        assert!(has_sidecar(&out));
        assert!(!has_sidecar(&p));
    }

    #[test]
    fn existing_labels_and_annotations_are_kept_and_the_tag_is_named() {
        let p = pod("metadata:\n  name: web\n  labels: {app: web, istio.io/rev: prod}\n  annotations: {team: a}\nspec:\n  containers: [{name: app}]\n");
        let out = apply(&p, &injection(&p, &sidecar(), "canary", Some("prod")));
        let labels = out.metadata.labels.unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(
            labels[REV_LABEL], "canary",
            "the resolved revision, not the tag"
        );
        let annotations = out.metadata.annotations.unwrap();
        assert_eq!(annotations["team"], "a");
        assert_eq!(annotations[TAG_ANNOTATION], "prod");

        let bare = pod("metadata: {name: web}\nspec: {containers: [{name: app}]}\n");
        let out = apply(&bare, &injection(&bare, &sidecar(), "canary", Some("prod")));
        assert_eq!(out.metadata.annotations.unwrap()[TAG_ANNOTATION], "prod");
    }

    #[test]
    fn the_label_key_is_escaped_as_a_json_pointer() {
        let p = pod("metadata: {name: web, labels: {a: b}}\nspec: {containers: [{name: app}]}\n");
        let patch = serde_json::to_value(injection(&p, &sidecar(), "canary", None)).unwrap();
        assert_eq!(patch[0]["path"], "/metadata/labels/istio.io~1rev");
        assert_eq!(patch[1]["path"], "/spec/containers/-");
    }
}
