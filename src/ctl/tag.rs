//! `revplane tag set|generate|list|remove`: revision tags in the API server, as Istio's
//! `istioctl tag`.
//!
//! A tag is the MutatingWebhookConfiguration `revplane-revision-tag-<tag>` that
//! [`revision::tags`](crate::revision::tags) builds from the revision's own configuration;
//! this module only reads the cluster, checks, and applies (server-side apply, field manager
//! `revplane`) or deletes. It also holds the cluster reads `revplane revision list` shares.

mod read;
mod table;

use std::io::Write;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;

pub use read::{all_tags, installed_revisions, namespaces, tag_configurations};

use read::{ca_bundle, helm_release};
pub use table::{columns, or_dash};

use crate::revision::tags::{
    self, parse_tag, read_tag, revision_config_name, tag_config_name, TagError,
};
use crate::revision::Revision;
use table::or_none;

/// Field manager of every server-side apply `revplane` makes.
pub const FIELD_MANAGER: &str = "revplane";

/// `revplane tag ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TagCommand {
    /// Point a tag at an installed revision (namespaces labelled istio.io/rev=<TAG> then
    /// inject that revision).
    Set(SetArgs),
    /// Print the tag's MutatingWebhookConfiguration as YAML instead of applying it (GitOps).
    Generate(GenerateArgs),
    /// List tags: TAG, REVISION, NAMESPACES.
    List(ListArgs),
    /// Remove a tag.
    Remove(RemoveArgs),
}

/// Flags of `revplane tag set`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// The tag (a DNS-1123 label, e.g. prod or default).
    #[arg(value_parser = parse_tag)]
    pub tag: String,
    /// The revision it points to; it must be installed.
    #[arg(long, env = "REVPLANE_TAG_REVISION")]
    pub revision: Revision,
    /// Move the tag if it already points to another revision.
    #[arg(long, env = "REVPLANE_TAG_OVERWRITE")]
    pub overwrite: bool,
}

/// Flags of `revplane tag generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The tag (a DNS-1123 label, e.g. prod or default).
    #[arg(value_parser = parse_tag)]
    pub tag: String,
    /// The revision it points to; it must be installed (its client config is copied).
    #[arg(long, env = "REVPLANE_TAG_REVISION")]
    pub revision: Revision,
}

/// Flags of `revplane tag list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long, env = "REVPLANE_TAG_JSON")]
    pub json: bool,
}

/// Flags of `revplane tag remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    /// The tag to remove.
    #[arg(value_parser = parse_tag)]
    pub tag: String,
    /// Remove it even while namespaces are labelled with it (their new pods get no sidecar).
    #[arg(long, env = "REVPLANE_TAG_FORCE")]
    pub force: bool,
}

/// Why a `revplane tag` or `revplane revision` command failed.
#[derive(Debug, thiserror::Error)]
pub enum TagCommandError {
    /// The API server refused or could not be reached.
    #[error("cannot {action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The revision has no configuration `revplane-sidecar-injector-<rev>`.
    #[error(
        "revision {revision} is not installed (no MutatingWebhookConfiguration {config}; \
         installed: {installed}); install it first: helm install revplane-{revision} \
         deploy/charts/revplane -n revplane-system --set revision={revision}"
    )]
    NotInstalled {
        /// The revision asked for.
        revision: String,
        /// Its configuration's name.
        config: String,
        /// The installed revisions, comma-separated (or `none`).
        installed: String,
    },
    /// The tag name is an installed revision's name.
    #[error(
        "{tag} is the name of an installed revision (MutatingWebhookConfiguration {config}); \
         a tag of the same name would inject the same pods twice: choose another tag name"
    )]
    ShadowsRevision {
        /// The tag asked for.
        tag: String,
        /// The revision's configuration.
        config: String,
    },
    /// The tag exists and points elsewhere.
    #[error(
        "tag {tag} already points to revision {current}; to move it to {wanted}, run again \
         with --overwrite (existing pods keep their revision until restarted)"
    )]
    Exists {
        /// The tag.
        tag: String,
        /// The revision it points to now.
        current: String,
        /// The revision asked for.
        wanted: String,
    },
    /// The tag was installed by a Helm release (its `revisionTags`).
    #[error(
        "tag {tag} belongs to Helm release {release} (value revisionTags): changing it here \
         would be undone or deleted by the next helm upgrade or uninstall of {release}; \
         change it with Helm instead: remove {tag} from {release}'s revisionTags (helm \
         upgrade), then run this again or add it to the other release's revisionTags"
    )]
    HelmManaged {
        /// The tag.
        tag: String,
        /// The release that owns it.
        release: String,
    },
    /// The tag does not exist.
    #[error("there is no tag {tag} (no MutatingWebhookConfiguration {config}); `revplane tag list` shows the tags")]
    NotFound {
        /// The tag.
        tag: String,
        /// Its configuration's name.
        config: String,
    },
    /// Namespaces still inject through the tag.
    #[error(
        "tag {tag} is still used by namespace(s) {namespaces} (labelled istio.io/rev={tag}): \
         new pods there would get no sidecar; relabel them first, or pass --force"
    )]
    InUse {
        /// The tag.
        tag: String,
        /// The namespaces, comma-separated.
        namespaces: String,
    },
    /// A configuration could not be built or read.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// The YAML of `generate` could not be written.
    #[error("cannot render the tag as YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// The JSON output could not be rendered.
    #[error("cannot render the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Wraps a client error with what was being done.
pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> TagCommandError {
    let action = action.into();
    move |source| TagCommandError::Api { action, source }
}

/// Runs one `revplane tag` command against the cluster, writing what it did to `out`.
pub async fn run(
    command: TagCommand,
    client: Client,
    out: &mut dyn Write,
) -> Result<(), TagCommandError> {
    match command {
        TagCommand::Set(args) => set(&client, &args, out).await,
        TagCommand::Generate(args) => {
            let config = build(&client, &args.tag, args.revision.as_str()).await?;
            out.write_all(serde_yaml_ng::to_string(&config)?.as_bytes())?;
            Ok(())
        }
        TagCommand::List(args) => list(&client, args.json, out).await,
        TagCommand::Remove(args) => remove(&client, &args, out).await,
    }
}

fn configs(client: &Client) -> Api<MutatingWebhookConfiguration> {
    Api::all(client.clone())
}

async fn get_config(
    client: &Client,
    name: &str,
) -> Result<Option<MutatingWebhookConfiguration>, TagCommandError> {
    configs(client)
        .get_opt(name)
        .await
        .map_err(api(format!("read MutatingWebhookConfiguration {name}")))
}

/// The tag's configuration, after the checks `set` and `generate` share: the revision is
/// installed and no revision has the tag's name.
async fn build(
    client: &Client,
    tag: &str,
    revision: &str,
) -> Result<MutatingWebhookConfiguration, TagCommandError> {
    let config = revision_config_name(revision);
    let Some(revision_config) = get_config(client, &config).await? else {
        let installed: Vec<String> = installed_revisions(client)
            .await?
            .into_iter()
            .map(|(rev, _)| rev)
            .collect();
        return Err(TagCommandError::NotInstalled {
            revision: revision.to_string(),
            config,
            installed: or_none(&installed),
        });
    };
    let shadowed = revision_config_name(tag);
    if get_config(client, &shadowed).await?.is_some() {
        return Err(TagCommandError::ShadowsRevision {
            tag: tag.to_string(),
            config: shadowed,
        });
    }
    Ok(tags::tag_configuration(tag, revision, &revision_config)?)
}

async fn set(client: &Client, args: &SetArgs, out: &mut dyn Write) -> Result<(), TagCommandError> {
    let (tag, wanted) = (args.tag.as_str(), args.revision.as_str());
    let mut config = build(client, tag, wanted).await?;
    let name = tag_config_name(tag);
    let existing = get_config(client, &name).await?;
    let current = existing.as_ref().map(|existing| {
        read_tag(existing).map_or_else(|e| format!("unknown ({e})"), |t| t.revision)
    });
    if let (Some(current), Some(release)) = (&current, existing.as_ref().and_then(helm_release)) {
        if current != wanted {
            return Err(TagCommandError::HelmManaged {
                tag: tag.to_string(),
                release,
            });
        }
    }
    if let Some(current) = &current {
        if current != wanted && !args.overwrite {
            return Err(TagCommandError::Exists {
                tag: tag.to_string(),
                current: current.clone(),
                wanted: wanted.to_string(),
            });
        }
    }
    // Applied only over the version checked above (a concurrent move makes this a conflict,
    // not a silent overwrite); forced, so a tag the chart rendered is taken over.
    config.metadata.resource_version = existing.and_then(|e| e.metadata.resource_version);
    configs(client)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&config),
        )
        .await
        .map_err(api(format!("apply MutatingWebhookConfiguration {name}")))?;
    match current {
        Some(current) if current != wanted => writeln!(
            out,
            "Tag {tag} moved from revision {current} to {wanted}. Pods created from now on in \
             namespaces labelled istio.io/rev={tag} get {wanted}; restart workloads to move \
             existing pods (kubectl rollout restart)."
        )?,
        Some(_) => writeln!(
            out,
            "Tag {tag} already points to revision {wanted}; re-applied."
        )?,
        None if tag == crate::revision::selection::DEFAULT_NAME => writeln!(
            out,
            "Tag {tag} created, pointing to revision {wanted}. It injects namespaces labelled \
             istio.io/rev=default or istio-injection=enabled, and pods labelled \
             sidecar.istio.io/inject=true."
        )?,
        None => writeln!(
            out,
            "Tag {tag} created, pointing to revision {wanted}. To inject through it: kubectl \
             label namespace <namespace> istio.io/rev={tag}"
        )?,
    }
    Ok(())
}

/// One row of `revplane tag list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagRow {
    /// The tag.
    pub tag: String,
    /// The revision it points to.
    pub revision: String,
    /// Whether that revision is installed (if not, pods the tag selects are refused).
    pub installed: bool,
    /// Namespaces whose pods it injects (by namespace label).
    pub namespaces: Vec<String>,
    /// Its webhooks trust another CA than its revision's own webhooks do (the revision's
    /// certificate was replaced after the tag was set): the API server cannot call it.
    pub stale_ca: bool,
}

async fn list(client: &Client, json: bool, out: &mut dyn Write) -> Result<(), TagCommandError> {
    let installed = installed_revisions(client).await?;
    let by_name = namespaces(client).await?;
    let rows: Vec<TagRow> = tag_configurations(client)
        .await?
        .into_iter()
        .map(|(t, config)| {
            let revision_config = installed.iter().find(|(rev, _)| *rev == t.revision);
            TagRow {
                installed: revision_config.is_some(),
                stale_ca: revision_config
                    .is_some_and(|(_, rc)| ca_bundle(rc) != ca_bundle(&config)),
                namespaces: by_name.get(&t.name).cloned().unwrap_or_default(),
                tag: t.name,
                revision: t.revision,
            }
        })
        .collect();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else if rows.is_empty() {
        writeln!(
            out,
            "No revision tags. Create one: revplane tag set <tag> --revision <revision>"
        )?;
    } else {
        let mut table = vec![vec!["TAG".into(), "REVISION".into(), "NAMESPACES".into()]];
        table.extend(rows.into_iter().map(|r| {
            let revision = if !r.installed {
                format!("{} (not installed)", r.revision)
            } else if r.stale_ca {
                format!(
                    "{rev} (stale CA bundle: revplane tag set {tag} --revision {rev} --overwrite)",
                    rev = r.revision,
                    tag = r.tag
                )
            } else {
                r.revision
            };
            vec![r.tag, revision, or_dash(&r.namespaces)]
        }));
        out.write_all(columns(&table).as_bytes())?;
    }
    Ok(())
}

async fn remove(
    client: &Client,
    args: &RemoveArgs,
    out: &mut dyn Write,
) -> Result<(), TagCommandError> {
    let tag = args.tag.as_str();
    let name = tag_config_name(tag);
    let Some(existing) = get_config(client, &name).await? else {
        return Err(TagCommandError::NotFound {
            tag: tag.to_string(),
            config: name,
        });
    };
    if let Some(release) = helm_release(&existing) {
        return Err(TagCommandError::HelmManaged {
            tag: tag.to_string(),
            release,
        });
    }
    let using = namespaces(client).await?.remove(tag).unwrap_or_default();
    if !using.is_empty() && !args.force {
        return Err(TagCommandError::InUse {
            tag: tag.to_string(),
            namespaces: using.join(", "),
        });
    }
    configs(client)
        .delete(&name, &DeleteParams::default())
        .await
        .map_err(api(format!("delete MutatingWebhookConfiguration {name}")))?;
    let revision =
        read_tag(&existing).map_or_else(|_| "an unknown revision".into(), |t| t.revision);
    writeln!(out, "Tag {tag} removed (it pointed to {revision}).")?;
    if !using.is_empty() {
        writeln!(
            out,
            "Namespace(s) {} are still labelled istio.io/rev={tag}: new pods there get no sidecar.",
            using.join(", ")
        )?;
    }
    Ok(())
}
