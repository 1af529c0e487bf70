//! The command line: `revplane serve ...`, `revplane proxy-status ...`. Every flag can also
//! be set by environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::revision::Revision;

/// revplane: an xDS control plane whose revisions run side by side.
#[derive(Debug, Parser)]
#[command(name = "revplane", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve xDS to the proxies of one revision.
    Serve(Box<ServeArgs>),
    /// Simulate many proxies against any ADS server and measure it.
    Load(LoadArgs),
    /// Show every proxy of the given instances and where each resource type stands (CSDS).
    ProxyStatus(crate::ctl::proxy_status::ProxyStatusArgs),
    /// Revision tags: mutable aliases that point injection at a revision (KUBECONFIG or
    /// in-cluster).
    #[command(subcommand)]
    Tag(crate::ctl::tag::TagCommand),
    /// Installed revisions and what still uses them (KUBECONFIG or in-cluster).
    #[command(subcommand)]
    Revision(crate::ctl::revision::RevisionCommand),
}

/// Flags of `revplane load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// ADS server to load.
    #[arg(long, env = "REVPLANE_LOAD_XDS_ADDR")]
    pub xds_addr: SocketAddr,

    /// Number of simulated proxies (one ADS stream each).
    #[arg(long, env = "REVPLANE_LOAD_PROXIES", default_value_t = 100)]
    pub proxies: usize,

    /// `REVISION` node metadata the proxies send.
    #[arg(long, env = "REVPLANE_LOAD_REVISION", default_value = "default")]
    pub revision: String,

    /// Types to subscribe to: `cds` and any of `eds`, `lds`, `rds` (`rds` needs `lds`).
    #[arg(
        long,
        env = "REVPLANE_LOAD_TYPES",
        default_value = "cds,eds,lds,rds",
        value_delimiter = ','
    )]
    pub types: Vec<String>,

    /// How long to run before reporting.
    #[arg(long, env = "REVPLANE_LOAD_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Share this many HTTP/2 connections among the proxies (default: one per proxy, as real
    /// proxies have).
    #[arg(long, env = "REVPLANE_LOAD_CONNECTIONS")]
    pub connections: Option<usize>,

    /// Spread the proxies' starts over this long (default: all at once).
    #[arg(long, env = "REVPLANE_LOAD_RAMP", default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,

    /// Each proxy closes its stream and connection and opens new ones this often, the
    /// proxies' turns spread evenly (`10m`: 10% of them reconnect every minute). Default: never.
    #[arg(long, env = "REVPLANE_LOAD_RECONNECT_EVERY", value_parser = humantime::parse_duration)]
    pub reconnect_every: Option<Duration>,

    /// Report the time of every ACK of every version (JSON `ack_unix_ms`), to plot the
    /// distribution of a fan-out.
    #[arg(long, env = "REVPLANE_LOAD_ACK_TIMES")]
    pub ack_times: bool,

    /// Print the report as JSON instead of a table.
    #[arg(long, env = "REVPLANE_LOAD_JSON")]
    pub json: bool,

    /// Instead of proxies, attack: each of `--proxies` streams (sharing `--connections`, one by
    /// default) sends a length prefix of this many bytes and 90% of that body, then stalls;
    /// the report counts streams still held and ended by status (docs/operations.md, limits).
    #[arg(long, env = "REVPLANE_LOAD_STALL_BYTES")]
    pub stall_bytes: Option<usize>,

    /// With `--stall-bytes`: send a valid first request claiming `--revision` first, to get
    /// past the revision gate.
    #[arg(long, env = "REVPLANE_LOAD_STALL_AFTER_GATE", requires = "stall_bytes")]
    pub stall_after_gate: bool,
}

/// Flags of `revplane serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Revision this instance serves (a DNS-1123 label such as stable, canary, 1-25-0).
    #[arg(long, env = "REVPLANE_REVISION")]
    pub revision: Revision,

    /// Where config comes from: `kube` (the Kubernetes API: in-cluster config or KUBECONFIG),
    /// or a directory of Kubernetes manifests, watched.
    #[arg(long, env = "REVPLANE_SOURCE")]
    pub source: SourceSpec,

    /// The control plane's own namespace, where its ConfigMap `revplane-<revision>` lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "revplane-system")]
    pub namespace: String,

    /// With a manifest directory: scan all of it this often even without file events, a
    /// safety net for changes the watcher cannot see (0s: never).
    #[arg(long, env = "REVPLANE_RESCAN_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub rescan_interval: Duration,

    /// With a manifest directory: larger files are refused unread (reported, their last good
    /// content kept).
    #[arg(long, env = "REVPLANE_MAX_MANIFEST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_manifest_bytes: u64,

    /// Address of the ADS gRPC server.
    #[arg(long, env = "REVPLANE_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,

    /// Address of the admin HTTP server (/ready, /metrics, /debug/...).
    #[arg(long, env = "REVPLANE_ADMIN_ADDR", default_value = "127.0.0.1:15014")]
    pub admin_addr: SocketAddr,

    /// Address of the sidecar injection webhook (HTTPS). It serves only when `--tls-cert`
    /// and `--tls-key` are given.
    #[arg(long, env = "REVPLANE_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,

    /// PEM certificate (chain) the webhook serves, e.g. the mounted Secret's `tls.crt`;
    /// reloaded when the file changes.
    #[arg(long, env = "REVPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "REVPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Build a snapshot once changes have been quiet this long.
    #[arg(long, env = "REVPLANE_DEBOUNCE_AFTER", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub debounce_after: Duration,

    /// Build a snapshot at the latest this long after the first unbuilt change.
    #[arg(long, env = "REVPLANE_DEBOUNCE_MAX", default_value = "10s", value_parser = humantime::parse_duration)]
    pub debounce_max: Duration,

    /// On SIGTERM/Ctrl-C, wait this long for streams to close before exiting.
    #[arg(long, env = "REVPLANE_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest xDS request accepted, in bytes.
    #[arg(long, env = "REVPLANE_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest first request of a stream, in bytes. It is read before the revision gate, from
    /// anyone; a real one (a node and a first subscription) is a few KiB.
    #[arg(long, env = "REVPLANE_MAX_FIRST_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_first_request_bytes: usize,

    /// Bytes of partly received xDS requests buffered across all streams; a stream that needs
    /// more ends with RESOURCE_EXHAUSTED (after waiting up to 20 s for room once the revision
    /// gate let it in).
    #[arg(long, env = "REVPLANE_REQUEST_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub request_buffer_bytes: usize,

    /// Open xDS connections at most; more are closed as they come (and counted).
    #[arg(long, env = "REVPLANE_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,

    /// A new xDS connection that has not sent the HTTP/2 preface within this is closed.
    #[arg(long, env = "REVPLANE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// An HTTP/2 keepalive PING goes to an xDS connection whose proxy sent nothing this long.
    #[arg(long, env = "REVPLANE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    /// An xDS connection that has not answered a keepalive PING within this is closed. Long:
    /// the PING queues behind whatever the sockets already hold, megabytes for a proxy
    /// receiving a large config; vanished peers are found by TCP keepalive within about a
    /// minute whatever this is.
    #[arg(long, env = "REVPLANE_KEEPALIVE_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// Concurrent ADS streams allowed on one HTTP/2 connection.
    #[arg(
        long,
        env = "REVPLANE_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub max_streams_per_connection: u32,

    /// New ADS streams admitted per second (a connect storm is queued at this rate).
    #[arg(long, env = "REVPLANE_NEW_STREAMS_PER_SECOND", default_value_t = 2000)]
    pub new_streams_per_second: u32,

    /// New streams admitted at once before the rate applies.
    #[arg(long, env = "REVPLANE_NEW_STREAM_BURST", default_value_t = 500)]
    pub new_stream_burst: u32,

    /// Longest a new stream waits for admission before it is refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "REVPLANE_ADMISSION_MAX_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub admission_max_wait: Duration,

    /// Streams with a push in flight (built and not yet answered by the proxy) at once.
    #[arg(long, env = "REVPLANE_PUSH_CONCURRENCY", default_value_t = 512)]
    pub push_concurrency: usize,

    /// Resource names one stream may subscribe to per type; a request naming more ends the
    /// stream with RESOURCE_EXHAUSTED.
    #[arg(long, env = "REVPLANE_MAX_SUBSCRIBED_NAMES", default_value_t = crate::xds::DEFAULT_MAX_SUBSCRIBED_NAMES)]
    pub max_subscribed_names: usize,

    /// `/debug/proxies` and `/debug/config` requests served at once; more wait up to a second,
    /// then get 503.
    #[arg(long, env = "REVPLANE_DEBUG_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub debug_concurrency: u32,
}

/// Where config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The Kubernetes API.
    Kube,
    /// A directory of manifests.
    Dir(PathBuf),
}

impl std::str::FromStr for SourceSpec {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "kube" => SourceSpec::Kube,
            dir => SourceSpec::Dir(PathBuf::from(dir)),
        })
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Kube => f.write_str("kube"),
            SourceSpec::Dir(dir) => write!(f, "{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_revision_is_a_usage_error_that_explains_the_rule() {
        let err = Cli::try_parse_from([
            "revplane",
            "serve",
            "--revision",
            "Canary_1",
            "--source",
            "d",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("DNS-1123"), "{err}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let err = Cli::try_parse_from([
            "revplane",
            "serve",
            "--revision",
            "canary",
            "--source",
            "d",
            "--tls-cert",
            "tls.crt",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
    }

    #[test]
    fn defaults_use_istio_ports() {
        let cli =
            Cli::try_parse_from(["revplane", "serve", "--revision", "canary", "--source", "d"])
                .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.xds_addr.port(), 15010);
        assert_eq!(args.admin_addr.port(), 15014);
        assert_eq!(args.webhook_addr.port(), 15017);
        assert_eq!(args.tls_cert, None);
        assert_eq!(args.debounce_after, Duration::from_millis(100));
        assert_eq!(args.max_first_request_bytes, 64 * 1024);
        assert_eq!(args.handshake_timeout, Duration::from_secs(5));
        assert_eq!(args.source, SourceSpec::Dir("d".into()));
        let kube = Cli::try_parse_from([
            "revplane",
            "serve",
            "--revision",
            "canary",
            "--source",
            "kube",
        ])
        .unwrap();
        let Command::Serve(args) = kube.command else {
            panic!("serve")
        };
        assert_eq!(args.source, SourceSpec::Kube);
    }
}
