//! In-process tier: the manifest directory under attack and under unlucky operators — a
//! deeply nested file, slow writers, the directory removed and restored, changes no file
//! event reports. The real server on 127.0.0.1:0, a scripted ADS client as the proxy.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use revplane::app::{self, Server};

const CATALOG_HTTP: &str = "outbound|8080||catalog.shop.svc.cluster.local";

/// The example mesh's service clusters.
fn service_clusters() -> Vec<String> {
    vec![
        "outbound|8080||catalog.shop.svc.cluster.local".to_string(),
        "outbound|80||frontend.shop.svc.cluster.local".to_string(),
        "outbound|9000||ledger.payments.svc.cluster.local".to_string(),
        "outbound|9090||frontend.shop.svc.cluster.local".to_string(),
    ]
}

fn outbound(cds: &DiscoveryResponse) -> Vec<String> {
    names(cds)
        .into_iter()
        .filter(|n| n.starts_with("outbound|"))
        .collect()
}

/// Opens an admitted wildcard stream and walks it through CDS, EDS and their ACKs.
async fn attached(server: &Server, node_id: &str) -> AdsClient {
    let mut client = AdsClient::open(server, first_cds(node_id, "canary"))
        .await
        .unwrap();
    let cds = client.recv().await.unwrap();
    assert_eq!(outbound(&cds), service_clusters());
    client.ack(&cds, &[]).await;
    client.send(request(EDS, &service_clusters(), "", "")).await;
    let eds = client.recv().await.unwrap();
    client.ack(&eds, &service_clusters()).await;
    client
}

/// Replaces `file` atomically (write beside, rename), as docs/operations.md recommends.
fn replace(file: &Path, text: &str) {
    let tmp = file.with_file_name(".replace.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, file).unwrap();
}

/// Waits for the assignment of the catalog cluster to show `port`, ACKing what arrives.
async fn catalog_port(client: &mut AdsClient, port: u16) {
    loop {
        let response = client.recv().await.unwrap();
        client.ack(&response, &service_clusters()).await;
        if response.type_url == EDS
            && endpoints(&response)
                .iter()
                .any(|(name, eps)| name == CATALOG_HTTP && eps == &[format!("127.0.0.1:{port}")])
        {
            return;
        }
    }
}

async fn source_errors(server: &Server) -> Vec<serde_json::Value> {
    let body = admin_get(server.admin_addr, "/debug/config").await.1;
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    config["source_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_file_is_refused_at_once_and_the_server_stays_responsive() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-a").await;

    // The attack of issue 11: one 200 KB document nested 50,000 levels deep.
    let bomb = format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000));
    std::fs::write(mesh.path().join("bomb.yaml"), bomb).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await; // the source is on it now

    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(1),
        admin_get(server.admin_addr, "/healthz"),
    )
    .await;
    assert_eq!(health.expect("/healthz within 1 s").0, 200);
    let mut newcomer = tokio::time::timeout(
        Duration::from_secs(1),
        AdsClient::open(&server, first_cds("proxy-new", "canary")),
    )
    .await
    .expect("a new stream within 1 s")
    .unwrap();
    assert_eq!(
        outbound(&newcomer.recv().await.unwrap()),
        service_clusters()
    );

    // An edit made meanwhile is not held up behind it.
    let shop = mesh.path().join("shop.yaml");
    let original = std::fs::read_to_string(&shop).unwrap();
    replace(&shop, &original.replace("port: 18180", "port: 18190"));
    catalog_port(&mut client, 18190).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let errors = source_errors(&server).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["path"].as_str().unwrap().ends_with("bomb.yaml"));
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("nested more than 128 levels"),
        "{errors:?}"
    );
    server.stop().await;
}

/// Writes `text` in `pieces` pieces `pause` apart: through one open handle (`kubectl get
/// -o yaml > file`, an editor streaming), or reopening and closing for each (`>>` per piece).
fn write_slowly(path: &Path, text: &str, pieces: usize, pause: Duration, reopen: bool) {
    let step = text.len().div_ceil(pieces);
    let mut file = Some(std::fs::File::create(path).unwrap());
    for (i, piece) in text.as_bytes().chunks(step).enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        let open = file
            .get_or_insert_with(|| std::fs::OpenOptions::new().append(true).open(path).unwrap());
        open.write_all(piece).unwrap();
        open.flush().unwrap();
        if reopen {
            file = None; // closed after each piece
        }
    }
}

/// Reads responses until `quiet` passes without one, ACKing each; returns them.
async fn drain(client: &mut AdsClient, quiet: Duration) -> Vec<DiscoveryResponse> {
    let mut seen = Vec::new();
    while let Ok(response) = tokio::time::timeout(quiet, client.recv()).await {
        let response = response.unwrap();
        let names = if response.type_url == EDS {
            service_clusters()
        } else {
            Vec::new()
        };
        client.ack(&response, &names).await;
        seen.push(response);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_slowly_never_shrinks_what_is_served() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-b").await;
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();

    for reopen in [false, true] {
        let (path, same) = (shop.clone(), text.clone());
        let writer = tokio::task::spawn_blocking(move || {
            write_slowly(&path, &same, 5, Duration::from_millis(400), reopen)
        });
        let seen = drain(&mut client, Duration::from_secs(3)).await;
        writer.await.unwrap();
        for response in &seen {
            if response.type_url == CDS {
                assert_eq!(outbound(response), service_clusters(), "reopen: {reopen}");
            } else {
                let endpoints = endpoints(response);
                assert!(
                    endpoints.iter().all(|(_, eps)| !eps.is_empty()),
                    "reopen {reopen}: an assignment emptied: {endpoints:?}"
                );
            }
        }
    }
    // Still live: a real change arrives.
    replace(&shop, &text.replace("port: 18180", "port: 18191"));
    catalog_port(&mut client, 18191).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_written_in_pieces_appears_whole() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-c").await;
    let documents: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: new{i}, namespace: shop}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n"
            )
        })
        .collect();
    let path = mesh.path().join("new.yaml");
    let writer = tokio::task::spawn_blocking(move || {
        // One document per piece: each prefix is valid YAML with fewer Services.
        let mut file = std::fs::File::create(&path).unwrap();
        for (i, document) in documents.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(400));
            }
            file.write_all(document.as_bytes()).unwrap();
            file.flush().unwrap();
        }
    });
    let seen = drain(&mut client, Duration::from_secs(2)).await;
    writer.await.unwrap();
    let counts: Vec<usize> = seen
        .iter()
        .filter(|r| r.type_url == CDS)
        .map(|r| outbound(r).iter().filter(|n| n.contains("|new")).count())
        .collect();
    assert_eq!(counts, [4], "CDS responses' new clusters: {counts:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_and_restored_directory_is_read_again() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-d").await;
    let files: Vec<(std::path::PathBuf, String)> = std::fs::read_dir(mesh.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();

    std::fs::remove_dir_all(mesh.path()).unwrap();
    let admin = server.admin_addr;
    eventually(Duration::from_secs(3), "the loss reported", || async {
        let body = admin_get(admin, "/debug/config").await.1;
        body.contains("cannot read the manifest directory")
    })
    .await;
    client.expect_silence(Duration::from_millis(200)).await;

    // Restored with a change (as `git checkout`, a restore from backup or a redeploy would).
    std::fs::create_dir(mesh.path()).unwrap();
    for (path, text) in &files {
        std::fs::write(path, text.replace("port: 18180", "port: 18192")).unwrap();
    }
    catalog_port(&mut client, 18192).await;
    assert!(source_errors(&server).await.is_empty());

    // And watched again: the next edit arrives as fast as any.
    let shop = mesh.path().join("shop.yaml");
    let text = std::fs::read_to_string(&shop).unwrap();
    let started = Instant::now();
    replace(&shop, &text.replace("port: 18192", "port: 18193"));
    catalog_port(&mut client, 18193).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_no_file_event_reports_arrives_with_the_periodic_rescan() {
    // shop.yaml is a symlink to a file elsewhere: editing that file raises no event in the
    // watched directory.
    let mesh = mesh_copy();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("shop.yaml");
    std::fs::rename(mesh.path().join("shop.yaml"), &target).unwrap();
    std::os::unix::fs::symlink(&target, mesh.path().join("shop.yaml")).unwrap();
    let mut args = serve_args("canary", mesh.path());
    args.rescan_interval = Duration::from_millis(500);
    let xds = tokio::net::TcpListener::bind(args.xds_addr).await.unwrap();
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .unwrap();
    let server = app::start_on(args, xds, admin).await.unwrap();
    let mut client = attached(&server, "proxy-e").await;

    let text = std::fs::read_to_string(&target).unwrap();
    std::fs::write(&target, text.replace("port: 18180", "port: 18194")).unwrap();
    // A rescan finds it; with no event to vouch for it, it must hold still for 2 s first.
    catalog_port(&mut client, 18194).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_replaced_by_a_directory_is_reported_and_keeps_its_services() {
    let mesh = mesh_copy();
    let server = start("canary", mesh.path()).await;
    let mut client = attached(&server, "proxy-f").await;
    let payments = mesh.path().join("payments.yaml");
    std::fs::remove_file(&payments).unwrap();
    std::fs::create_dir(&payments).unwrap();
    let admin = server.admin_addr;
    eventually(Duration::from_secs(3), "the directory reported", || async {
        let body = admin_get(admin, "/debug/config").await.1;
        body.contains("payments.yaml") && body.contains("is now a directory")
    })
    .await;
    client.expect_silence(Duration::from_millis(300)).await;

    // Resolved by removing it: now its services go.
    std::fs::remove_dir(&payments).unwrap();
    let cds = client.recv().await.unwrap();
    assert_eq!(outbound(&cds).len(), 3, "{:?}", outbound(&cds));
    assert!(source_errors(&server).await.is_empty());
    server.stop().await;
}
