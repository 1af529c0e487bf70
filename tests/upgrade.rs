//! docs/upgrade.md, executed: every `sh` block of the guide, in order, with the real `helm`,
//! `kubectl` and `revplane` against a real kube-apiserver and etcd; after each block the
//! kubelet stand-in (tests/common/kubelet.rs) runs what a cluster would run (the revisions'
//! Deployments, the injected sidecars as real Envoys). Then the outputs of the guide's
//! verification steps are checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::free_addr;
use common::helm::{helm_bin, kubectl_bin};
use common::kube::{KubeCluster, ADMIN_TOKEN};
use common::kubelet::{Addresses, Kubelet};

/// The guide's `sh` blocks, in order, with the heading each falls under.
fn blocks(guide: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.to_string();
        } else if line.trim_end() == "```sh" {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| l.trim_end() != "```")
                .collect();
            out.push((heading.clone(), body.join("\n")));
        }
    }
    out
}

/// A directory holding `helm`, `kubectl` and `revplane`, for PATH.
fn tools() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, target) in [
        ("helm", helm_bin()),
        ("kubectl", kubectl_bin()),
        ("revplane", PathBuf::from(env!("CARGO_BIN_EXE_revplane"))),
    ] {
        std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap();
    }
    dir
}

fn values(a: &Addresses) -> String {
    format!(
        "--set injectionURL=https://{}/inject --set meshConfig.discoveryAddress={} --set meshConfig.proxyAdminPort=0",
        a.webhook, a.xds
    )
}

/// The line of `output` about `proxy` (a `pod.namespace` name).
fn row<'a>(output: &'a str, proxy: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(proxy))
        .unwrap_or_else(|| panic!("no row for {proxy} in:\n{output}"))
}

fn assert_on(output: &str, proxy: &str, revision: &str) {
    let line = row(output, proxy);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words.get(1),
        Some(&revision),
        "{proxy} on {revision}: {line}"
    );
    assert!(
        words.contains(&"SYNCED") && !words.contains(&"STALE") && !words.contains(&"NACKED"),
        "{proxy} synced: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_guide_runs_as_written() {
    let cluster = KubeCluster::shared().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/upgrade.md")).unwrap();
    let kubeconfig = cluster.main.kubeconfig(ADMIN_TOKEN);
    let mut kubelet = Kubelet::new(cluster.admin().await, kubeconfig.clone(), "revplane-system");
    for revision in ["stable", "canary"] {
        let addresses = Addresses {
            xds: free_addr(),
            admin: free_addr(),
            webhook: free_addr(),
        };
        kubelet.addresses.insert(revision.to_string(), addresses);
    }
    let (stable, canary) = (&kubelet.addresses["stable"], &kubelet.addresses["canary"]);
    let tools = tools();
    let helm_home = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env: Vec<(&str, String)> = vec![
        ("PATH", path),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        (
            "HELM_CACHE_HOME",
            helm_home.path().join("cache").display().to_string(),
        ),
        (
            "HELM_CONFIG_HOME",
            helm_home.path().join("config").display().to_string(),
        ),
        (
            "HELM_DATA_HOME",
            helm_home.path().join("data").display().to_string(),
        ),
        ("STABLE_VALUES", values(stable)),
        ("CANARY_VALUES", values(canary)),
        ("STABLE_XDS", stable.xds.to_string()),
        ("CANARY_XDS", canary.xds.to_string()),
    ];

    let blocks = blocks(&guide);
    assert!(blocks.len() >= 12, "the guide's steps: {blocks:#?}");
    let mut outputs: Vec<(String, String, String)> = Vec::new();
    for (heading, script) in blocks {
        let out = tokio::task::spawn_blocking({
            let (script, env, root) = (script.clone(), env.clone(), root.to_path_buf());
            move || {
                Command::new("bash")
                    .args(["-euo", "pipefail", "-c", &script])
                    .current_dir(root)
                    .envs(env)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "docs/upgrade.md, \"{heading}\":\n{script}\nfailed ({}):\n{stdout}\n{stderr}\nstable:\n{}\ncanary:\n{}",
            out.status,
            kubelet.server_log("stable"),
            kubelet.server_log("canary"),
        );
        kubelet.reconcile().await;
        outputs.push((heading, script, stdout));
    }

    let output_of = |heading: &str, command: &str| -> &str {
        outputs
            .iter()
            .find(|(h, s, _)| h.starts_with(heading) && s.contains(command))
            .map(|(_, _, o)| o.as_str())
            .unwrap_or_else(|| panic!("no block under {heading:?} runs {command:?}"))
    };
    // 1: both workloads on stable.
    let first = output_of("1.", "revplane proxy-status");
    assert_on(first, "web.shop", "stable");
    assert_on(first, "api.legacy", "stable");
    // 4: shop moved, legacy not.
    let moved = output_of("4.", "revplane proxy-status");
    assert_on(moved, "web.shop", "canary");
    assert_on(moved, "api.legacy", "stable");
    let revisions = output_of("4.", "revplane revision list");
    assert!(row(revisions, "canary").contains("shop"), "{revisions}");
    // 5: everything on canary; stable unused.
    let tagged = output_of("5.", "revplane proxy-status");
    assert_on(tagged, "web.shop", "canary");
    assert_on(tagged, "api.legacy", "canary");
    let revisions = output_of("5.", "revplane revision list");
    let stable_row: Vec<&str> = row(revisions, "stable").split_whitespace().collect();
    assert_eq!(
        &stable_row[2..],
        ["-", "-", "0"],
        "stable unused: {revisions}"
    );
    assert!(output_of("5.", "revplane tag list").contains("canary"));
    // Roll back: both on stable again.
    let back = output_of("Roll back", "revplane proxy-status");
    assert_on(back, "web.shop", "stable");
    assert_on(back, "api.legacy", "stable");
}
