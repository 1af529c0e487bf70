//! The per-revision Helm chart (deploy/charts/revplane), with the real Helm 3 and, for the
//! install test, the real kube-apiserver and kubectl (scripts/install-kube).
//!
//! What a user relies on: `helm lint` and `helm template` pass for two revisions and for
//! every value that changes what is rendered; bad values are refused with a message saying
//! why; stable and canary share no object; the Deployment runs a valid `revplane serve`
//! command line; the webhooks are exactly `revision::selection::webhook_selectors`; every
//! object is accepted by the API server; and the generated certificate survives upgrades.

mod common;

#[path = "chart/install.rs"]
mod install;
#[path = "chart/render.rs"]
mod render;
#[path = "chart/webhooks.rs"]
mod webhooks;

/// The release namespace of every test.
const NS: &str = common::kube::CONTROL_NS;
