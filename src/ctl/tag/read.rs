//! The cluster reads `revplane tag` and `revplane revision list` share: installed revisions,
//! tags, and which namespaces select which name.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client};

use super::{api, configs, TagCommandError};
use crate::revision::selection::{REV_LABEL, TAG_LABEL};
use crate::revision::tags::{namespaces_by_name, read_tag, Tag, REVISION_CONFIG_PREFIX};

/// Installed revisions, sorted, each with its configuration `revplane-sidecar-injector-<rev>`.
pub async fn installed_revisions(
    client: &Client,
) -> Result<Vec<(String, MutatingWebhookConfiguration)>, TagCommandError> {
    let lp = ListParams::default().labels(&format!("app=revplane,!{TAG_LABEL}"));
    let list = configs(client)
        .list(&lp)
        .await
        .map_err(api("list MutatingWebhookConfigurations"))?;
    let mut revisions: Vec<_> = list
        .items
        .into_iter()
        .filter_map(|c| {
            let name = c.metadata.name.as_deref()?;
            let rev = name.strip_prefix(REVISION_CONFIG_PREFIX)?.to_string();
            Some((rev, c))
        })
        .collect();
    revisions.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(revisions)
}

/// Every tag in the cluster, sorted by name (configurations that do not read as a tag are
/// left out).
pub async fn all_tags(client: &Client) -> Result<Vec<Tag>, TagCommandError> {
    Ok(tag_configurations(client)
        .await?
        .into_iter()
        .map(|(tag, _)| tag)
        .collect())
}

/// Every tag with its configuration, sorted by tag name.
pub async fn tag_configurations(
    client: &Client,
) -> Result<Vec<(Tag, MutatingWebhookConfiguration)>, TagCommandError> {
    let lp = ListParams::default().labels(&format!("app=revplane,{TAG_LABEL},{REV_LABEL}"));
    let list = configs(client)
        .list(&lp)
        .await
        .map_err(api("list MutatingWebhookConfigurations"))?;
    let mut found: Vec<(Tag, MutatingWebhookConfiguration)> = list
        .items
        .into_iter()
        .filter_map(|c| Some((read_tag(&c).ok()?, c)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The CA bundle a configuration's webhooks trust (its first webhook's).
pub fn ca_bundle(config: &MutatingWebhookConfiguration) -> Option<&[u8]> {
    config
        .webhooks
        .as_ref()?
        .first()?
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.as_slice())
}

/// The Helm release that installed a configuration, if Helm did.
pub fn helm_release(config: &MutatingWebhookConfiguration) -> Option<String> {
    config
        .metadata
        .annotations
        .as_ref()?
        .get("meta.helm.sh/release-name")
        .cloned()
}

/// For each revision or tag name, the namespaces whose pods it injects by namespace label.
pub async fn namespaces(client: &Client) -> Result<BTreeMap<String, Vec<String>>, TagCommandError> {
    let list = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(api("list namespaces"))?;
    let empty = BTreeMap::new();
    Ok(namespaces_by_name(list.items.iter().filter_map(|ns| {
        let name = ns.metadata.name.as_deref()?;
        Some((name, ns.metadata.labels.as_ref().unwrap_or(&empty)))
    })))
}
