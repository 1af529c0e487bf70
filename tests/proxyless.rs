//! End-to-end tier for proxyless gRPC: a real gRPC client with a gRFC A27 bootstrap calls
//! `xds:///<service>:<port>` through a `revplane serve` process and reaches a real Python
//! grpcio server listed in an EndpointSlice. Every scenario runs with both xDS clients a user
//! may have: Python grpcio (gRPC C-core) and grpc-go. Each client run is its own process, so
//! each has its own xDS client (grpc keeps one per process).

mod common;

use std::time::Duration;

use common::grpc::{self, CallRun, Client, GrpcServer, ProxylessNode};
use common::manifest::{mesh_config, one_port_service, Condition, Manifests};
use common::process::Revplane;
use common::{admin_get, metric};

const GREETER: &str = "xds:///greeter.demo.svc.cluster.local:50051";

/// The greeter Service (`grpc 50051` in `demo`) with `server` as its one ready pod, and each
/// revision's mesh config as in the example (LEAST_REQUEST, which grpc does not take: the
/// proxyless clusters must be ROUND_ROBIN anyway).
fn greeter_mesh(server: &GrpcServer) -> Manifests {
    let manifests = Manifests::new();
    manifests.write(
        "greeter",
        &one_port_service(
            "demo",
            "greeter",
            "10.96.0.40",
            ("grpc", 50051),
            &[(server.addr, Condition::Ready)],
        ),
    );
    let mesh = "domain: cluster.local\nlbPolicy: LEAST_REQUEST\n";
    manifests.write(
        "revplane",
        &[mesh_config("canary", mesh), mesh_config("stable", mesh)],
    );
    manifests
}

/// Everything to read when a proxyless test fails.
async fn diagnostics(run: &CallRun, server: &Revplane, greeter: &GrpcServer) -> String {
    format!(
        "--- outcomes\n{:#?}\n--- grpc client stderr\n{}\n--- revplane /debug/config\n{}\n\
         --- revplane log\n{}\n--- grpc server\n{}",
        run.outcomes,
        run.stderr,
        admin_get(server.admin, "/debug/config").await.1,
        server.log_text(),
        greeter.log_text()
    )
}

/// A canary client in `demo` calls the greeter through the canary instance by each name.
async fn reaches_the_server_by_each_of_its_names(client: Client) {
    let greeter = GrpcServer::start("greeter-a");
    let manifests = greeter_mesh(&greeter);
    let canary = Revplane::start("canary", manifests.path()).await;
    // A client pod in the greeter's own namespace: the short names resolve too.
    let node = ProxylessNode::new("client-6f7d9", "demo", "canary");
    let targets: Vec<String> = [
        GREETER,
        "xds:///greeter.demo.svc:50051",
        "xds:///greeter.demo:50051",
        "xds:///greeter:50051",
    ]
    .map(str::to_string)
    .to_vec();
    let run = grpc::call(
        client,
        &targets,
        Duration::from_secs(10),
        Some((&node, canary.xds)),
        None,
    )
    .await;
    for outcome in &run.outcomes {
        if outcome.code != "OK" || outcome.reply.as_deref() != Some("greeter-a:ping") {
            panic!(
                "{client:?}: {} did not reach the greeter\n{}",
                outcome.target,
                diagnostics(&run, &canary, &greeter).await
            );
        }
    }
    assert_eq!(greeter.calls(), targets.len(), "{}", greeter.log_text());
}

/// A canary client pointed at the stable instance is refused; a stable one gets through.
async fn is_refused_by_the_other_revision(client: Client) {
    let greeter = GrpcServer::start("greeter-a");
    let manifests = greeter_mesh(&greeter);
    let stable = Revplane::start("stable", manifests.path()).await;
    let node = ProxylessNode::new("client-6f7d9", "demo", "canary");
    let run = grpc::call(
        client,
        &[GREETER.to_string()],
        Duration::from_secs(10),
        Some((&node, stable.xds)),
        None,
    )
    .await;
    let outcome = &run.outcomes[0];
    let details = outcome.details.clone().unwrap_or_default();
    // gRFC A54: the client reports UNAVAILABLE and carries the control plane's status inside.
    let message = format!(
        "node \"{}\" belongs to revision \"canary\" but this control plane serves revision \
         \"stable\"",
        node.id
    );
    if outcome.code != "UNAVAILABLE"
        || !details.contains(client.permission_denied())
        || !details.contains(&message)
    {
        panic!(
            "{client:?}: want UNAVAILABLE with {}: {message}\n{}",
            client.permission_denied(),
            diagnostics(&run, &stable, &greeter).await
        );
    }
    assert_eq!(greeter.calls(), 0, "a refused client reached the server");
    let refused =
        "revplane_xds_rejected_streams_total{revision=\"stable\",reason=\"revision_mismatch\"}";
    assert!(metric(stable.admin, refused).await >= 1.0);

    // The same instance serves a client of its own revision.
    let own = ProxylessNode::new("client-6f7d9", "demo", "stable");
    let run = grpc::call(
        client,
        &[GREETER.to_string()],
        Duration::from_secs(10),
        Some((&own, stable.xds)),
        None,
    )
    .await;
    if run.outcomes[0].reply.as_deref() != Some("greeter-a:ping") {
        panic!(
            "{client:?}: a stable client on stable did not reach the greeter\n{}",
            diagnostics(&run, &stable, &greeter).await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_grpcio_client_reaches_the_server_in_the_endpoint_slice_by_each_of_its_names() {
    reaches_the_server_by_each_of_its_names(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_grpc_go_client_reaches_the_server_in_the_endpoint_slice_by_each_of_its_names() {
    reaches_the_server_by_each_of_its_names(Client::Go).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_grpcio_client_pointed_at_stable_is_refused_with_permission_denied() {
    is_refused_by_the_other_revision(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_grpc_go_client_pointed_at_stable_is_refused_with_permission_denied() {
    is_refused_by_the_other_revision(Client::Go).await;
}
