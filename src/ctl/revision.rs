//! `revplane revision list`: each installed revision, its ready replicas, its tags, the
//! namespaces that select it (directly or through a tag) and how many pods carry
//! `istio.io/rev=<rev>` — what an operator reads before `helm uninstall` of a revision.
//!
//! Reads the API server only; the rows are assembled by the pure [`rows`].

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Serialize;

use super::tag::{self, api, columns, or_dash, TagCommandError};
use crate::revision::selection::{INJECT_LABEL, REV_LABEL};
use crate::revision::tags::Tag;

/// `revplane revision ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RevisionCommand {
    /// List installed revisions: REVISION, READY, TAGS, NAMESPACES, PODS.
    List(ListArgs),
}

/// Flags of `revplane revision list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long, env = "REVPLANE_REVISION_LIST_JSON")]
    pub json: bool,
}

/// Ready and desired replicas of a revision's Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replicas {
    /// Replicas ready.
    pub ready: i32,
    /// Replicas wanted.
    pub desired: i32,
}

/// A namespace that selects a revision, directly or through a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceUse {
    /// The namespace.
    pub name: String,
    /// The tag it is labelled with, if it selects the revision through one.
    pub via: Option<String>,
}

/// One row of `revplane revision list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionRow {
    /// The revision.
    pub revision: String,
    /// Its Deployment's replicas (`None`: no Deployment found).
    pub replicas: Option<Replicas>,
    /// Tags pointing to it.
    pub tags: Vec<String>,
    /// Namespaces whose pods it injects.
    pub namespaces: Vec<NamespaceUse>,
    /// Pods labelled `istio.io/rev=<revision>`.
    pub pods: usize,
}

/// What is known of one installed revision before assembling its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The revision.
    pub revision: String,
    /// Its Deployment's replicas, if found.
    pub replicas: Option<Replicas>,
    /// Pods labelled with it.
    pub pods: usize,
}

/// The rows: for each revision its tags, and the namespaces selecting it or one of its tags
/// (`by_name`: namespaces per revision-or-tag name, as `revision::tags::namespaces_by_name`).
pub fn rows(
    installed: Vec<Installed>,
    tags: &[Tag],
    by_name: &BTreeMap<String, Vec<String>>,
) -> Vec<RevisionRow> {
    installed
        .into_iter()
        .map(|i| {
            let own: Vec<String> = tags
                .iter()
                .filter(|t| t.revision == i.revision)
                .map(|t| t.name.clone())
                .collect();
            let direct = by_name
                .get(&i.revision)
                .into_iter()
                .flatten()
                .map(|ns| NamespaceUse {
                    name: ns.clone(),
                    via: None,
                });
            let through_tags = own.iter().flat_map(|t| {
                by_name.get(t).into_iter().flatten().map(|ns| NamespaceUse {
                    name: ns.clone(),
                    via: Some(t.clone()),
                })
            });
            let mut namespaces: Vec<NamespaceUse> = direct.chain(through_tags).collect();
            namespaces.sort_by(|a, b| a.name.cmp(&b.name));
            RevisionRow {
                revision: i.revision,
                replicas: i.replicas,
                tags: own,
                namespaces,
                pods: i.pods,
            }
        })
        .collect()
}

/// The table `revplane revision list` prints (a namespace that selects the revision through
/// a tag is shown as `namespace(tag)`).
pub fn table(rows: &[RevisionRow]) -> String {
    let mut table = vec![["REVISION", "READY", "TAGS", "NAMESPACES", "PODS"]
        .map(String::from)
        .to_vec()];
    table.extend(rows.iter().map(|r| {
        let namespaces: Vec<String> = r
            .namespaces
            .iter()
            .map(|n| match &n.via {
                Some(tag) => format!("{}({tag})", n.name),
                None => n.name.clone(),
            })
            .collect();
        vec![
            r.revision.clone(),
            r.replicas
                .map_or("-".into(), |r| format!("{}/{}", r.ready, r.desired)),
            or_dash(&r.tags),
            or_dash(&namespaces),
            r.pods.to_string(),
        ]
    }));
    columns(&table)
}

/// Runs one `revplane revision` command against the cluster, writing to `out`.
pub async fn run(
    command: RevisionCommand,
    client: Client,
    out: &mut dyn Write,
) -> Result<(), TagCommandError> {
    let RevisionCommand::List(args) = command;
    let mut installed = Vec::new();
    for (revision, config) in tag::installed_revisions(&client).await? {
        installed.push(Installed {
            replicas: replicas(&client, &revision, &config).await?,
            pods: pods(&client, &revision).await?,
            revision,
        });
    }
    let tags = tag::all_tags(&client).await?;
    let rows = rows(installed, &tags, &tag::namespaces(&client).await?);
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if rows.is_empty() {
        writeln!(
            out,
            "No revisions installed (no MutatingWebhookConfiguration revplane-sidecar-injector-<rev>). \
             Install one: helm install revplane-<rev> deploy/charts/revplane -n revplane-system --set revision=<rev>"
        )?;
    } else {
        out.write_all(table(&rows).as_bytes())?;
    }
    Ok(())
}

/// The Deployment `revplane-<rev>` in the namespace of the webhook's Service or, with a URL
/// client config, the Deployments labelled `app=revplane,istio.io/rev=<rev>` anywhere.
async fn replicas(
    client: &Client,
    revision: &str,
    config: &MutatingWebhookConfiguration,
) -> Result<Option<Replicas>, TagCommandError> {
    let service_ns = config
        .webhooks
        .iter()
        .flatten()
        .find_map(|w| w.client_config.service.as_ref())
        .map(|s| s.namespace.clone());
    let deployments = match service_ns {
        Some(ns) => {
            let name = format!("revplane-{revision}");
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(api(format!("read Deployment {ns}/{name}")))?
                .into_iter()
                .collect::<Vec<_>>()
        }
        None => {
            let lp = ListParams::default().labels(&format!("app=revplane,{REV_LABEL}={revision}"));
            Api::<Deployment>::all(client.clone())
                .list(&lp)
                .await
                .map_err(api(format!("list Deployments of revision {revision}")))?
                .items
        }
    };
    Ok((!deployments.is_empty()).then(|| {
        deployments.iter().fold(
            Replicas {
                ready: 0,
                desired: 0,
            },
            |sum, d| Replicas {
                ready: sum.ready
                    + d.status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0),
                desired: sum.desired + d.spec.replicas.unwrap_or(1),
            },
        )
    }))
}

/// Pods that use `revision`: labelled `istio.io/rev=<revision>` and not opted out (the
/// control plane's own pods carry the label too, and opt out of injection).
async fn pods(client: &Client, revision: &str) -> Result<usize, TagCommandError> {
    let lp = ListParams::default().labels(&format!("{REV_LABEL}={revision},{INJECT_LABEL}!=false"));
    let list = Api::<Pod>::all(client.clone())
        .list_metadata(&lp)
        .await
        .map_err(api(format!("list pods of revision {revision}")))?;
    Ok(list.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_revision_row_gathers_its_tags_and_the_namespaces_through_them() {
        let installed = vec![
            Installed {
                revision: "canary".into(),
                replicas: Some(Replicas {
                    ready: 1,
                    desired: 2,
                }),
                pods: 3,
            },
            Installed {
                revision: "stable".into(),
                replicas: None,
                pods: 0,
            },
        ];
        let tags = [
            Tag {
                name: "default".into(),
                revision: "canary".into(),
            },
            Tag {
                name: "prod".into(),
                revision: "canary".into(),
            },
            Tag {
                name: "old".into(),
                revision: "gone".into(),
            },
        ];
        let by_name = names(&[
            ("canary", &["web"]),
            ("prod", &["shop", "cart"]),
            ("default", &["legacy"]),
            ("old", &["attic"]),
        ]);
        let rows = rows(installed, &tags, &by_name);
        assert_eq!(
            table(&rows),
            "REVISION   READY   TAGS           NAMESPACES                                  PODS\n\
             canary     1/2     default,prod   cart(prod),legacy(default),shop(prod),web   3\n\
             stable     -       -              -                                           0\n"
        );
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(
            json["namespaces"][0],
            serde_json::json!({"name": "cart", "via": "prod"})
        );
        assert_eq!(
            json["replicas"],
            serde_json::json!({"ready": 1, "desired": 2})
        );
    }
}
