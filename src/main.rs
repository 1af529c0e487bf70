//! The `revplane` binary: parse the command line, set up logging, run the app.
#![forbid(unsafe_code)]

use clap::Parser;
use revplane::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// jemalloc: the smallest RSS per idle stream of the allocators measured (system malloc,
/// jemalloc, mimalloc; docs/benchmarks.md), and freed memory is given back after a burst.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Default log filter. kube-client logs every failed request at ERROR; the source reports the
/// same failure once, with what to do, so those lines are left out unless asked for.
const DEFAULT_LOG: &str = "info,kube_client::client::builder=off";

/// Every stream is a connection: raise the soft open-file limit to the hard limit.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Prints a load report as JSON or as its table.
fn print_report<R: serde::Serialize>(
    json: bool,
    report: &R,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("REVPLANE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_open_file_limit();
    match cli.command {
        Command::Serve(args) => revplane::app::run(*args).await,
        Command::ProxyStatus(args) => Ok(revplane::ctl::proxy_status::run(args).await?),
        Command::Load(args) if args.stall_bytes.is_some() => {
            let report = revplane::load::stall::run(&revplane::load::stall::StallConfig {
                xds_addr: args.xds_addr,
                streams: args.proxies,
                connections: args.connections.unwrap_or(1),
                declared_bytes: args.stall_bytes.unwrap_or_default(),
                revision: args.stall_after_gate.then_some(args.revision),
                duration: args.duration,
            })
            .await?;
            print_report(args.json, &report, || report.to_table())
        }
        Command::Load(args) => {
            let known = ["cds", "eds", "lds", "rds"];
            let has = |t: &str| args.types.iter().any(|x| x == t);
            if !args.types.iter().all(|t| known.contains(&t.as_str())) || !has("cds") {
                anyhow::bail!(
                    "--types must list cds and any of eds, lds, rds (got {})",
                    args.types.join(",")
                );
            }
            if has("rds") && !has("lds") {
                anyhow::bail!("--types rds needs lds: route names come from the listeners");
            }
            // Thousands of simulated proxies take a burst of memory each time a config
            // arrives and free it once it is read; without background purging jemalloc keeps
            // the freed pages until the process allocates again, so the generator's RSS would
            // measure its peak, not what it holds.
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!(error = %e, "cannot turn on jemalloc's background purging");
            }
            let report = revplane::load::run(revplane::load::LoadConfig {
                xds_addr: args.xds_addr,
                proxies: args.proxies,
                revision: args.revision,
                eds: has("eds"),
                lds: has("lds"),
                rds: has("rds"),
                duration: args.duration,
                connections: args.connections,
                ramp: args.ramp,
                reconnect_every: args.reconnect_every,
                ack_times: args.ack_times,
            })
            .await?;
            print_report(args.json, &report, || report.to_table())
        }
        Command::Tag(command) => {
            revplane::ctl::tag::run(command, kube_client().await?, &mut std::io::stdout()).await?;
            Ok(())
        }
        Command::Revision(command) => {
            revplane::ctl::revision::run(command, kube_client().await?, &mut std::io::stdout())
                .await?;
            Ok(())
        }
    }
}

/// A client of the API server from KUBECONFIG (or ~/.kube/config) or the in-cluster config.
async fn kube_client() -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client: set KUBECONFIG (or ~/.kube/config), or run in a pod",
    )
}
