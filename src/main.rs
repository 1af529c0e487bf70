//! The `revplane` binary: parse the command line, set up logging, run the app.
#![forbid(unsafe_code)]

use clap::Parser;
use revplane::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// Default log filter. kube-client logs every failed request at ERROR; the source reports the
/// same failure once, with what to do, so those lines are left out unless asked for.
const DEFAULT_LOG: &str = "info,kube_client::client::builder=off";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("REVPLANE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => revplane::app::run(args).await,
    }
}
