//! End-to-end tier for traffic through a sidecar: the `revplane` binary on a manifest
//! directory, a real Envoy 1.40 asking for all four types, and real upstreams (an HTTP
//! server, a Python grpcio server, a TCP echo server) listed in EndpointSlices.
//!
//! Envoys run with `INTERCEPTION_MODE: NONE`, so their outbound listeners bind on
//! `<OUTBOUND_LISTENER_ADDRESS>:<service port>`; each Envoy gets its own loopback address
//! ([`common::loopback_ip`]), so tests running side by side all use the real service ports.
//! Clients send the service's name as `Host`/`:authority`, as an application calling
//! `http://ledger.payments.svc.cluster.local:9000` through iptables would.
//!
//! `redirect.rs`: an Envoy in REDIRECT mode; `swap.rs`: the zero-failure endpoint swap.

#[path = "../common/mod.rs"]
mod common;
mod redirect;
mod swap;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use common::envoy::{Bootstrap, Envoy};
use common::grpc::{self, GrpcServer};
use common::manifest::{one_port_service, Condition, Manifests};
use common::process::Revplane;
use common::upstream::{HttpUpstream, SeenRequest, TcpEcho};
use common::{admin_get, loopback_ip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The ledger Service of the issue: `http-web 9000` in `payments`.
const LEDGER: &str = "ledger.payments.svc.cluster.local";

/// A canary `revplane serve` on `manifests` with one NONE-mode sidecar attached.
struct Mesh {
    manifests: Manifests,
    server: Revplane,
    envoy: Envoy,
    /// Where the sidecar's outbound listeners bind.
    bind: IpAddr,
}

impl Mesh {
    /// Writes `documents` as `mesh.yaml`, starts the canary instance on them and a sidecar
    /// of pod `pod` in `namespace` with `INTERCEPTION_MODE: NONE` on a loopback IP of its own.
    async fn start(pod: &str, namespace: &str, documents: &[String]) -> Mesh {
        let manifests = Manifests::new();
        manifests.write("mesh", documents);
        let server = Revplane::start("canary", manifests.path()).await;
        let (envoy, bind) = sidecar(&server, pod, namespace);
        Mesh {
            manifests,
            server,
            envoy,
            bind,
        }
    }

    /// What to read when a test fails: both logs and both views of the config.
    async fn diagnostics(&self) -> String {
        diagnostics(&self.server, &[&self.envoy]).await
    }
}

/// A NONE-mode sidecar of `pod` in `namespace` attached to `server`, and its bind address.
fn sidecar(server: &Revplane, pod: &str, namespace: &str) -> (Envoy, IpAddr) {
    let bind = loopback_ip();
    let bootstrap =
        Bootstrap::traffic(pod, namespace, "canary", server.xds.port()).interception_none(bind);
    (Envoy::start_with(&bootstrap, &[]), bind)
}

/// revplane's log and /debug/proxies, each Envoy's log, listeners and outbound clusters.
async fn diagnostics(server: &Revplane, envoys: &[&Envoy]) -> String {
    let mut out = format!(
        "--- revplane /debug/proxies\n{}\n--- revplane log\n{}",
        admin_get(server.admin, "/debug/proxies").await.1,
        server.log_text()
    );
    for envoy in envoys {
        out.push_str(&format!(
            "--- envoy {} /listeners\n{}--- envoy routes {:?}\n--- envoy endpoints {:?}\n\
             --- envoy log\n{}",
            envoy.admin,
            envoy.admin_get("/listeners").await,
            envoy.dynamic_routes().await,
            envoy.outbound_endpoints().await,
            envoy.log_text()
        ));
    }
    out
}

/// Runs `attempt` every 100 ms until it succeeds or `within` passed; the last error if not.
async fn retry<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An HTTP client that never goes through a proxy from the environment.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `GET http://<bind>:<port><path>` with `Host: <host>`: (status, body) or the error.
async fn get(
    client: &reqwest::Client,
    bind: IpAddr,
    port: u16,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let response = client
        .get(format!("http://{bind}:{port}{path}"))
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .map_err(|e| format!("GET {path} Host {host}: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

/// `GET` that must answer 200 from the upstream named `want`.
async fn get_from(
    client: &reqwest::Client,
    bind: IpAddr,
    host: &str,
    path: &str,
    want: &str,
) -> Result<(), String> {
    match get(client, bind, 9000, host, path).await? {
        (200, body) if body == want => Ok(()),
        (status, body) => Err(format!("GET {path} Host {host}: {status} {body:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_through_the_sidecar_reaches_the_upstream_by_its_full_and_short_names() {
    let upstream = HttpUpstream::start("ledger-a").await;
    let ledger = one_port_service(
        "payments",
        "ledger",
        "10.96.0.20",
        ("http-web", 9000),
        &[(upstream.addr, Condition::Ready)],
    );
    // The caller lives in the ledger's own namespace, so its short names route too.
    let mesh = Mesh::start("teller-5d8f7", "payments", &ledger).await;
    let client = http_client();
    let fqdn_port = format!("{LEDGER}:9000");
    if let Err(e) = retry(Duration::from_secs(15), || {
        get_from(&client, mesh.bind, &fqdn_port, "/", "ledger-a")
    })
    .await
    {
        panic!(
            "curl -H 'Host: {fqdn_port}' http://{}:9000/ never reached the ledger: {e}\n{}",
            mesh.bind,
            mesh.diagnostics().await
        );
    }
    let names = [
        fqdn_port.as_str(),
        LEDGER,
        "ledger.payments.svc:9000",
        "ledger.payments.svc",
        "ledger.payments:9000",
        "ledger.payments",
        "ledger:9000",
        "ledger",
        // What a client that dialled the cluster IP sends.
        "10.96.0.20:9000",
        "10.96.0.20",
    ];
    for (i, host) in names.iter().enumerate() {
        let path = format!("/by-name/{i}");
        if let Err(e) = get_from(&client, mesh.bind, host, &path, "ledger-a").await {
            panic!("{e}\n{}", mesh.diagnostics().await);
        }
        let seen = SeenRequest {
            method: "GET".into(),
            path,
            host: Some(host.to_string()),
        };
        assert!(
            upstream.seen().contains(&seen),
            "the ledger did not see {seen:?}; it saw {:?}",
            upstream.seen()
        );
    }

    // A caller in another namespace reaches it as ledger.payments, but `ledger` is not a
    // name of anything there: Envoy answers 404 and the ledger sees nothing.
    let (other, other_bind) = sidecar(&mesh.server, "frontend-7d4b9", "shop");
    if let Err(e) = retry(Duration::from_secs(15), || {
        get_from(
            &client,
            other_bind,
            "ledger.payments:9000",
            "/from-shop",
            "ledger-a",
        )
    })
    .await
    {
        panic!("{e}\n{}", diagnostics(&mesh.server, &[&other]).await);
    }
    let before = upstream.count();
    let short = get(&client, other_bind, 9000, "ledger:9000", "/short-from-shop").await;
    assert_eq!(
        short.as_ref().map(|(status, _)| *status),
        Ok(404),
        "`ledger` from namespace shop: {short:?}\n{}",
        diagnostics(&mesh.server, &[&other]).await
    );
    assert_eq!(upstream.count(), before, "{:?}", upstream.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_through_the_sidecar_reaches_the_real_grpc_server() {
    let greeter = GrpcServer::start("greeter-a");
    let documents = one_port_service(
        "demo",
        "greeter",
        "10.96.0.40",
        ("grpc", 50051),
        &[(greeter.addr, Condition::Ready)],
    );
    let mesh = Mesh::start("client-6f7d9", "demo", &documents).await;
    let target = format!("{}:50051", mesh.bind);
    // A client dialing greeter.demo by name sends it as :authority (research §4).
    let authority = "greeter.demo.svc.cluster.local:50051";
    let outcome = retry(Duration::from_secs(15), || async {
        let run = grpc::call(
            grpc::Client::Python,
            std::slice::from_ref(&target),
            Duration::from_secs(2),
            None,
            Some(authority),
        )
        .await;
        let outcome = &run.outcomes[0];
        match (outcome.code.as_str(), outcome.reply.as_deref()) {
            ("OK", Some("greeter-a:ping")) => Ok(outcome.clone()),
            _ => Err(format!("{outcome:?}\n--- grpc client\n{}", run.stderr)),
        }
    })
    .await;
    if let Err(e) = outcome {
        panic!(
            "gRPC to {target} (:authority {authority}) never reached the greeter: {e}\n\
             --- grpc server\n{}\n{}",
            greeter.log_text(),
            mesh.diagnostics().await
        );
    }
    assert!(greeter.calls() >= 1, "{}", greeter.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_through_the_sidecar_reaches_the_echo_server() {
    let echo = TcpEcho::start().await;
    let documents = one_port_service(
        "tools",
        "echo",
        "10.96.0.50",
        ("tcp-echo", 7000),
        &[(echo.addr, Condition::Ready)],
    );
    let mesh = Mesh::start("client-6f7d9", "tools", &documents).await;
    let addr = std::net::SocketAddr::new(mesh.bind, 7000);
    let message = b"hello through the sidecar\n";
    let echoed = retry(Duration::from_secs(15), || async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.write_all(message).await.map_err(|e| e.to_string())?;
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut back))
            .await
            .map_err(|_| "no echo within 2 s".to_string())?
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(back)
    })
    .await;
    match echoed {
        Ok(back) => assert_eq!(back, message),
        Err(e) => panic!("TCP through {addr}: {e}\n{}", mesh.diagnostics().await),
    }
    assert!(echo.connections() >= 1);
}
