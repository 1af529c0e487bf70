//! End-to-end tier of sidecar injection, as a cluster uses it: the real kube-apiserver's
//! MutatingAdmissionWebhook plugin calls two real `revplane serve` processes (stable and
//! canary) over TLS when a pod is created; then the stored pod's sidecar container is run as
//! the kubelet would run it (its `$(VAR)`s expanded from the downward API), as a real Envoy
//! 1.40, and attaches to its revision.
//!
//! There is no kube-proxy here, so webhooks are reached by URL on 127.0.0.1 (the chart's
//! `injectionURL`), and no controller manager, so each namespace gets its `default`
//! ServiceAccount from the test.

mod common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use common::certs::TestCa;
use common::envoy::Envoy;
use common::kube::*;
use common::kubelet::downward_env;
use common::process::run_cli;
use common::process::Revplane;
use common::*;
use k8s_openapi::api::core::v1::{Container, Pod};

/// A revision as its Deployment would run it: kube source, webhook with a serving
/// certificate for 127.0.0.1 signed by `ca`.
struct Revision {
    name: String,
    server: Revplane,
    webhook: SocketAddr,
    _certs: tempfile::TempDir,
}

impl Revision {
    async fn start(cluster: &KubeCluster, name: &str, ca: &TestCa) -> Revision {
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = ca.write(certs.path(), &["127.0.0.1"]);
        let webhook = free_addr();
        let kubeconfig = cluster.main.kubeconfig(REVPLANE_TOKEN);
        let webhook_arg = webhook.to_string();
        let server = Revplane::spawn(
            name,
            &[
                OsStr::new("--source"),
                OsStr::new("kube"),
                OsStr::new("--namespace"),
                OsStr::new(CONTROL_NS),
                OsStr::new("--webhook-addr"),
                OsStr::new(&webhook_arg),
                OsStr::new("--tls-cert"),
                cert.as_os_str(),
                OsStr::new("--tls-key"),
                key.as_os_str(),
            ],
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        );
        server.wait_ready().await;
        Revision {
            name: name.to_string(),
            server,
            webhook,
            _certs: certs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.webhook)
    }

    /// Installs the revision's own MutatingWebhookConfiguration.
    async fn install_webhook(
        &self,
        admin: &::kube::Client,
        ca: &TestCa,
    ) -> k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration {
        apply_revision_webhook(admin, &self.name, &self.url("/inject"), &ca.pem()).await
    }
}

/// Mesh config: only namespaces with `prefix`, the sidecar dials `xds` and serves its admin
/// interface on `admin_port`.
fn mesh(namespaces: &[&str], xds: SocketAddr, admin_port: u16) -> String {
    format!(
        "discoverySelectors:\n- matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{}]}}]\ndiscoveryAddress: {xds}\nproxyAdminPort: {admin_port}\n",
        namespaces.join(", ")
    )
}

fn proxy(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "revplane-proxy")
}

fn bootstrap(container: &Container) -> serde_json::Value {
    let args = container.args.as_ref().unwrap();
    assert_eq!(args[0], "--config-yaml");
    serde_yaml_ng::from_str(&args[1]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_the_sidecar_of_the_revision_their_namespace_names_and_it_runs() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let ca = TestCa::new("injector-ca");
    let namespaces = ["inj-shop", "inj-pay", "inj-web", "inj-off"];
    let admin_port = free_addr().port();
    // The processes' xDS ports come from Revplane::spawn; the mesh config names them, so the
    // config maps are written after the processes start (the mesh config is watched).
    let stable = Revision::start(cluster, "inj-stable", &ca).await;
    let canary = Revision::start(cluster, "inj-canary", &ca).await;
    apply_mesh_config(
        &admin,
        "inj-stable",
        &mesh(&namespaces, stable.server.xds, admin_port),
    )
    .await;
    apply_mesh_config(
        &admin,
        "inj-canary",
        &mesh(&namespaces, canary.server.xds, admin_port),
    )
    .await;
    stable.install_webhook(&admin, &ca).await;
    let canary_config = canary.install_webhook(&admin, &ca).await;
    // Tag inj-prod -> canary: the tag's webhooks call canary's /inject/tag/inj-prod.
    apply_tag_webhook(&admin, "inj-prod", "inj-canary", &canary_config).await;
    create_namespace(&admin, "inj-shop", &[("istio.io/rev", "inj-canary")]).await;
    create_namespace(&admin, "inj-pay", &[("istio.io/rev", "inj-stable")]).await;
    create_namespace(&admin, "inj-web", &[("istio.io/rev", "inj-prod")]).await;
    create_namespace(&admin, "inj-off", &[]).await;
    for ns in namespaces {
        create_default_service_account(&admin, ns).await;
    }
    apply_service(&admin, "inj-shop", "cart", 8080).await;
    apply_slice(&admin, "inj-shop", "cart", &["10.1.0.7"], 8080).await;

    // Canary's namespace: canary's sidecar, dialing canary.
    let shop = create_pod(&admin, "inj-shop", "web-1", &[("app", "web")])
        .await
        .unwrap();
    let container = proxy(&shop).expect("canary injected a sidecar");
    let b = bootstrap(container);
    assert_eq!(b["node"]["metadata"]["REVISION"], "inj-canary");
    let dials = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
        ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!(dials["port_value"], canary.server.xds.port());
    assert_eq!(
        shop.metadata.labels.as_ref().unwrap()["istio.io/rev"],
        "inj-canary"
    );

    // Stable's namespace: stable's.
    let pay = create_pod(&admin, "inj-pay", "api-1", &[]).await.unwrap();
    let b = bootstrap(proxy(&pay).expect("stable injected a sidecar"));
    assert_eq!(b["node"]["metadata"]["REVISION"], "inj-stable");

    // Through the tag: canary's sidecar, the pod names the tag.
    let web = create_pod(&admin, "inj-web", "front-1", &[]).await.unwrap();
    let b = bootstrap(proxy(&web).expect("the tag injected a sidecar"));
    assert_eq!(b["node"]["metadata"]["REVISION"], "inj-canary");
    assert_eq!(
        web.metadata.labels.as_ref().unwrap()["istio.io/rev"],
        "inj-canary"
    );
    assert_eq!(
        web.metadata.annotations.as_ref().unwrap()["revplane.io/tag"],
        "inj-prod"
    );

    // Opt-out, and a namespace no revision selects: nothing.
    let opted = create_pod(
        &admin,
        "inj-shop",
        "batch-1",
        &[("sidecar.istio.io/inject", "false")],
    )
    .await
    .unwrap();
    assert!(proxy(&opted).is_none());
    let plain = create_pod(&admin, "inj-off", "tool-1", &[]).await.unwrap();
    assert!(proxy(&plain).is_none());
    // A pod label selects when its namespace has no label.
    let by_label = create_pod(
        &admin,
        "inj-off",
        "tool-2",
        &[("istio.io/rev", "inj-stable")],
    )
    .await
    .unwrap();
    assert_eq!(
        bootstrap(proxy(&by_label).expect("pod label selects stable"))["node"]["metadata"]
            ["REVISION"],
        "inj-stable"
    );

    // The stored sidecar runs from its pod spec alone and attaches to canary.
    let container = proxy(&shop).unwrap();
    let env = downward_env(&shop, container);
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let args = container.args.clone().unwrap();
    let envoy = Envoy::start_container(
        container.command.as_ref().unwrap(),
        &args,
        &env,
        &admin_addr,
    );
    let wanted = (
        "outbound|8080||cart.inj-shop.svc.cluster.local".to_string(),
        "10.1.0.7:8080".to_string(),
    );
    eventually(
        Duration::from_secs(10),
        "sidecar has canary's clusters",
        || {
            let envoy = &envoy;
            let wanted = wanted.clone();
            async move { envoy.outbound_endpoints().await.contains(&wanted) }
        },
    )
    .await;
    let proxies = admin_get(canary.server.admin, "/debug/proxies").await.1;
    assert!(
        proxies.contains("sidecar~127.0.0.1~web-1.inj-shop~inj-shop.svc.cluster.local"),
        "{proxies}"
    );
    // proxy-status over both revisions: the sidecar is canary's, and SYNCED there.
    let mut synced = String::new();
    for _ in 0..100 {
        let out = run_cli(vec![
            "proxy-status".into(),
            "--xds-addr".into(),
            stable.server.xds.to_string(),
            "--xds-addr".into(),
            canary.server.xds.to_string(),
        ])
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = table
            .lines()
            .find(|l| l.starts_with("web-1.inj-shop "))
            .unwrap_or_else(|| panic!("the sidecar is listed: {table}"))
            .to_string();
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[1], "inj-canary", "{row}");
        assert!(
            words.contains(&canary.server.xds.to_string().as_str()),
            "{row}"
        );
        if words[2] == "SYNCED" && words[3] == "SYNCED" {
            synced = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!synced.is_empty(), "CDS and EDS SYNCED in proxy-status");
    drop(envoy);

    // The same args pointed at stable: refused, and it holds no config.
    let misrouted: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace(
                &format!("port_value: {}", canary.server.xds.port()),
                &format!("port_value: {}", stable.server.xds.port()),
            )
        })
        .collect();
    assert_ne!(misrouted, args, "the discovery port was replaced");
    let envoy = Envoy::start_container(
        container.command.as_ref().unwrap(),
        &misrouted,
        &env,
        &admin_addr,
    );
    let refused =
        "revplane_xds_rejected_streams_total{revision=\"inj-stable\",reason=\"revision_mismatch\"}";
    eventually(
        Duration::from_secs(10),
        "stable refuses canary's sidecar",
        || async { metric(stable.server.admin, refused).await >= 1.0 },
    )
    .await;
    assert!(envoy.dynamic_clusters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_its_webhook_down_a_pod_is_refused_with_an_error_naming_the_webhook() {
    let cluster = KubeCluster::shared().await;
    let admin = cluster.admin().await;
    let ca = TestCa::new("down-ca");
    let gone = free_addr();
    apply_revision_webhook(&admin, "down", &format!("https://{gone}/inject"), &ca.pem()).await;
    create_namespace(&admin, "down-shop", &[("istio.io/rev", "down")]).await;
    create_default_service_account(&admin, "down-shop").await;
    let err = create_pod(&admin, "down-shop", "web-1", &[])
        .await
        .expect_err("failurePolicy Fail refuses the pod");
    let message = err.to_string();
    assert!(
        message.contains("rev.namespace.sidecar-injector.revplane.io")
            && message.contains("failed calling webhook"),
        "{message}"
    );
    // Opting out still works while the revision is down.
    create_pod(
        &admin,
        "down-shop",
        "batch-1",
        &[("sidecar.istio.io/inject", "false")],
    )
    .await
    .unwrap();
}
