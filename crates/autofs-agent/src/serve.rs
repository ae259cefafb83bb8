//! `autofs-agent serve`: wires the inventory, background scanner, gRPC service (with health
//! and reflection), metrics listener, TLS and graceful shutdown together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use autofs_api::v1::autofs_inspector_server::AutofsInspectorServer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::background;
use crate::change_watch;
use crate::fds::FdBudget;
use crate::listener::{self, Admission};
use crate::metrics_endpoint;
use crate::mount_watch;
use crate::service::{AgentService, ServiceConfig};
use crate::snapshot::{Inventory, StallPolicy};
use crate::synthetic::Synthetic;

/// Requests larger than this are refused (every request of the API is tiny).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Streams still open after a shutdown signal get this long to end before the agent exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Idle time after which TCP keepalive probes a connection's peer.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS), if required.
    pub client_ca: Option<PathBuf>,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Prometheus listen address.
    pub metrics_listen: SocketAddr,
    /// Optional plaintext listener serving only grpc.health.v1 (for kubelet probes under TLS).
    pub health_listen: Option<SocketAddr>,
    /// Proc root to scan.
    pub proc_root: PathBuf,
    /// Background scan interval (the safety net behind change detection).
    pub scan_interval: Duration,
    /// How often the known read ends are re-measured with `FIONREAD` between scans.
    pub queue_poll_interval: Duration,
    /// On-demand RPCs reuse a scan younger than this.
    pub max_scan_age: Duration,
    /// Node name.
    pub node_name: String,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Concurrent ListMounts streams across clients.
    pub max_streams: usize,
    /// Concurrent WatchMounts streams across clients.
    pub max_watches: usize,
    /// Concurrent streams of each kind per client.
    pub max_streams_per_client: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Deadline for unary RPCs when the client sets none.
    pub request_timeout: Duration,
    /// Serve a generated report set instead of scanning (benchmarks only).
    pub synthetic_mounts: Option<usize>,
    /// Cap of concurrent gRPC connections (default: from the descriptor limit).
    pub max_connections: Option<usize>,
    /// Deadline for the TLS handshake and the HTTP/2 preface of a new connection.
    pub handshake_timeout: Duration,
    /// Scan stall bound and how old answers may be while a scan hangs.
    pub stall: StallPolicy,
}

/// Runs the agent until SIGTERM or SIGINT; then ends streams cleanly and returns.
///
/// # Errors
///
/// Only while starting, before anything is served: `RLIMIT_NOFILE` cannot be read or raised; a
/// global metrics recorder is already installed; the proc root cannot be opened
/// ([`autofs_core::Error::ProcRoot`]); the scan or queue-poll thread cannot be spawned; the gRPC,
/// metrics or health address cannot be listened on; the TLS files are unusable
/// ([`crate::tls::TlsError`]); the reflection service refuses the descriptor sets; the signal
/// handlers cannot be installed. Once listening it returns `Ok` at the signal.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let nofile = crate::fds::raise_nofile_limit().context("cannot read RLIMIT_NOFILE")?;
    let budget = FdBudget::split(nofile, config.max_connections);
    tracing::debug!(?budget, "descriptor budget");
    if budget.is_cramped() {
        tracing::warn!(
            nofile = budget.nofile,
            "the descriptor limit is too low for scans, watches and connections: scans may fail with EMFILE (raise RLIMIT_NOFILE, e.g. ulimit -n 1024)"
        );
    }
    let metrics = crate::metrics::install()?;
    let inventory = match config.synthetic_mounts {
        Some(n) => Inventory::new(Synthetic::new(n, &config.node_name), config.stall),
        None => Inventory::new(
            autofs_core::Scanner::new(&config.proc_root, &config.node_name)?,
            config.stall,
        ),
    };
    let inventory = Arc::new(inventory.context("cannot start the scan thread")?);
    inventory.observe(Box::new(crate::metrics::ScanMetrics::default()));

    let grpc_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.listen))?;
    let metrics_listener = metrics_endpoint::bind(config.metrics_listen).await?;
    let health_listener = match config.health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for health checks on {addr}"))?,
        ),
        None => None,
    };
    if config.tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "serving gRPC in PLAINTEXT on a non-loopback address: anyone who can reach it can read this node's mount and process details; configure --tls-cert/--tls-key (and --tls-client-ca)"
        );
    }
    let tls = config
        .tls
        .as_ref()
        .map(|t| crate::tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref()))
        .transpose()?;
    let admission = |name, max_connections, tls, http2| Admission {
        name,
        max_connections,
        handshake_timeout: config.handshake_timeout,
        keepalive: TCP_KEEPALIVE,
        tls,
        http2,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    background::set_health(&health, ServingStatus::NotServing).await;

    let service = AgentService::new(
        inventory.clone(),
        ServiceConfig {
            node_name: config.node_name.clone(),
            max_scan_age: config.max_scan_age,
            scan_interval: config.scan_interval,
            queue_poll_interval: config.queue_poll_interval,
            max_streams: config.max_streams,
            max_watches: config.max_watches,
            max_streams_per_client: config.max_streams_per_client,
        },
        stop_rx.clone(),
    );
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(autofs_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(autofs_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // TCP keepalive and TLS are applied by the listener (see `listener`), not here.
    let router = Server::builder()
        .max_concurrent_streams(Some(config.max_streams_per_connection))
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service.clone())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AutofsInspectorServer::new(service)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(4 * 1024 * 1024),
        );

    let changed = Arc::new(Notify::new());
    // Before the first scan: the mount-table watcher adopts the tables each scan read.
    let mount_watch = mount_watch::spawn(
        inventory.clone(),
        budget.watched_namespaces,
        changed.clone(),
        stop_rx.clone(),
    )?;
    let scanner = tokio::spawn(background::run(
        inventory.clone(),
        config.scan_interval,
        changed.clone(),
        stop_rx.clone(),
    ));
    let supervisor = tokio::spawn(background::supervise(
        inventory.clone(),
        health.clone(),
        stop_rx.clone(),
    ));
    let change_watch = tokio::spawn(change_watch::run(
        inventory.clone(),
        budget.watched_processes,
        changed.clone(),
        stop_rx.clone(),
    ));
    change_watch::spawn_queue_poll(
        inventory.clone(),
        config.queue_poll_interval,
        changed.clone(),
        stop_rx.clone(),
        tokio::runtime::Handle::current(),
    )?;

    // Installed before the agent says it listens: a SIGTERM sent as soon as it is ready must
    // not kill it mid-stream (default action) nor, as PID 1, be dropped for lack of a handler.
    let shutdown = shutdown_signal()?;
    tracing::info!(
        grpc = %grpc_listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        health = ?health_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        node = %config.node_name,
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        max_connections = budget.grpc_connections,
        nofile = budget.nofile,
        "autofs-agent listening"
    );

    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let grpc = tokio::spawn(router.serve_with_incoming_shutdown(
        listener::incoming(
            grpc_listener,
            admission("grpc", budget.grpc_connections, tls, true),
        ),
        stopped(),
    ));
    let metrics_server = tokio::spawn(metrics_endpoint::serve(
        listener::incoming(
            metrics_listener,
            admission("metrics", budget.metrics_connections, None, false),
        ),
        metrics,
        config.handshake_timeout,
        stopped(),
    ));
    let health_server = health_listener.map(|listener| {
        tokio::spawn(
            Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .add_service(health_service)
                .serve_with_incoming_shutdown(
                    listener::incoming(
                        listener,
                        admission("health", budget.health_connections, None, true),
                    ),
                    stopped(),
                ),
        )
    });

    let signal = shutdown.await;
    tracing::info!(signal, "shutting down: ending streams");
    let _ = stop_tx.send(true);
    background::set_health(&health, ServingStatus::NotServing).await;
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = grpc.await;
        let _ = metrics_server.await;
        if let Some(h) = health_server {
            let _ = h.await;
        }
        let _ = scanner.await;
        let _ = supervisor.await;
        let _ = change_watch.await;
        if let Some(mount_watch) = mount_watch {
            let _ = mount_watch.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; exiting anyway");
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now (handled explicitly, so it also works as
/// PID 1) and returns a future that resolves to the name of the first one received.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
