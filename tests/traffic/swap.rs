//! The zero-failure endpoint swap: requests loop through the sidecar while the ledger's
//! only pod is replaced as a rollout does (new pod ready; old pod terminating; old pod gone),
//! and the old server stops only after Envoy acknowledged the endpoints without it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::common::manifest::{one_port_service, Condition};
use super::common::upstream::HttpUpstream;
use super::common::{admin_get, eventually};
use super::{get, http_client, retry, Mesh, LEDGER};

/// Requests the loop must have sent, at least, by the end.
const MIN_REQUESTS: u64 = 2_000;
/// Requests the loop must send in each phase before the next step.
const PER_PHASE: u64 = 300;
/// Concurrent request loops (each on its own keep-alive connection to Envoy).
const WORKERS: usize = 4;

/// What the request loop counted.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first failures, as the client saw them.
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Counts {
    fn total(&self) -> u64 {
        self.ok.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst)
    }
}

/// Waits until the loop sent `n` more requests than when called.
async fn requests_pass(counts: &Counts, n: u64, phase: &str) {
    let start = counts.total();
    eventually(
        Duration::from_secs(30),
        &format!("{n} requests during {phase}"),
        || async { counts.total() >= start + n },
    )
    .await;
}

/// The sidecar's EDS `(sent, acked)` versions in revplane's /debug/proxies.
async fn eds_versions(mesh: &Mesh) -> (Option<String>, Option<String>) {
    let body = admin_get(mesh.server.admin, "/debug/proxies").await.1;
    let proxies: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let eds = proxies["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pod_name"] == "teller-5d8f7")
        .map(|p| p["types"]["eds"].clone())
        .unwrap_or_default();
    let version = |key: &str| eds[key].as_str().map(str::to_string);
    (version("sent_version"), version("acked_version"))
}

/// Writes the ledger's endpoints, then waits until revplane sent Envoy a new EDS version,
/// Envoy ACKed it, and Envoy's own view holds exactly the ready endpoints `want`.
async fn move_endpoints(
    mesh: &Mesh,
    endpoints: &[(SocketAddr, Condition)],
    want: &[SocketAddr],
    step: &str,
) {
    let (before, _) = eds_versions(mesh).await;
    mesh.manifests.write("mesh", &ledger(endpoints));
    let cluster = format!("outbound|9000||{LEDGER}");
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|a| (cluster.clone(), a.to_string()))
        .collect();
    want.sort();
    let acked = retry(Duration::from_secs(10), || async {
        let (sent, acked) = eds_versions(mesh).await;
        let held = mesh.envoy.outbound_endpoints().await;
        if sent != before && sent.is_some() && acked == sent && held == want {
            Ok(())
        } else {
            Err(format!(
                "EDS sent {sent:?} (before {before:?}), acked {acked:?}; Envoy holds {held:?}"
            ))
        }
    })
    .await;
    if let Err(e) = acked {
        panic!(
            "{step}: want {want:?} ACKed: {e}\n{}",
            mesh.diagnostics().await
        );
    }
}

fn ledger(endpoints: &[(SocketAddr, Condition)]) -> Vec<String> {
    one_port_service(
        "payments",
        "ledger",
        "10.96.0.20",
        ("http-web", 9000),
        endpoints,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_swap_under_a_request_loop_fails_no_request() {
    let mut old = HttpUpstream::start("ledger-old").await;
    let new = HttpUpstream::start("ledger-new").await;
    let mesh = Mesh::start(
        "teller-5d8f7",
        "payments",
        &ledger(&[(old.addr, Condition::Ready)]),
    )
    .await;
    let client = http_client();
    let host = format!("{LEDGER}:9000");
    let first = retry(Duration::from_secs(15), || async {
        match get(&client, mesh.bind, 9000, &host, "/").await? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    if let Err(e) = first {
        panic!("no route to the ledger: {e}\n{}", mesh.diagnostics().await);
    }

    let counts = Arc::new(Counts::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (counts, client, bind, host) =
                (counts.clone(), client.clone(), mesh.bind, host.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !counts.stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("/swap/{w}/{n}");
                    match get(&client, bind, 9000, &host, &path).await {
                        Ok((200, body)) if body == "ledger-old" || body == "ledger-new" => {
                            counts.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            counts.failed.fetch_add(1, Ordering::SeqCst);
                            let mut failures = counts.failures.lock().unwrap();
                            if failures.len() < 20 {
                                failures.push(format!("{path}: {other:?}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();

    requests_pass(&counts, PER_PHASE, "the old pod alone").await;
    let both = [(old.addr, Condition::Ready), (new.addr, Condition::Ready)];
    move_endpoints(&mesh, &both, &[old.addr, new.addr], "new pod ready").await;
    requests_pass(&counts, PER_PHASE, "both pods ready").await;
    let terminating = [
        (old.addr, Condition::Terminating),
        (new.addr, Condition::Ready),
    ];
    move_endpoints(&mesh, &terminating, &[new.addr], "old pod terminating").await;
    // Envoy no longer picks the old pod: it may now stop, as its SIGTERM handler would.
    old.shutdown().await;
    let old_served = old.count();
    requests_pass(&counts, PER_PHASE, "the old pod stopped").await;
    // The old pod's slice goes away: nothing Envoy sees changes.
    mesh.manifests
        .write("mesh", &ledger(&[(new.addr, Condition::Ready)]));
    requests_pass(&counts, PER_PHASE, "the old pod removed").await;
    eventually(
        Duration::from_secs(60),
        "the loop reaches its minimum",
        || async { counts.total() >= MIN_REQUESTS },
    )
    .await;
    counts.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let (ok, failed) = (
        counts.ok.load(Ordering::SeqCst),
        counts.failed.load(Ordering::SeqCst),
    );
    eprintln!(
        "endpoint swap: {} requests, {failed} failed; ledger-old served {old_served}, \
         ledger-new {}",
        ok + failed,
        new.count()
    );
    if failed > 0 {
        let first = counts.failures.lock().unwrap().join("\n");
        panic!(
            "{failed} of {} requests failed during the swap; first failures:\n{first}\n{}",
            ok + failed,
            mesh.diagnostics().await
        );
    }
    assert!(ok >= MIN_REQUESTS, "{ok} requests");
    assert!(old_served > 0 && new.count() > 0, "both pods took traffic");
    let after_swap = new.count();
    assert!(
        after_swap as u64 >= 2 * PER_PHASE,
        "ledger-new took the traffic after the swap: {after_swap}"
    );
}
