//! `helm lint`; what `helm template` renders for two revisions; the Deployment's command
//! line; values the chart refuses.

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use revplane::cli::{Cli, Command as Sub, SourceSpec};
use revplane::revision::selection::{self, Selection};
use serde_json::json;

use super::common::helm::*;
use super::NS;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn lint_passes_for_two_revisions() {
    let chart = chart_dir();
    for extra in [
        &["--set", "revision=stable"][..],
        &[
            "--set",
            "revision=canary",
            "--set",
            "revisionTags={prod,default}",
        ],
        &[
            "--set",
            "revision=canary",
            "--set",
            "injectionURL=https://127.0.0.1:15017/inject",
        ],
    ] {
        let mut args = vec![
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--namespace",
            NS,
        ];
        args.extend_from_slice(extra);
        let out = helm(&args, None).unwrap_or_else(|e| panic!("helm lint {extra:?}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn stable_and_canary_share_no_object() {
    let mut keys = Vec::new();
    for (rev, tag) in [("stable", "lts"), ("canary", "prod")] {
        let tags = format!("revisionTags={{{tag}}}");
        let objects = render(rev, NS, &["--set", &tags]);
        let mut mine = BTreeSet::new();
        for o in &objects {
            let meta = &o["metadata"];
            assert_eq!(meta["labels"]["app"], "revplane", "{o}");
            assert_eq!(meta["labels"]["istio.io/rev"], rev, "{o}");
            let key = (
                o["kind"].as_str().unwrap().to_string(),
                meta["namespace"].as_str().unwrap_or("").to_string(),
                meta["name"].as_str().unwrap().to_string(),
            );
            assert!(
                key.2.contains(rev) || key.2.ends_with(&format!("-tag-{tag}")),
                "{key:?}"
            );
            assert!(mine.insert(key.clone()), "{key:?} rendered twice");
        }
        let kinds: BTreeSet<&str> = mine.iter().map(|k| k.0.as_str()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "HorizontalPodAutoscaler",
                "MutatingWebhookConfiguration",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "Secret",
                "Service",
                "ServiceAccount"
            ])
        );
        keys.push(mine);
    }
    let shared: Vec<_> = keys[0].intersection(&keys[1]).collect();
    assert!(shared.is_empty(), "objects of both revisions: {shared:?}");
}

#[test]
fn the_deployment_runs_a_valid_serve_command_line() {
    for (grace, at_least) in [("5s", 5), ("1500ms", 2), ("2m", 120)] {
        let objects = render("canary", NS, &["--set", &format!("shutdownGrace={grace}")]);
        let deploy = find(&objects, "Deployment", "revplane-canary");
        let pod = &deploy["spec"]["template"];
        let c = &pod["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("revplane").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} is not a valid command line: {e}"));
        let Sub::Serve(serve) = cli.command else {
            panic!("{args:?} is not `revplane serve`")
        };
        assert_eq!(serve.revision.to_string(), "canary");
        assert_eq!(serve.source, SourceSpec::Kube);
        let grace_s = serve.shutdown_grace.as_secs_f64();
        assert!(grace_s >= f64::from(at_least) - 0.5, "{grace}: {grace_s}");
        let termination = pod["spec"]["terminationGracePeriodSeconds"]
            .as_f64()
            .unwrap();
        assert!(
            termination >= grace_s,
            "{termination} s < grace {grace_s} s"
        );

        // The listeners are the container's named ports, which the Service targets.
        let port = |name: &str| {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()["containerPort"]
                .as_u64()
                .unwrap() as u16
        };
        assert_eq!(serve.xds_addr.port(), port("grpc-xds"));
        assert_eq!(serve.admin_addr.port(), port("http-monitoring"));
        assert_eq!(serve.webhook_addr.port(), port("https-webhook"));
        assert!(serve.xds_addr.ip().is_unspecified() && serve.webhook_addr.ip().is_unspecified());
        let svc = find(&objects, "Service", "revplane-canary");
        let svc_ports: Vec<(u64, &str)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["port"].as_u64().unwrap(),
                    p["targetPort"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            svc_ports,
            [
                (15010, "grpc-xds"),
                (15014, "http-monitoring"),
                (443, "https-webhook")
            ]
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http-monitoring");

        // The certificate files are in the mounted Secret.
        let mount = &c["volumeMounts"][0];
        let dir = std::path::Path::new(mount["mountPath"].as_str().unwrap());
        assert_eq!(
            serve.tls_cert.as_deref(),
            Some(dir.join("tls.crt").as_path())
        );
        assert_eq!(
            serve.tls_key.as_deref(),
            Some(dir.join("tls.key").as_path())
        );
        let volume = &pod["spec"]["volumes"][0];
        assert_eq!(volume["name"], mount["name"]);
        assert_eq!(volume["secret"]["secretName"], "revplane-canary-tls");

        let env = &c["env"][0];
        assert_eq!(env["name"], "POD_NAMESPACE");
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert!(!pod["spec"]["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .is_empty());

        // The control plane's pods are never injected, not even where the namespace asks.
        let pod_labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap();
        for ns in [
            labels(&[]),
            labels(&[("istio.io/rev", "canary")]),
            labels(&[("istio-injection", "enabled")]),
        ] {
            for name in ["canary", "default"] {
                assert!(!matches!(
                    selection::select(name, &ns, &pod_labels),
                    Selection::Selected(_)
                ));
            }
        }
    }
}

/// Asserts configuration `name` of `objects` holds exactly `webhook_selectors(selects)`,
#[test]
fn bad_values_are_refused_with_a_reason() {
    let long = "a".repeat(55);
    for (args, reason) in [
        (vec!["--set", "revision=Canary"], "is not a DNS-1123 label"),
        (vec!["--set", "revision=can.ary"], "is not a DNS-1123 label"),
        (vec!["--set", &format!("revision={long}")], "at most 54"),
        (
            vec!["--set", "revision=canary", "--set", "revisionTags={canary}"],
            "the revision's own name",
        ),
        (
            vec!["--set", "revision=canary", "--set", "revisionTags={Prod}"],
            "revisionTags: \"Prod\" is not a DNS-1123 label",
        ),
        (
            vec!["--set", "injectionURL=http://127.0.0.1:15017/inject"],
            "HTTPS only",
        ),
        (
            vec!["--set", "injectionURL=https://127.0.0.1:15017/"],
            "its path must end in /inject",
        ),
        (vec!["--set", "shutdownGrace=5"], "shutdownGrace \"5\""),
        (
            vec!["--set", "caBundle=not a certificate"],
            "caBundle must be the CA certificate in PEM",
        ),
    ] {
        let err = try_render("revplane-x", NS, &args).expect_err(&format!("{args:?} rendered"));
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}
