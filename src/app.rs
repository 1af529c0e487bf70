//! The one place that wires sources, the publisher, the xDS and admin servers, readiness and
//! shutdown.
//!
//! Readiness: each source registers a [`ReadyGuard`](crate::readiness::ReadyGuard) per watch
//! or directory before it is spawned and drops it after its first result; the publisher
//! publishes its first snapshot once none is left, and `/ready` turns true then (until then
//! it names what it waits for). Shutdown: one
//! `CancellationToken`; streams close with `UNAVAILABLE`; the process waits at most the grace
//! period for tasks to finish.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::{self, AdminState};
use crate::cli::{ServeArgs, SourceSpec};
use crate::inject::tls::{CertFiles, ReloadingCert};
use crate::inject::{self, InjectMetrics, Injector};
use crate::pipeline::{Debounce, Publisher, PublisherMetrics, SnapshotReceiver};
use crate::readiness::Readiness;
use crate::revision::RevisionGate;
use crate::source::dir::{self, DirMetrics, DirOptions};
use crate::source::kube::{KubeMetrics, KubeSource};
use crate::source::SourceStatus;
use crate::xds::admission::AdmissionLimits;
use crate::xds::metrics::XdsMetrics;
use crate::xds::{self, Limits, XdsContext};

/// Catalog events buffered between sources and the publisher.
const EVENT_QUEUE: usize = 1024;

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Bound ADS address.
    pub xds_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Bound injection webhook address (when `--tls-cert`/`--tls-key` were given).
    pub webhook_addr: Option<SocketAddr>,
    /// Injector metrics.
    pub inject_metrics: InjectMetrics,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    /// Publisher metrics (snapshot builds, encodes).
    pub publisher_metrics: PublisherMetrics,
    /// xDS metrics.
    pub xds_metrics: XdsMetrics,
    /// Published snapshots.
    pub snapshots: SnapshotReceiver,
    tasks: TaskTracker,
    grace: std::time::Duration,
}

/// Binds the addresses in `args` and starts serving.
pub async fn start(args: ServeArgs) -> anyhow::Result<Server> {
    let xds = listen(args.xds_addr)
        .with_context(|| format!("cannot listen for xDS on {}", args.xds_addr))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen for admin HTTP on {}", args.admin_addr))?;
    start_on(args, xds, admin).await
}

/// Pending connections the xDS listener holds: a connect storm waits in the kernel's queue
/// instead of being dropped and retried seconds later.
const XDS_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(XDS_BACKLOG)
}

/// Starts serving on already bound listeners (tests bind `127.0.0.1:0`).
pub async fn start_on(
    args: ServeArgs,
    xds_listener: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<Server> {
    let xds_addr = xds_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    // The webhook's certificate is checked before anything starts: a bad pair is a
    // configuration error to report at once, not a failing handshake later.
    let webhook = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let cert = ReloadingCert::load(files).context("cannot serve the injection webhook")?;
            let listener = TcpListener::bind(args.webhook_addr)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen for the injection webhook on {}",
                        args.webhook_addr
                    )
                })?;
            Some((cert, listener))
        }
        _ => None,
    };
    let webhook_addr = match &webhook {
        Some((_, listener)) => Some(listener.local_addr()?),
        None => None,
    };
    tracing::info!(
        revision = %args.revision,
        source = %args.source,
        namespace = %args.namespace,
        rescan_interval = ?args.rescan_interval,
        max_manifest_bytes = args.max_manifest_bytes,
        %xds_addr,
        %admin_addr,
        webhook_addr = ?webhook_addr,
        debounce_after = ?args.debounce_after,
        debounce_max = ?args.debounce_max,
        shutdown_grace = ?args.shutdown_grace,
        max_request_bytes = args.max_request_bytes,
        max_first_request_bytes = args.max_first_request_bytes,
        request_buffer_bytes = args.request_buffer_bytes,
        max_connections = args.max_connections,
        handshake_timeout = ?args.handshake_timeout,
        max_streams_per_connection = args.max_streams_per_connection,
        new_streams_per_second = args.new_streams_per_second,
        new_stream_burst = args.new_stream_burst,
        push_concurrency = args.push_concurrency,
        max_subscribed_names = args.max_subscribed_names,
        debug_concurrency = args.debug_concurrency,
        "starting revplane"
    );
    let kube_client: Option<kube::Client> = match &args.source {
        SourceSpec::Dir(dir) => {
            if !dir.is_dir() {
                anyhow::bail!(
                    "--source {} is not a directory; point it at a directory of Kubernetes YAML \
                     such as deploy/examples/mesh, or use --source=kube",
                    dir.display()
                );
            }
            None
        }
        SourceSpec::Kube => {
            let client = kube::Client::try_default().await.context(
                "cannot configure a Kubernetes client for --source=kube: run in a cluster or set KUBECONFIG",
            )?;
            Some(client)
        }
    };

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut registry = Registry::with_prefix_and_labels(
        "revplane",
        [("revision".into(), args.revision.to_string().into())].into_iter(),
    );

    let dir_metrics = DirMetrics::default();
    let kube_metrics = KubeMetrics::default();
    match args.source {
        SourceSpec::Dir(_) => dir_metrics.register(&mut registry),
        SourceSpec::Kube => kube_metrics.register(&mut registry),
    }
    let publisher_metrics = PublisherMetrics::default();
    publisher_metrics.register(&mut registry);
    let xds_metrics = XdsMetrics::default();
    xds_metrics.register(&mut registry);
    let inject_metrics = InjectMetrics::default();
    if webhook.is_some() {
        inject_metrics.register(&mut registry);
    }

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let debounce = Debounce {
        quiet: args.debounce_after,
        max: args.debounce_max,
    };
    let readiness = Readiness::new();
    // Held until every source is spawned (and has registered its own guards): the publisher
    // must not find the set empty only because no source has started yet.
    let starting = readiness.block("startup");
    let (publisher, snapshots) =
        Publisher::new(debounce, readiness.clone(), publisher_metrics.clone());
    let injector_views = publisher.injector_views();
    tasks.spawn(
        publisher
            .run(events_rx, shutdown.clone())
            .instrument(tracing::info_span!("publisher")),
    );

    if let Some((cert, listener)) = webhook {
        let injector = Arc::new(Injector::new(
            args.revision.clone(),
            args.namespace.clone(),
            injector_views,
            kube_client.clone().map(kube::Api::all),
            inject_metrics.clone(),
        ));
        tasks.spawn(cert.clone().watch(shutdown.clone()));
        let tls = cert.server_config();
        tasks.spawn(
            inject::server::serve(listener, tls, inject::router(injector), shutdown.clone())
                .instrument(tracing::info_span!("webhook", addr = ?webhook_addr)),
        );
    } else {
        tracing::info!("no --tls-cert/--tls-key: the injection webhook is off");
    }

    let sources = SourceStatus::default();
    match &args.source {
        SourceSpec::Dir(dir) => {
            tasks.spawn(
                dir::run(
                    dir.clone(),
                    DirOptions {
                        revision: args.revision.clone(),
                        rescan_interval: args.rescan_interval,
                        max_file_bytes: args.max_manifest_bytes,
                    },
                    events_tx,
                    sources.clone(),
                    dir_metrics,
                    shutdown.clone(),
                    readiness.block("dir"),
                )
                .instrument(tracing::info_span!("source", dir = %dir.display())),
            );
        }
        SourceSpec::Kube => {
            let source = KubeSource {
                client: kube_client.expect("created above for the kube source"),
                revision: args.revision.clone(),
                namespace: args.namespace.clone(),
            };
            tasks.spawn(
                source
                    .run(
                        events_tx,
                        sources.clone(),
                        kube_metrics,
                        &readiness,
                        shutdown.clone(),
                    )
                    .instrument(tracing::info_span!("source", kind = "kube")),
            );
        }
    }

    starting.done();

    let ctx = Arc::new(
        XdsContext::with_limits(
            RevisionGate::new(args.revision.clone()),
            snapshots.clone(),
            xds_metrics.clone(),
            shutdown.clone(),
            AdmissionLimits {
                new_streams_per_second: args.new_streams_per_second,
                burst: args.new_stream_burst,
                max_wait: args.admission_max_wait,
                push_concurrency: args.push_concurrency,
            },
            Limits {
                max_request_bytes: args.max_request_bytes,
                max_first_request_bytes: args.max_first_request_bytes,
                request_buffer_bytes: args.request_buffer_bytes,
                max_streams_per_connection: args.max_streams_per_connection,
                max_connections: args.max_connections,
                handshake_timeout: args.handshake_timeout,
                keepalive_interval: args.keepalive_interval,
                keepalive_timeout: args.keepalive_timeout,
            },
        )
        .with_max_subscribed_names(args.max_subscribed_names),
    );
    let admin_state = AdminState {
        revision: args.revision.clone(),
        registry: Arc::new(registry),
        snapshots: snapshots.clone(),
        proxies: ctx.proxies.clone(),
        sources,
        readiness,
        debug: admin::DebugLimit::new(args.debug_concurrency as usize),
    };
    let stream_tasks = ctx.tasks.clone();
    let xds_shutdown = shutdown.clone();
    tasks.spawn(
        async move {
            if let Err(e) = xds::serve(xds_listener, ctx).await {
                tracing::error!(error = %e, "xDS server failed; shutting down");
                xds_shutdown.cancel();
            }
            stream_tasks.close();
            stream_tasks.wait().await;
        }
        .instrument(tracing::info_span!("xds", addr = %xds_addr)),
    );
    let admin_shutdown = shutdown.clone();
    tasks.spawn(
        async move {
            if let Err(e) = admin::serve(admin_listener, admin_state, admin_shutdown.clone()).await
            {
                tracing::error!(error = %e, "admin server failed; shutting down");
                admin_shutdown.cancel();
            }
        }
        .instrument(tracing::info_span!("admin", addr = %admin_addr)),
    );
    tasks.close();

    Ok(Server {
        xds_addr,
        admin_addr,
        webhook_addr,
        inject_metrics,
        shutdown,
        publisher_metrics,
        xds_metrics,
        snapshots,
        tasks,
        grace: args.shutdown_grace,
    })
}

impl Server {
    /// Cancels everything and waits at most the grace period for tasks to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until shutdown was requested and tasks ended (or the grace period ran out).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "tasks still running after the shutdown grace period; exiting anyway");
        }
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = start(args).await?;
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing streams with UNAVAILABLE");
        shutdown.cancel();
    });
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
