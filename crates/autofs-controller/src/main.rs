//! `autofs-controller`: flags in, library calls out, report and exit code back.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use autofs_cli::duration;
use autofs_cli::logging::{self, LogFormat};
use autofs_controller::discovery::Source;
use autofs_controller::{
    BackoffConfig, Collector, CollectorConfig, Target, TlsOptions, WaitEvent, WatchItem, render, v1,
};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Every node answered / the workload is dumpable.
const EXIT_OK: u8 = 0;
/// `check`: the workload is blocked.
const EXIT_BLOCKED: u8 = 1;
/// Bad input, discovery failure, or (`check`) the node could not answer.
const EXIT_ERROR: u8 = 2;
/// Some nodes failed; the report is partial.
const EXIT_PARTIAL: u8 = 3;

/// Asks every autofs-inspector agent of a cluster whether CRIU could checkpoint its autofs
/// mounts now, and merges the answers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Agents as host:port, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "AUTOFS_CONTROLLER_NODES"
    )]
    nodes: Vec<String>,
    /// File with one host:port per line (`#` comments, blank lines allowed).
    #[arg(long, global = true, env = "AUTOFS_CONTROLLER_NODES_FILE")]
    nodes_file: Vec<PathBuf>,
    /// Every A/AAAA record of NAME (a headless Service), each with PORT.
    #[arg(
        long,
        global = true,
        value_name = "NAME:PORT",
        env = "AUTOFS_CONTROLLER_DNS"
    )]
    dns: Option<String>,
    /// Ask this DNS server (IP:PORT) instead of the system resolver.
    #[arg(
        long,
        global = true,
        requires = "dns",
        env = "AUTOFS_CONTROLLER_DNS_SERVER"
    )]
    dns_server: Option<SocketAddr>,
    #[cfg(feature = "kube")]
    #[command(flatten)]
    kube: KubeFlags,
    /// Nodes asked at the same time.
    #[arg(
        long,
        global = true,
        default_value_t = 64,
        env = "AUTOFS_CONTROLLER_CONCURRENCY"
    )]
    concurrency: usize,
    /// Per-node deadline, retries included (e.g. 10s, 500ms); also the deadline of
    /// Kubernetes discovery's retries of an API server shedding load.
    #[arg(long, global = true, default_value = "10s", value_parser = duration::parse, env = "AUTOFS_CONTROLLER_TIMEOUT")]
    timeout: Duration,
    /// Connect timeout of one attempt.
    #[arg(long, global = true, default_value = "3s", value_parser = duration::parse, env = "AUTOFS_CONTROLLER_CONNECT_TIMEOUT")]
    connect_timeout: Duration,
    /// Attempts per node; only UNAVAILABLE is retried.
    #[arg(
        long,
        global = true,
        default_value_t = 4,
        env = "AUTOFS_CONTROLLER_MAX_ATTEMPTS"
    )]
    max_attempts: u32,
    /// A node that sends more mount reports than this fails ("sent more than N mounts").
    #[arg(
        long,
        global = true,
        default_value_t = autofs_controller::DEFAULT_MAX_MOUNTS_PER_NODE,
        env = "AUTOFS_CONTROLLER_MAX_MOUNTS_PER_NODE"
    )]
    max_mounts_per_node: usize,
    /// Memory (MiB) the reports of all nodes may take together; the node that crosses it
    /// fails, the others keep their answers.
    #[arg(
        long,
        global = true,
        default_value_t = autofs_controller::DEFAULT_MAX_REPORT_BYTES >> 20,
        env = "AUTOFS_CONTROLLER_MAX_REPORT_MEMORY"
    )]
    max_report_memory: usize,
    /// CA certificate (PEM) of the agents; enables TLS.
    #[arg(long, global = true, env = "AUTOFS_CONTROLLER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for agents requiring mutual TLS.
    #[arg(long, global = true, requires_all = ["tls_key", "tls_ca"], env = "AUTOFS_CONTROLLER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(
        long,
        global = true,
        requires = "tls_cert",
        env = "AUTOFS_CONTROLLER_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
    /// Name expected in every agent's certificate (default: the endpoint's host).
    #[arg(
        long,
        global = true,
        requires = "tls_ca",
        env = "AUTOFS_CONTROLLER_TLS_DOMAIN"
    )]
    tls_domain: Option<String>,
    /// Output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "table",
        env = "AUTOFS_CONTROLLER_OUTPUT"
    )]
    output: Output,
    /// Log format (logs go to stderr; RUST_LOG filters).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "AUTOFS_CONTROLLER_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Benchmarks only: accept several endpoints answering as the same node.
    #[arg(long, global = true, hide = true)]
    allow_duplicate_nodes: bool,
}

#[cfg(feature = "kube")]
#[derive(Debug, Args)]
struct KubeFlags {
    /// Discover agents from the Kubernetes API: pods matching this label selector.
    #[arg(
        long,
        global = true,
        value_name = "SELECTOR",
        env = "AUTOFS_CONTROLLER_KUBE_SELECTOR"
    )]
    kube_selector: Option<String>,
    /// Namespace of the agent pods.
    #[arg(
        long,
        global = true,
        default_value = "autofs-inspector",
        env = "AUTOFS_CONTROLLER_KUBE_NAMESPACE"
    )]
    kube_namespace: String,
    /// The agents' gRPC port.
    #[arg(
        long,
        global = true,
        default_value_t = 50051,
        env = "AUTOFS_CONTROLLER_KUBE_PORT"
    )]
    kube_port: u16,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the pod's service
    /// account). Exec plugins, client certificates, tokens and OIDC all work.
    #[arg(long, global = true, env = "AUTOFS_CONTROLLER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Args, Default)]
struct FilterFlags {
    /// Only the mount namespace of this host pid.
    #[arg(long)]
    pid: Option<i32>,
    /// Only mount namespaces of this container (id or unique prefix).
    #[arg(long)]
    container: Option<String>,
    /// Only mount namespaces of this pod UID.
    #[arg(long)]
    pod: Option<String>,
    /// Only this mount namespace inode.
    #[arg(long)]
    mnt_ns: Option<u64>,
    /// Only these states (repeatable or comma-separated): active, catatonic, interim,
    /// orphaned, unsupported, error.
    #[arg(long = "state", value_parser = parse_state, value_delimiter = ',')]
    states: Vec<v1::MountState>,
}

impl FilterFlags {
    fn request(&self) -> v1::ListMountsRequest {
        v1::ListMountsRequest {
            pid: self.pid,
            container_id: self.container.clone().unwrap_or_default(),
            pod_uid: self.pod.clone().unwrap_or_default(),
            mnt_ns: self.mnt_ns,
            states: self.states.iter().map(|s| *s as i32).collect(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every autofs mount of every node; exit 0 when every node answered, 3 when partial.
    Collect(FilterFlags),
    /// Is a workload on a node migratable now? Exit 0 dumpable, 1 blocked, 2 error.
    Check(CheckFlags),
    /// One merged stream of mount events from every node (reconnects by itself).
    Watch {
        #[command(flatten)]
        filter: FilterFlags,
        /// Stop after this many mount events (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_events: Option<u64>,
        /// With --dns, --nodes-file or --kube-selector: how often discovery runs again to
        /// follow agents that moved (rolling updates) and nodes that joined or left; sooner,
        /// with backoff, after a node's stream breaks.
        /// At least 1s.
        #[arg(long, default_value = "30s", value_parser = parse_refresh_interval)]
        refresh_interval: Duration,
    },
    /// The agents: version, kernel, pipe_ino support, reachability; exit 3 if any failed.
    Nodes,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "container", "pod"])))]
struct CheckFlags {
    /// The node (as its agent names it, or its endpoint).
    #[arg(long)]
    node: String,
    /// Host pid of any process of the workload.
    #[arg(long)]
    pid: Option<i32>,
    /// Container id (or unique prefix).
    #[arg(long)]
    container: Option<String>,
    /// Pod UID (every container of the pod).
    #[arg(long)]
    pod: Option<String>,
    /// A mount point CRIU is told is external (`--external mnt[PATH]`), as seen in the
    /// workload: with runc, crun, Kubernetes or podman, every hostPath or bind volume's
    /// container path; none for a bare `criu dump`. Repeatable.
    #[arg(long = "external", value_name = "PATH")]
    external: Vec<String>,
    /// Wait up to this long until nothing blocks (WaitMigratable): exit 0 as soon as the
    /// workload is dumpable, 1 at the deadline or at once when a blocker cannot clear.
    #[arg(long, value_parser = duration::parse)]
    wait: Option<Duration>,
}

fn parse_state(s: &str) -> Result<v1::MountState, String> {
    <v1::MountState as autofs_api::ShortName>::from_short_name(&s.to_ascii_uppercase())
        .filter(|s| *s != v1::MountState::Unspecified)
        .ok_or_else(|| format!("unknown state `{s}`"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("autofs-controller: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("autofs-controller: {}", render::error_text(e.as_ref()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn sources(g: &Global) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    if !g.nodes.is_empty() {
        sources.push(Source::Static(g.nodes.clone()));
    }
    sources.extend(g.nodes_file.iter().cloned().map(Source::File));
    if let Some(dns) = &g.dns {
        sources.push(Source::dns(dns, g.dns_server)?);
    }
    #[cfg(feature = "kube")]
    if let Some(selector) = &g.kube.kube_selector {
        use autofs_controller::discovery::kube::{Credentials, KubeDiscovery};
        sources.push(Source::Kube(KubeDiscovery {
            namespace: g.kube.kube_namespace.clone(),
            selector: selector.clone(),
            port: g.kube.kube_port,
            credentials: g
                .kube
                .kubeconfig
                .clone()
                .map_or(Credentials::Infer, Credentials::Kubeconfig),
            timeout: g.timeout,
        }));
    }
    Ok(sources)
}

async fn collector(g: &Global, refresh_interval: Duration) -> anyhow::Result<Collector> {
    let config = CollectorConfig {
        concurrency: g.concurrency,
        timeout: g.timeout,
        connect_timeout: g.connect_timeout,
        max_attempts: g.max_attempts,
        backoff: BackoffConfig::default(),
        tls: g.tls_ca.clone().map(|ca| TlsOptions {
            ca,
            cert: g.tls_cert.clone(),
            key: g.tls_key.clone(),
            domain: g.tls_domain.clone(),
        }),
        unique_nodes: !g.allow_duplicate_nodes,
        max_mounts_per_node: g.max_mounts_per_node,
        max_report_bytes: g.max_report_memory.saturating_mul(1 << 20),
        refresh_interval,
    };
    // The sources are kept: a wait runs them again to follow its node's agent.
    Ok(Collector::discover(sources(g)?, config).await?)
}

/// A host pid names a different process on every node: asked of several agents, `--pid` would
/// answer with unrelated processes' mount namespaces.
fn one_node_for_a_pid(filter: &FilterFlags, agents: usize) -> anyhow::Result<()> {
    match filter.pid {
        Some(pid) if agents > 1 => Err(anyhow::anyhow!(
            "--pid {pid}: a host pid names a different process on each of the {agents} agents; ask one node (`check --node NAME --pid {pid}`, or one endpoint in --nodes), or filter by --container, --pod or --mnt-ns"
        )),
        _ => Ok(()),
    }
}

/// `--refresh-interval`: a duration of at least [`autofs_controller::watch::MIN_REFRESH_INTERVAL`].
fn parse_refresh_interval(raw: &str) -> Result<Duration, String> {
    let d = duration::parse(raw)?;
    let least = autofs_controller::watch::MIN_REFRESH_INTERVAL;
    if d < least {
        return Err(format!(
            "`{raw}` is under {}s: discovery would run too often",
            least.as_secs()
        ));
    }
    Ok(d)
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    print(&format!("{v}\n"))
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = &cli.global;
    let refresh_interval = match &cli.command {
        Command::Watch {
            refresh_interval, ..
        } => *refresh_interval,
        _ => autofs_controller::DEFAULT_REFRESH_INTERVAL,
    };
    let collector = collector(g, refresh_interval).await?;
    if let Command::Collect(filter) | Command::Watch { filter, .. } = &cli.command {
        one_node_for_a_pid(filter, collector.endpoints().len())?;
    }
    match cli.command {
        Command::Collect(filter) => {
            let report = collector.collect(filter.request()).await;
            match g.output {
                Output::Table => print(&render::collect_table(&report))?,
                Output::Json => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    render::write_collect_json(&report, &mut out)?;
                    out.flush()?;
                }
            }
            // Every agent gets the same request: one refused as invalid is bad input.
            let invalid = report.failed().any(|e| e.kind.is_invalid_request());
            Ok(if invalid {
                EXIT_ERROR
            } else if report.is_complete() {
                EXIT_OK
            } else {
                EXIT_PARTIAL
            })
        }
        Command::Nodes => {
            let nodes = collector.nodes().await;
            match g.output {
                Output::Table => print(&render::nodes_table(&nodes))?,
                Output::Json => print_json(&render::nodes_json(&nodes))?,
            }
            Ok(if nodes.iter().all(|n| n.result.is_ok()) {
                EXIT_OK
            } else {
                EXIT_PARTIAL
            })
        }
        Command::Check(flags) => {
            let (target, what) = match (flags.pid, flags.container, flags.pod) {
                (Some(pid), _, _) => (Target::Pid(pid), format!("pid {pid}")),
                (_, Some(id), _) => (Target::ContainerId(id.clone()), format!("container {id}")),
                (_, _, Some(uid)) => (Target::PodUid(uid.clone()), format!("pod {uid}")),
                _ => anyhow::bail!("give --pid, --container or --pod"),
            };
            let target = autofs_controller::Workload {
                target,
                external_mounts: flags.external,
            };
            if let Some(wait) = flags.wait {
                let progress_what = what.clone();
                let table = matches!(g.output, Output::Table);
                // Table: every event on stdout. JSON: stdout is the one closing document, so
                // only how the wait followed the node's agent is said, on stderr.
                let outcome = collector
                    .wait_migratable_events(&flags.node, target, wait, move |event| {
                        let line = render::wait_event(&progress_what, event);
                        if table {
                            let _ = print(&line);
                        } else if !matches!(event, WaitEvent::Verdict(_)) {
                            eprint!("{line}");
                        }
                    })
                    .await
                    .with_context(|| format!("waiting for {what} on node {}", flags.node))?;
                match g.output {
                    Output::Table => print(&render::wait_text(&what, &outcome, wait))?,
                    Output::Json => print_json(&render::wait_json(&outcome, wait))?,
                }
                return Ok(if outcome.end == autofs_controller::WaitEnd::Dumpable {
                    EXIT_OK
                } else {
                    EXIT_BLOCKED
                });
            }
            let outcome = collector
                .check(&flags.node, target)
                .await
                .with_context(|| format!("checking {what} on node {}", flags.node))?;
            match g.output {
                Output::Table => print(&render::check_text(&what, &outcome))?,
                Output::Json => print_json(&render::check_json(&outcome))?,
            }
            Ok(if outcome.response.dumpable {
                EXIT_OK
            } else {
                EXIT_BLOCKED
            })
        }
        Command::Watch {
            filter, max_events, ..
        } => {
            let mut stream = collector.watch(filter.request());
            let mut events = 0u64;
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = tokio::signal::ctrl_c() => return Ok(EXIT_OK),
                };
                // The stream ends only when no node is followed any more: every agent was not
                // ready or refused the watch. Watching nothing is no success.
                let Some(item) = item else {
                    eprintln!(
                        "autofs-controller: no node is watched (every agent is not ready or refused the watch)"
                    );
                    return Ok(EXIT_ERROR);
                };
                match g.output {
                    Output::Table => print(&format!("{}\n", render::watch_line(&item)))?,
                    Output::Json => print_json(&render::watch_json(&item))?,
                }
                // Every agent gets the same filter: one refused as invalid is bad input (as
                // for `collect`), and a watch that runs discovery again would otherwise go on
                // watching nothing.
                if let WatchItem::Refused { error, .. } = &item
                    && error.kind.is_invalid_request()
                {
                    eprintln!("autofs-controller: the agents refuse this filter: {error}");
                    return Ok(EXIT_ERROR);
                }
                if matches!(item, WatchItem::Event { .. }) {
                    events += 1;
                    if max_events.is_some_and(|m| events >= m) {
                        return Ok(EXIT_OK);
                    }
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    logging::init(format, "warn");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_repeatable_and_comma_separated() {
        let cli = Cli::try_parse_from([
            "autofs-controller",
            "collect",
            "--state",
            "active,Interim",
            "--state",
            "error",
        ])
        .unwrap();
        let Command::Collect(filter) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            filter.states,
            [
                v1::MountState::Active,
                v1::MountState::Interim,
                v1::MountState::Error
            ]
        );
    }
}
