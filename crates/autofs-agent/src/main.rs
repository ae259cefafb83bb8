//! `autofs-agent`: flags in, library calls out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use autofs_agent::scan_cmd::{self, EXIT_ERROR, Format, ScanArgs};
use autofs_agent::serve::{ServeConfig, TlsFiles};
use autofs_agent::snapshot::StallPolicy;
use autofs_cli::duration;
use autofs_cli::logging::{self, LogFormat};
use clap::{Args, Parser, Subcommand};

/// autofs-inspector node agent: tells whether CRIU could checkpoint this node's autofs mounts now.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// With no subcommand the agent serves, taking `serve`'s flags.
    #[command(flatten)]
    serve: ServeFlags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
struct CommonFlags {
    /// Proc filesystem to inspect (`/host/proc` in a container).
    #[arg(long, env = "AUTOFS_AGENT_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    /// Node name in reports (default: $NODE_NAME, then the hostname).
    #[arg(long, env = "AUTOFS_AGENT_NODE_NAME")]
    node_name: Option<String>,
    /// Log format.
    #[arg(
        long,
        env = "AUTOFS_AGENT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

impl CommonFlags {
    fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
            .unwrap_or_else(|| "unknown".into())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API and Prometheus metrics (the default).
    Serve(Box<ServeFlags>),
    /// Scan this machine once and print one report per autofs mount.
    Scan {
        #[command(flatten)]
        common: CommonFlags,
        /// Print JSON lines (one object per mount, fields as in autofs.v1.MountReport).
        /// From the environment: 1/0, true/false, yes/no, on/off.
        #[arg(long, env = "AUTOFS_AGENT_JSON", value_parser = clap::builder::BoolishValueParser::new())]
        json: bool,
        /// Write CRIU image files (DIR/<mnt_ns>/autofs-<s_dev>.img) for dumpable mounts.
        #[arg(long, value_name = "DIR", env = "AUTOFS_AGENT_CRIU_IMAGES")]
        criu_images: Option<PathBuf>,
        /// Only the workload of this process (host pid): its mount namespace and those made
        /// inside its container, which CRIU dumps with it; the exit code is its verdict.
        #[arg(long, env = "AUTOFS_AGENT_PID")]
        pid: Option<i32>,
        /// With --pid: a mount point CRIU is told is external (`--external mnt[PATH]`, as
        /// runc and crun pass every bind mount: a Kubernetes hostPath volume's container
        /// path); the autofs mounts CRIU then skips do not block (repeatable).
        #[arg(long = "external", value_name = "PATH", requires = "pid")]
        external: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeFlags {
    #[command(flatten)]
    common: CommonFlags,
    /// gRPC listen address. Plaintext stays on loopback unless TLS is configured.
    #[arg(long, env = "AUTOFS_AGENT_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Prometheus listen address (path /metrics).
    #[arg(
        long,
        env = "AUTOFS_AGENT_METRICS_LISTEN",
        default_value = "127.0.0.1:9477"
    )]
    metrics_listen: SocketAddr,
    /// Extra plaintext listener serving only grpc.health.v1 (kubelet probes when TLS is on).
    #[arg(long, env = "AUTOFS_AGENT_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// Background full-scan interval: the safety net behind change detection (new mount
    /// namespaces, anything no event reports); feeds metrics and watchers. A failed scan is
    /// retried after 1 s, 2 s, 4 s, then every 8 s (or this interval, if shorter).
    #[arg(long, env = "AUTOFS_AGENT_SCAN_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    scan_interval: Duration,
    /// Between scans, re-measure the known read ends with FIONREAD this often, so a queue
    /// appearing or draining is seen within about this long (master exits are seen at once).
    #[arg(long, env = "AUTOFS_AGENT_QUEUE_POLL_INTERVAL", default_value = "500ms", value_parser = duration::parse)]
    queue_poll_interval: Duration,
    /// On-demand RPCs reuse a scan younger than this; older ones trigger a fresh scan.
    #[arg(long, env = "AUTOFS_AGENT_MAX_SCAN_AGE", default_value = "1s", value_parser = duration::parse)]
    max_scan_age: Duration,
    /// Server certificate (PEM); enables TLS.
    #[arg(long, env = "AUTOFS_AGENT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "AUTOFS_AGENT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA for client certificates; makes mutual TLS mandatory.
    #[arg(long, env = "AUTOFS_AGENT_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Concurrent ListMounts streams across all clients.
    #[arg(long, env = "AUTOFS_AGENT_MAX_STREAMS", default_value_t = 128)]
    max_streams: usize,
    /// Concurrent WatchMounts streams across all clients (apart from ListMounts: idle
    /// watches never starve lists).
    #[arg(long, env = "AUTOFS_AGENT_MAX_WATCHES", default_value_t = 128)]
    max_watches: usize,
    /// Concurrent ListMounts, and WatchMounts, streams per client: its certificate identity
    /// under mutual TLS, else its IP address.
    #[arg(
        long,
        env = "AUTOFS_AGENT_MAX_STREAMS_PER_CLIENT",
        default_value_t = 32
    )]
    max_streams_per_client: usize,
    /// Concurrent HTTP/2 streams per client connection.
    #[arg(
        long,
        env = "AUTOFS_AGENT_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 32
    )]
    max_streams_per_connection: u32,
    /// Deadline for unary RPCs whose client sets none.
    #[arg(long, env = "AUTOFS_AGENT_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    request_timeout: Duration,
    /// Concurrent gRPC connections (default: what the descriptor limit allows after the
    /// scanner's reserve, at most 1024).
    #[arg(long, env = "AUTOFS_AGENT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// A new connection must finish its TLS handshake and send the HTTP/2 preface (metrics:
    /// its request headers) within this, or it is closed.
    #[arg(long, env = "AUTOFS_AGENT_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    handshake_timeout: Duration,
    /// A scan running longer than this is stalled: health NOT_SERVING, and RPCs answer from
    /// the last good scan instead of waiting.
    #[arg(long, env = "AUTOFS_AGENT_SCAN_STALL_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    scan_stall_timeout: Duration,
    /// While a scan is stalled, RPCs answer from a last good scan up to this old, else
    /// UNAVAILABLE.
    #[arg(long, env = "AUTOFS_AGENT_MAX_STALE_AGE", default_value = "5m", value_parser = duration::parse)]
    max_stale_age: Duration,
    /// Benchmarks only: serve N generated mounts instead of scanning.
    #[arg(long, hide = true, env = "AUTOFS_AGENT_SYNTHETIC_MOUNTS")]
    synthetic_mounts: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Scan {
            common,
            json,
            criu_images,
            pid,
            external,
        }) => {
            init_logging(common.log_format);
            let args = ScanArgs {
                node_name: common.node_name(),
                proc_root: common.proc_root,
                format: if json {
                    Format::JsonLines
                } else {
                    Format::Table
                },
                criu_images,
                pid,
                external,
            };
            scan_cmd::run(&args, &mut std::io::stdout().lock())
        }
        Some(Command::Serve(flags)) => serve(*flags),
        None => serve(cli.serve),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("autofs-agent: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn serve(flags: ServeFlags) -> anyhow::Result<u8> {
    init_logging(flags.common.log_format);
    let config = ServeConfig {
        listen: flags.listen,
        metrics_listen: flags.metrics_listen,
        health_listen: flags.health_listen,
        node_name: flags.common.node_name(),
        proc_root: flags.common.proc_root,
        scan_interval: flags.scan_interval,
        queue_poll_interval: flags.queue_poll_interval,
        max_scan_age: flags.max_scan_age,
        tls: flags
            .tls_cert
            .zip(flags.tls_key)
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: flags.tls_client_ca,
            }),
        max_streams: flags.max_streams,
        max_watches: flags.max_watches,
        max_streams_per_client: flags.max_streams_per_client,
        max_streams_per_connection: flags.max_streams_per_connection,
        request_timeout: flags.request_timeout,
        synthetic_mounts: flags.synthetic_mounts,
        max_connections: flags.max_connections,
        handshake_timeout: flags.handshake_timeout,
        stall: StallPolicy {
            stall_timeout: flags.scan_stall_timeout,
            max_stale_age: flags.max_stale_age,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    let served = runtime.block_on(autofs_agent::serve::run(config));
    // Scans run on a thread of their own that may be stuck in a /proc read; nothing waits
    // for it, and the runtime gets a bounded moment to wind down.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(0)
}

fn init_logging(format: LogFormat) {
    logging::init(format, "info");
}
