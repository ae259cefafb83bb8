//! The real `autofs-agent` process of a test or benchmark, started one way everywhere.
//!
//! An [`AgentBuilder`] says which binary, flags, environment and wrappers (a network
//! namespace, an `RLIMIT_NOFILE`, a user or pid namespace) to run `autofs-agent serve` with;
//! [`AgentBuilder::spawn`] starts it with `--log-format json` and returns once the agent has
//! logged `autofs-agent listening`, with the addresses it bound. No sleeps: the wait is for
//! that log line, bounded only by a generous hang guard ([`AgentBuilder::hang_guard`]).
//!
//! The [`AgentProcess`] keeps draining the agent's stderr (a full pipe would block its
//! logging), and on drop SIGKILLs and reaps it, also when the test fails; it prints the log
//! when the test is panicking. The agent gets `PR_SET_PDEATHSIG` from a thread that lives as
//! long as the test process ([`crate::child::spawn_detached`]), so it dies with the test
//! process even when no `Drop` runs.
//!
//! ```no_run
//! use autofs_testkit::agent::AgentBuilder;
//! let agent = AgentBuilder::workspace()
//!     .unwrap()
//!     .scan_interval("200ms")
//!     .args(["--max-watches", "8"])
//!     .start();
//! println!("gRPC on {}, pid {}", agent.grpc, agent.pid());
//! ```

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{bad, binaries, child};

/// The `message` of the agent's JSON log line that carries the bound addresses.
pub const LISTENING: &str = "autofs-agent listening";

/// The `message` of the agent's JSON log line once its first scan is done (health SERVING).
pub const SERVING: &str = "first scan done; serving";

/// How an agent of a test is run; build it up, then [`AgentBuilder::spawn`] it (any number of
/// times: each spawn is a new process with the same command line).
///
/// Flags given with [`AgentBuilder::args`] (`--flag value` or `--flag=value`) replace the
/// builder's own `--listen`, `--metrics-listen` and `--scan-interval`, so a test can override
/// a default of its harness.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    binary: PathBuf,
    wrappers: Vec<Vec<OsString>>,
    pid_namespace: bool,
    node: Option<String>,
    listen: String,
    metrics_listen: String,
    scan_interval: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    hang_guard: Duration,
}

impl AgentBuilder {
    /// An agent run from `binary`, on `127.0.0.1:0` for gRPC and metrics, with the agent's
    /// default scan interval and a unique node name.
    pub fn new(binary: impl Into<PathBuf>) -> AgentBuilder {
        AgentBuilder {
            binary: binary.into(),
            wrappers: Vec::new(),
            pid_namespace: false,
            node: None,
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            scan_interval: None,
            args: Vec::new(),
            env: Vec::new(),
            hang_guard: Duration::from_secs(60),
        }
    }

    /// [`AgentBuilder::new`] with the workspace's `autofs-agent` ([`binaries::AGENT`]: the
    /// `$AUTOFS_AGENT_BIN` file, else the one next to the test binary when it is newer than
    /// its sources, else built now).
    ///
    /// # Errors
    ///
    /// The binary is named but missing, or building it failed.
    pub fn workspace() -> io::Result<AgentBuilder> {
        binaries::AGENT
            .locate()
            .map(|(bin, _)| AgentBuilder::new(bin))
    }

    /// `--node-name` (default: `testkit-node-<test pid>-<sequence>`, unique per process).
    pub fn node_name(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// `--listen`, the gRPC address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_owned();
        self
    }

    /// `--metrics-listen`, the Prometheus address (default `127.0.0.1:0`).
    pub fn metrics_listen(mut self, addr: &str) -> Self {
        self.metrics_listen = addr.to_owned();
        self
    }

    /// `--scan-interval` (a humantime duration such as `200ms`; default: the agent's own).
    pub fn scan_interval(mut self, interval: &str) -> Self {
        self.scan_interval = Some(interval.to_owned());
        self
    }

    /// `--proc-root`: the agent reads this tree instead of `/proc`.
    pub fn proc_root(self, root: &Path) -> Self {
        self.arg("--proc-root").arg(root)
    }

    /// `--tls-cert` and `--tls-key`: the agent serves TLS with this identity (PEM files).
    pub fn tls(self, cert: &Path, key: &Path) -> Self {
        self.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key)
    }

    /// `--tls-client-ca`: the agent requires client certificates signed by this CA (PEM).
    pub fn tls_client_ca(self, ca: &Path) -> Self {
        self.arg("--tls-client-ca").arg(ca)
    }

    /// One more argument after the builder's flags.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments after the builder's flags.
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the agent. The agent never inherits `RUST_LOG` nor any
    /// `AUTOFS_AGENT_*` variable of the test: only the builder configures it.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the agent through `wrapper`, a command that execs its arguments in the same
    /// process (`prlimit ... --`, `unshare --user`, `ip netns exec NS`), so the pid is still
    /// the agent's. Wrappers nest in the order given, the first outermost.
    pub fn wrapper<I>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.wrappers
            .push(wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect());
        self
    }

    /// Runs the agent inside network namespace `netns` (`ip netns exec`).
    pub fn netns(self, netns: &str) -> Self {
        self.wrapper(["ip", "netns", "exec", netns])
    }

    /// Sets `RLIMIT_NOFILE` (soft and hard) of the agent to `nofile` (`prlimit`).
    pub fn nofile(self, nofile: u64) -> Self {
        let limit = format!("--nofile={nofile}:{nofile}");
        self.wrapper(["prlimit", limit.as_str(), "--"])
    }

    /// Runs the agent as pid 1 of a new pid namespace, as in a container (`unshare --pid
    /// --fork --kill-child`, util-linux). [`AgentProcess::pid`] is then the agent's host pid,
    /// and [`AgentProcess::wait_exit`] reports `unshare`'s exit, which is the agent's.
    pub fn pid_namespace(mut self) -> Self {
        self.pid_namespace = true;
        self.wrapper(["unshare", "--pid", "--fork", "--kill-child"])
    }

    /// The longest wait for the `listening` log line before [`AgentBuilder::spawn`] gives up
    /// (default 60 s: a guard against a hang on a busy machine, not a timing assertion).
    pub fn hang_guard(mut self, guard: Duration) -> Self {
        self.hang_guard = guard;
        self
    }

    /// The node name the next spawn uses, made unique now if none was given.
    fn resolved(&self) -> AgentBuilder {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut b = self.clone();
        b.node.get_or_insert_with(|| {
            format!(
                "testkit-node-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            )
        });
        b
    }

    /// The command line `[wrappers..., binary, serve, flags...]`.
    fn command(&self, node: &str) -> Command {
        let mut argv: Vec<OsString> = self.wrappers.iter().flatten().cloned().collect();
        argv.push(self.binary.clone().into());
        let given = |flag: &str| {
            self.args.iter().any(|a| {
                a.to_str()
                    .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
            })
        };
        let mut flags: Vec<(&str, &str)> = vec![("--log-format", "json"), ("--node-name", node)];
        for (flag, value) in [
            ("--listen", Some(&self.listen)),
            ("--metrics-listen", Some(&self.metrics_listen)),
            ("--scan-interval", self.scan_interval.as_ref()),
        ] {
            if let Some(value) = value
                && !given(flag)
            {
                flags.push((flag, value));
            }
        }
        argv.push("serve".into());
        argv.extend(flags.iter().flat_map(|(f, v)| [f.into(), v.into()]));
        argv.extend(self.args.iter().cloned());

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for (key, _) in std::env::vars_os() {
            if key == "RUST_LOG" || key.to_string_lossy().starts_with("AUTOFS_AGENT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the agent and waits until it logs that it listens.
    ///
    /// # Errors
    ///
    /// The process cannot be spawned, exits or closes its stderr before it listens, does not
    /// listen within the hang guard, or logs a `listening` line without its addresses or
    /// with another node name. The error carries everything the agent logged.
    pub fn spawn(&self) -> io::Result<AgentProcess> {
        let builder = self.resolved();
        let node = builder.node.clone().unwrap_or_default();
        let cmd = builder.command(&node);
        let program = cmd.get_program().to_owned();
        let child = child::spawn_detached(cmd)
            .map_err(|e| bad(format!("spawning {}: {e}", program.to_string_lossy())))?;
        let pid = i32::try_from(child.id()).map_err(|e| bad(e.to_string()))?;
        let mut agent = AgentProcess {
            child,
            pid,
            grpc: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: SocketAddr::from(([0, 0, 0, 0], 0)),
            node,
            logs: Arc::new(Mutex::new(Vec::new())),
            log_end: None,
            exited: None,
            builder,
        };
        // From here on `agent` owns the child: any error below kills and reaps it.
        let lines = agent.drain_stderr();
        let fields = agent.wait_listening(&lines)?;
        let addr = |key: &str| -> io::Result<SocketAddr> {
            fields[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| bad(format!("no `{key}` address in the agent's line {fields}")))
        };
        agent.grpc = addr("grpc")?;
        agent.metrics = addr("metrics")?;
        if fields["node"] != agent.node.as_str() {
            return Err(bad(format!(
                "the agent says it is node {}, not {:?}",
                fields["node"], agent.node
            )));
        }
        if agent.builder.pid_namespace {
            agent.pid = agent.only_child()?;
        }
        Ok(agent)
    }

    /// [`AgentBuilder::spawn`], panicking with the reason (and the agent's log) on failure.
    ///
    /// # Panics
    ///
    /// When [`AgentBuilder::spawn`] fails, with its error.
    #[track_caller]
    pub fn start(&self) -> AgentProcess {
        self.spawn()
            .unwrap_or_else(|e| panic!("cannot start autofs-agent: {e}"))
    }
}

/// A running `autofs-agent serve` that has said it listens; SIGKILLed and reaped on drop.
pub struct AgentProcess {
    child: Child,
    pid: i32,
    /// The gRPC address it bound.
    pub grpc: SocketAddr,
    /// The Prometheus address it bound.
    pub metrics: SocketAddr,
    /// The node name it reports.
    pub node: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// Disconnected once the stderr reader has reached EOF: every line is in `logs`.
    log_end: Option<mpsc::Receiver<()>>,
    exited: Option<ExitStatus>,
    builder: AgentBuilder,
}

impl std::fmt::Debug for AgentProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentProcess")
            .field("pid", &self.pid)
            .field("grpc", &self.grpc)
            .field("metrics", &self.metrics)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AgentProcess {
    /// Collects stderr lines into the log for the agent's whole life; the returned channel
    /// sees them too, until the receiver is dropped.
    fn drain_stderr(&mut self) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        self.log_end = Some(end_rx);
        let sink = self.logs.clone();
        if let Some(stderr) = self.child.stderr.take() {
            std::thread::spawn(move || {
                let _end = end_tx;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        rx
    }

    /// The `fields` of the `listening` JSON line.
    fn wait_listening(&mut self, lines: &mpsc::Receiver<String>) -> io::Result<Value> {
        let guard = self.builder.hang_guard;
        let deadline = Instant::now() + guard;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.failed(&format!("did not say it listens within {guard:?}")));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    return Err(self.failed(&format!(
                        "closed its stderr before it said it listens (exit: {status:?})"
                    )));
                }
            };
            if let Ok(mut json) = serde_json::from_str::<Value>(&line)
                && json["fields"]["message"] == LISTENING
            {
                return Ok(json["fields"].take());
            }
        }
    }

    fn failed(&self, what: &str) -> io::Error {
        bad(format!(
            "autofs-agent {} {what}; its log:\n{}",
            self.node,
            self.log_text()
        ))
    }

    /// The one child of the wrapper that forks (`unshare --fork`): the agent itself.
    fn only_child(&self) -> io::Result<i32> {
        let outer = self.child.id();
        let path = format!("/proc/{outer}/task/{outer}/children");
        let children = std::fs::read_to_string(&path).map_err(|e| bad(format!("{path}: {e}")))?;
        match children
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<i32>, _>>()
            .as_deref()
        {
            Ok([agent]) => Ok(*agent),
            _ => Err(self.failed(&format!("runs under a wrapper with children {children:?}"))),
        }
    }

    /// The agent's host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Everything the agent logged so far, one line each.
    pub fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// How many lines the agent logged so far contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until the agent logs that its first scan is done. It says it listens before
    /// that scan, and until then every request that needs a scan waits for it: a test whose
    /// deadline must not cover it waits here first (health turns SERVING at the same time).
    ///
    /// # Panics
    ///
    /// When the agent exits first, or has not done its first scan within the hang guard.
    #[track_caller]
    pub fn wait_first_scan(&mut self) {
        let guard = self.builder.hang_guard;
        let deadline = Instant::now() + guard;
        while self.log_lines_with(SERVING) == 0 {
            if let Some(status) = self.wait_exit(Duration::ZERO) {
                panic!(
                    "{}",
                    self.failed(&format!("exited before its first scan ({status})"))
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                self.failed(&format!("did not finish its first scan within {guard:?}"))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the agent.
    ///
    /// # Panics
    ///
    /// When kill(2) fails (the agent was reaped already).
    #[track_caller]
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid), signal)
            .unwrap_or_else(|e| panic!("sending {signal} to the agent: {e}"));
    }

    /// Waits up to `timeout` for the agent (or its pid-namespace wrapper, which exits with
    /// the agent's code) to exit, reaping it; its status, if it did. Once it has, the log
    /// holds every line the agent wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                self.read_log_to_end();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs (after a SIGCONT, in case a test stopped it) and reaps the agent.
    pub fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // Our own unreaped child: its pid cannot have been reused.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGCONT);
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        self.read_log_to_end();
    }

    /// Waits until the stderr reader has read the exited agent's last line (its thread may
    /// not have run since the agent wrote it). Bounded by the hang guard, in case something
    /// the agent started still holds the pipe open.
    fn read_log_to_end(&mut self) {
        if let Some(end) = &self.log_end {
            let _ = end.recv_timeout(self.builder.hang_guard);
        }
    }

    /// Kills the agent and starts it again with the same command line (same addresses when
    /// they were fixed, same node name).
    ///
    /// # Errors
    ///
    /// As [`AgentBuilder::spawn`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        *self = self.builder.spawn()?;
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- autofs-agent {} log ---\n{}",
                self.node,
                self.log_text()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(builder: &AgentBuilder) -> Vec<String> {
        let cmd = builder.command("n1");
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_flag_among_the_args_replaces_the_builders_default_in_either_form() {
        let builder = AgentBuilder::new("/bin/agent")
            .scan_interval("200ms")
            .args(["--scan-interval=1h", "--listen", "10.0.0.1:1"]);
        assert_eq!(
            argv(&builder),
            [
                "/bin/agent",
                "serve",
                "--log-format",
                "json",
                "--node-name",
                "n1",
                "--metrics-listen",
                "127.0.0.1:0",
                "--scan-interval=1h",
                "--listen",
                "10.0.0.1:1",
            ]
        );
    }

    #[test]
    fn wrappers_nest_outermost_first_and_the_agent_gets_the_builders_environment() {
        let builder = AgentBuilder::new("/bin/agent")
            .netns("ns1")
            .nofile(64)
            .env("RUST_LOG", "warn");
        let args = argv(&builder);
        assert_eq!(
            args[..8],
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "prlimit",
                "--nofile=64:64",
                "--",
                "/bin/agent"
            ]
        );
        let cmd = builder.command("n1");
        let rust_log: Vec<_> = cmd.get_envs().filter(|(k, _)| *k == "RUST_LOG").collect();
        assert_eq!(
            rust_log,
            [(OsStr::new("RUST_LOG"), Some(OsStr::new("warn")))]
        );
    }

    #[test]
    fn each_spawn_without_a_node_name_gets_a_unique_one() {
        let builder = AgentBuilder::new("/bin/agent");
        let (a, b) = (builder.resolved().node, builder.resolved().node);
        assert_ne!(a, b);
        assert!(a.unwrap().starts_with("testkit-node-"));
        let named = builder.node_name("worker-1");
        assert_eq!(named.resolved().node.as_deref(), Some("worker-1"));
    }
}
