//! In-process tier of the injection webhook: the real server with TLS on 127.0.0.1:0, its
//! namespaces and mesh config from a manifest directory, AdmissionReviews posted over HTTPS as
//! the API server posts them.

mod common;

use std::time::Duration;

use common::certs::TestCa;
use revplane::app::{self, Server};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {istio.io/rev: stable}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {istio.io/rev: prod}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: revplane-canary, namespace: revplane-system}
data:
  mesh: |
    discoveryAddress: 127.0.0.1:15010
    proxyImage: registry.local/envoy:v1.40.0
    proxyResources: {requests: {cpu: 50m}}
";

struct Webhook {
    server: Server,
    client: reqwest::Client,
    base: String,
    dir: tempfile::TempDir,
}

async fn start_webhook(ca: &TestCa) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("mesh");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("namespaces.yaml"), NAMESPACES).unwrap();
    let (cert, key) = ca.write(dir.path(), &["127.0.0.1"]);
    let mut args = common::serve_args("canary", &manifests);
    args.tls_cert = Some(cert);
    args.tls_key = Some(key);
    let xds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = app::start_on(args, xds, admin).await.unwrap();
    common::wait_ready(&server).await;
    let addr = server
        .webhook_addr
        .expect("the webhook serves with a certificate");
    Webhook {
        client: client_trusting(&ca.pem()),
        base: format!("https://{addr}"),
        server,
        dir,
    }
}

fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn review(namespace: &str, object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("Pod").to_string();
    let resource = format!("{}s", kind.to_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f5c1a3e-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

fn pod(labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    })
}

impl Webhook {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts a review; returns the response and the pod with its patch applied.
    async fn inject(&self, path: &str, namespace: &str, object: Value) -> (Value, Value) {
        let (status, answer) = self.post(path, &review(namespace, object.clone())).await;
        assert_eq!(status, 200, "{answer}");
        let response = answer["response"].clone();
        assert_eq!(response["uid"], "0f5c1a3e-1");
        let mut patched = object;
        if !response["patch"].is_null() {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = patch_bytes(&response["patch"]);
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut patched, &patch).unwrap();
        }
        (response, patched)
    }
}

/// The patch bytes as Go's JSON decoder reads a `[]byte`: a base64 string or an array of
/// numbers.
fn patch_bytes(patch: &Value) -> Vec<u8> {
    match patch {
        Value::Array(items) => items.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        other => {
            serde_json::from_value::<k8s_openapi::ByteString>(other.clone())
                .unwrap()
                .0
        }
    }
}

fn containers(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_pod_of_the_revisions_namespace_gets_the_sidecar_and_others_are_left_alone() {
    let ca = TestCa::new("webhook-ca");
    let hook = start_webhook(&ca).await;

    let (response, injected) = hook
        .inject("/inject", "shop", pod(json!({"app": "web"})))
        .await;
    assert_eq!(response["allowed"], true);
    assert_eq!(containers(&injected), ["app", "revplane-proxy"]);
    assert_eq!(injected["metadata"]["labels"]["istio.io/rev"], "canary");
    let proxy = &injected["spec"]["containers"][1];
    assert_eq!(proxy["image"], "registry.local/envoy:v1.40.0");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "50m");
    let bootstrap: Value = serde_yaml_ng::from_str(proxy["args"][1].as_str().unwrap()).unwrap();
    assert_eq!(bootstrap["node"]["metadata"]["REVISION"], "canary");
    assert_eq!(
        bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
            ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"],
        15010
    );

    // Injected again (e.g. a re-invocation): no second sidecar.
    let (again, twice) = hook.inject("/inject", "shop", injected.clone()).await;
    assert_eq!(containers(&twice), ["app", "revplane-proxy"]);
    assert!(again["warnings"][0].as_str().unwrap().contains("already"));

    // Another revision's namespace: allowed, untouched, with a warning naming who owns it.
    let (response, untouched) = hook.inject("/inject", "payments", pod(json!({}))).await;
    assert_eq!(response["allowed"], true);
    assert!(response["patch"].is_null());
    assert_eq!(containers(&untouched), ["app"]);
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(warning.contains("stable"), "{warning}");

    // Opt-out.
    let (response, untouched) = hook
        .inject(
            "/inject",
            "shop",
            pod(json!({"sidecar.istio.io/inject": "false"})),
        )
        .await;
    assert_eq!(containers(&untouched), ["app"]);
    assert!(response["warnings"][0]
        .as_str()
        .unwrap()
        .contains("opted out"));

    // A pod in the host's network is never injected.
    let mut host = pod(json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    let (response, untouched) = hook.inject("/inject", "shop", host).await;
    assert_eq!(containers(&untouched), ["app"]);
    assert!(response["warnings"][0]
        .as_str()
        .unwrap()
        .contains("hostNetwork"));

    // `istio-injection=enabled` belongs to the revision or tag `default`, not canary.
    let (_, untouched) = hook.inject("/inject", "legacy", pod(json!({}))).await;
    assert_eq!(containers(&untouched), ["app"]);

    let metrics = common::admin_get(hook.server.admin_addr, "/metrics")
        .await
        .1;
    for (result, n) in [
        ("injected", 1),
        ("already_injected", 1),
        ("not_selected", 2),
        ("opted_out", 1),
        ("not_eligible", 1),
    ] {
        let line = format!(
            "revplane_sidecar_injections_total{{revision=\"canary\",result=\"{result}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_tag_route_injects_the_resolved_revision_and_names_the_tag() {
    let ca = TestCa::new("webhook-ca");
    let hook = start_webhook(&ca).await;
    let (_, injected) = hook
        .inject("/inject/tag/prod/", "web", pod(json!({})))
        .await;
    assert_eq!(containers(&injected), ["app", "revplane-proxy"]);
    assert_eq!(injected["metadata"]["labels"]["istio.io/rev"], "canary");
    assert_eq!(
        injected["metadata"]["annotations"]["revplane.io/tag"],
        "prod"
    );
    // The tag route answers only for the tag's namespaces.
    let (_, untouched) = hook
        .inject("/inject/tag/prod", "shop", pod(json!({})))
        .await;
    assert_eq!(containers(&untouched), ["app"]);
    // The `default` tag also answers istio-injection=enabled.
    let (_, injected) = hook
        .inject("/inject/tag/default", "legacy", pod(json!({})))
        .await;
    assert_eq!(containers(&injected), ["app", "revplane-proxy"]);
    let (status, _) = hook
        .post("/inject/tag/Not_A_Tag", &review("web", pod(json!({}))))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_reviews_get_a_clear_400_and_other_objects_pass_untouched() {
    let ca = TestCa::new("webhook-ca");
    let hook = start_webhook(&ca).await;
    let r = hook
        .client
        .post(format!("{}/inject", hook.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("malformed AdmissionReview"));

    let (status, body) = hook
        .post(
            "/inject",
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.as_str().unwrap().contains("no request"), "{body}");

    let huge = "x".repeat(4 * 1024 * 1024);
    let r = hook
        .client
        .post(format!("{}/inject", hook.base))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413, "a review over the size limit");

    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let (response, untouched) = hook.inject("/inject", "shop", config_map.clone()).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(untouched, config_map);

    let (status, body) = hook
        .post(
            "/inject",
            &review(
                "shop",
                json!({"apiVersion": "v1", "kind": "Pod", "spec": "not a spec"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.as_str().unwrap().contains("not a valid Pod"), "{body}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let old_ca = TestCa::new("old-ca");
    let hook = start_webhook(&old_ca).await;
    let new_ca = TestCa::new("new-ca");
    let trusting_new = client_trusting(&new_ca.pem());
    let url = format!("{}/inject", hook.base);
    assert!(
        trusting_new.post(&url).body("{}").send().await.is_err(),
        "the old certificate is not trusted by the new CA"
    );
    // Written as a Secret mount changes: both files replaced.
    new_ca.write(hook.dir.path(), &["127.0.0.1"]);
    let mut served = false;
    for _ in 0..50 {
        if trusting_new.post(&url).body("{}").send().await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the new certificate is served within 10 s");

    // A broken pair is not taken: the last good certificate stays (a new client, so a new
    // handshake).
    std::fs::write(hook.dir.path().join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = client_trusting(&new_ca.pem())
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn a_bad_certificate_stops_the_server_from_starting_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let mut args = common::serve_args("canary", &common::example_mesh());
    args.tls_cert = Some(cert.clone());
    args.tls_key = Some(key);
    let xds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = app::start_on(args, xds, admin).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(&*cert.to_string_lossy()), "{message}");
    assert!(message.contains("no PEM certificate"), "{message}");
}

#[tokio::test]
async fn a_client_that_trickles_its_review_is_cut_off_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("webhook-ca");
    let hook = start_webhook(&ca).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(hook.server.webhook_addr.unwrap())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let started = std::time::Instant::now();
    tls.write_all(
        b"POST /inject HTTP/1.1\r\nhost: webhook\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    // One byte a second: never done within the deadline.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if tls.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(12), trickle).await;
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut answer))
        .await
        .expect("answered")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "cut off at the 8 s deadline, not after {took:?}"
    );
}
