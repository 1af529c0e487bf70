//! The MutatingWebhookConfigurations of a revision and of a revision tag (DESIGN.md §1), and
//! reading a tag's configuration back.
//!
//! A revision `<rev>` is installed when `revplane-sidecar-injector-<rev>` exists; a tag
//! `<tag>` pointing at it is `revplane-revision-tag-<tag>`, labelled `istio.io/tag=<tag>`,
//! `istio.io/rev=<rev>`, whose webhooks are [`webhook_selectors`]`(<tag>)` calling the
//! revision's webhook at its path extended by `/tag/<tag>`. The chart renders the same
//! objects; `revplane tag` writes them. Pure: builds and reads objects, talks to nobody.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as KubeSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;

use super::selection::{intended, webhook_selectors, REV_LABEL, TAG_LABEL};
use super::Revision;
use crate::mesh::{LabelSelector, Requirement};

/// Name prefix of a revision's own configuration: `revplane-sidecar-injector-<rev>`.
pub const REVISION_CONFIG_PREFIX: &str = "revplane-sidecar-injector-";
/// Name prefix of a tag's configuration: `revplane-revision-tag-<tag>`.
pub const TAG_CONFIG_PREFIX: &str = "revplane-revision-tag-";
/// Label every object of revplane carries: `app=revplane`.
pub const APP_LABEL: (&str, &str) = ("app", "revplane");
/// Path of a revision's own injection webhook.
pub const INJECT_PATH: &str = "/inject";

/// A revision tag: a mutable alias `name -> revision`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    /// The tag's name (what namespaces are labelled with).
    pub name: String,
    /// The revision it points to.
    pub revision: String,
}

/// Why a tag name is refused, or a configuration cannot be built from or read as a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The tag name is not a DNS-1123 label.
    #[error(
        "invalid tag name {name:?}: {reason}; a tag, like a revision, is a DNS-1123 label: \
         1-63 lowercase letters, digits or '-', starting and ending with a letter or digit \
         (e.g. prod)"
    )]
    InvalidName {
        /// The rejected input.
        name: String,
        /// What rule it broke.
        reason: &'static str,
    },
    /// The revision's configuration has no webhook whose client config could be copied.
    #[error(
        "MutatingWebhookConfiguration {config} has no webhook with a client config (url or \
         service) to copy; reinstall the revision (helm upgrade) to restore it"
    )]
    NoClientConfig {
        /// Name of the revision's configuration.
        config: String,
    },
    /// A configuration read as a tag lacks what makes it one.
    #[error("MutatingWebhookConfiguration {config} is not a revplane tag: {reason}")]
    NotATag {
        /// Name of the configuration.
        config: String,
        /// What is missing or inconsistent.
        reason: String,
    },
}

/// Checks a tag name: a DNS-1123 label, as a revision name (usable as a clap value parser).
pub fn parse_tag(name: &str) -> Result<String, TagError> {
    name.parse::<Revision>()
        .map(|r| r.as_str().to_string())
        .map_err(|e| TagError::InvalidName {
            name: name.to_string(),
            reason: e.reason,
        })
}

/// `revplane-sidecar-injector-<rev>`.
pub fn revision_config_name(revision: &str) -> String {
    format!("{REVISION_CONFIG_PREFIX}{revision}")
}

/// `revplane-revision-tag-<tag>`.
pub fn tag_config_name(tag: &str) -> String {
    format!("{TAG_CONFIG_PREFIX}{tag}")
}

/// Client config calling Service `revplane-<rev>` in `namespace` on 443 at `/inject`.
pub fn service_client_config(
    revision: &str,
    namespace: &str,
    ca_bundle: &[u8],
) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: format!("revplane-{revision}"),
            namespace: namespace.to_string(),
            path: Some(INJECT_PATH.to_string()),
            port: Some(443),
        }),
        url: None,
        ca_bundle: Some(ByteString(ca_bundle.to_vec())),
    }
}

/// Client config calling `url` exactly as given (an external control plane, or the tests').
pub fn url_client_config(url: &str, ca_bundle: &[u8]) -> WebhookClientConfig {
    WebhookClientConfig {
        service: None,
        url: Some(url.to_string()),
        ca_bundle: Some(ByteString(ca_bundle.to_vec())),
    }
}

/// The revision's own configuration `revplane-sidecar-injector-<rev>`.
pub fn revision_configuration(
    revision: &str,
    client: &WebhookClientConfig,
) -> MutatingWebhookConfiguration {
    configuration(
        revision_config_name(revision),
        labels(&[(REV_LABEL, revision)]),
        revision,
        client,
    )
}

/// The configuration of tag `tag` pointing at `revision`, whose own configuration is
/// `revision_config` (its first webhook's client config is copied, path extended by
/// `/tag/<tag>`).
pub fn tag_configuration(
    tag: &str,
    revision: &str,
    revision_config: &MutatingWebhookConfiguration,
) -> Result<MutatingWebhookConfiguration, TagError> {
    let client = revision_config
        .webhooks
        .iter()
        .flatten()
        .map(|w| &w.client_config)
        .find(|c| c.url.is_some() || c.service.is_some())
        .ok_or_else(|| TagError::NoClientConfig {
            config: revision_config.metadata.name.clone().unwrap_or_default(),
        })?;
    Ok(configuration(
        tag_config_name(tag),
        labels(&[(TAG_LABEL, tag), (REV_LABEL, revision)]),
        tag,
        &tag_client_config(tag, client),
    ))
}

/// The tag a configuration stands for: its `istio.io/tag` and `istio.io/rev` labels, which
/// must agree with its name `revplane-revision-tag-<tag>`.
pub fn read_tag(config: &MutatingWebhookConfiguration) -> Result<Tag, TagError> {
    let name = config.metadata.name.clone().unwrap_or_default();
    let not_a_tag = |reason: String| TagError::NotATag {
        config: name.clone(),
        reason,
    };
    let labels = config.metadata.labels.clone().unwrap_or_default();
    let tag = labels
        .get(TAG_LABEL)
        .ok_or_else(|| not_a_tag(format!("it has no {TAG_LABEL} label")))?;
    let revision = labels
        .get(REV_LABEL)
        .ok_or_else(|| not_a_tag(format!("it has no {REV_LABEL} label")))?;
    if name != tag_config_name(tag) {
        return Err(not_a_tag(format!(
            "its {TAG_LABEL} label says {tag:?} but a tag {tag:?} is named {}",
            tag_config_name(tag)
        )));
    }
    Ok(Tag {
        name: tag.clone(),
        revision: revision.clone(),
    })
}

/// For each revision or tag name, the namespaces (sorted) whose pods it injects by namespace
/// label: `istio.io/rev=<name>` without `istio-injection`, and for `default` also
/// `istio-injection=enabled`, as [`selection::intended`](super::selection::intended) decides.
pub fn namespaces_by_name<'a>(
    namespaces: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (namespace, labels) in namespaces {
        if let Some(name) = intended(labels, &BTreeMap::new()) {
            by_name.entry(name).or_default().push(namespace.to_string());
        }
    }
    by_name.values_mut().for_each(|v| v.sort());
    by_name
}

/// `client` with its path extended by `/tag/<tag>` (service path, or the URL's path).
pub fn tag_client_config(tag: &str, client: &WebhookClientConfig) -> WebhookClientConfig {
    let suffix = format!("/tag/{tag}");
    let mut client = client.clone();
    if let Some(service) = client.service.as_mut() {
        let path = service.path.as_deref().unwrap_or("");
        service.path = Some(format!("{}{suffix}", path.trim_end_matches('/')));
    }
    if let Some(url) = client.url.as_mut() {
        // The path starts at the first '/' after "scheme://host:port" and ends before any
        // query or fragment (which the API server refuses in webhook URLs anyway).
        let authority = url.find("://").map_or(0, |i| i + 3);
        let tail = url[authority..]
            .find(['?', '#'])
            .map_or(url.len(), |i| authority + i);
        let (head, rest) = url.split_at(tail);
        *url = format!("{}{suffix}{rest}", head.trim_end_matches('/'));
    }
    client
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    std::iter::once(APP_LABEL)
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn configuration(
    name: String,
    labels: BTreeMap<String, String>,
    selecting: &str,
    client: &WebhookClientConfig,
) -> MutatingWebhookConfiguration {
    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
    let webhooks = webhook_selectors(selecting)
        .into_iter()
        .map(|hook| MutatingWebhook {
            name: hook.name.to_string(),
            client_config: client.clone(),
            rules: Some(vec![RuleWithOperations {
                operations: strings(&["CREATE"]),
                api_groups: strings(&[""]),
                api_versions: strings(&["v1"]),
                resources: strings(&["pods"]),
                scope: Some("*".to_string()),
            }]),
            failure_policy: Some("Fail".to_string()),
            match_policy: Some("Equivalent".to_string()),
            side_effects: "None".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            reinvocation_policy: Some("Never".to_string()),
            timeout_seconds: Some(10),
            namespace_selector: Some(kube_selector(&hook.namespace)),
            object_selector: Some(kube_selector(&hook.object)),
            match_conditions: None,
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        webhooks: Some(webhooks),
    }
}

/// A selector written with `matchExpressions` only, in order (`matchLabels` pairs, which
/// the webhook selectors do not use, become leading `In` expressions).
fn kube_selector(selector: &LabelSelector) -> KubeSelector {
    let requirement =
        |key: &str, operator: &str, values: Option<&[String]>| LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: values.map(<[String]>::to_vec),
        };
    let from_labels = selector
        .match_labels
        .iter()
        .map(|(k, v)| requirement(k, "In", Some(std::slice::from_ref(v))));
    let from_expressions = selector.match_expressions.iter().map(|r| match r {
        Requirement::In(k, v) => requirement(k, "In", Some(v)),
        Requirement::NotIn(k, v) => requirement(k, "NotIn", Some(v)),
        Requirement::Exists(k) => requirement(k, "Exists", None),
        Requirement::DoesNotExist(k) => requirement(k, "DoesNotExist", None),
    });
    KubeSelector {
        match_expressions: Some(from_labels.chain(from_expressions).collect()),
        match_labels: None,
    }
}

#[cfg(test)]
mod tests;
