//! Harness of the end-to-end tests: starts the real `autofs-agent` binary on `127.0.0.1:0`
//! ports, finds its addresses in its JSON log, talks to it through real tonic clients and
//! kills it on drop (also when the test fails or the test process dies).
//!
//! Other test processes create their own autofs mounts on the same machine at the same time,
//! so every assertion about mounts filters by the scenario's mount namespace.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use autofs_testkit::{Daemon, Requester, RequesterOutcome, Scenario};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Generous bound for anything that should happen "soon" (shared 2-core machine).
pub const WAIT: Duration = Duration::from_secs(10);

/// Health service name of the API.
pub const API_SERVICE: &str = "autofs.v1.AutofsInspector";

/// A running `autofs-agent serve`; SIGKILLed and reaped on drop.
pub struct Agent {
    child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Prometheus address.
    pub metrics: SocketAddr,
    /// Node name it reports.
    pub node: String,
    logs: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Agent {
    /// `serve --log-format json --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
    /// --scan-interval 200ms --node-name <unique>` plus `extra`.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_wrapped(&[], extra)
    }

    /// [`Agent::start`] with `RLIMIT_NOFILE` (soft and hard) set to `nofile` by `prlimit`.
    pub fn start_with_nofile(extra: &[&str], nofile: u64) -> Agent {
        let limit = format!("--nofile={nofile}:{nofile}");
        Self::start_wrapped(&["prlimit", &limit, "--"], extra)
    }

    /// Like [`Agent::start`], run through `wrapper` (a command that execs its arguments in
    /// the same process, e.g. `unshare --user`), so the pid is still the agent's.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Agent {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let node = format!(
            "e2e-node-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let agent_bin = env!("CARGO_BIN_EXE_autofs-agent");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(agent_bin),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(agent_bin);
                cmd
            }
        };
        cmd.args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--node-name",
            &node,
        ])
        // Tests that set their own interval replace the default one.
        .args(
            (!extra.contains(&"--scan-interval"))
                .then_some(["--scan-interval", "200ms"])
                .into_iter()
                .flatten(),
        )
        .args(extra)
        // Only the flags above configure it, whatever the environment of the test says.
        .env_remove("AUTOFS_AGENT_PROC_ROOT")
        .env_remove("AUTOFS_AGENT_MAX_STREAMS")
        .env_remove("AUTOFS_AGENT_SYNTHETIC_MOUNTS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        autofs_testkit::child::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn autofs-agent");

        // Drain stderr for the whole life of the agent (a full pipe would block its logging).
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });

        let mut agent = Agent {
            child,
            grpc: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            node,
            logs,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!(
                    "autofs-agent never logged that it listens ({e:?}); its log:\n{}",
                    agent.log_text()
                ),
            };
            let Ok(json) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let fields = &json["fields"];
            if fields["message"] == "autofs-agent listening" {
                let addr = |key: &str| -> SocketAddr {
                    fields[key]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("no `{key}` address in {line}"))
                };
                agent.grpc = addr("grpc");
                agent.metrics = addr("metrics");
                assert_eq!(fields["node"], agent.node.as_str(), "{line}");
                return agent;
            }
        }
    }

    /// Host pid of the agent.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the agent");
    }

    /// Waits up to `timeout` for the agent to exit; its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the agent in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// A plaintext endpoint of the gRPC listener.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(WAIT)
    }

    /// A connected plaintext channel.
    pub async fn channel(&self) -> Channel {
        self.endpoint()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:?}", self.grpc))
    }

    /// An API client over a new plaintext connection.
    pub async fn client(&self) -> AutofsInspectorClient<Channel> {
        AutofsInspectorClient::new(self.channel().await)
    }

    /// A health client over a new plaintext connection.
    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// Waits until health reports `want` for `service`.
    pub async fn wait_health(&self, service: &str, want: ServingStatus) {
        let mut health = self.health().await;
        eventually(&format!("health of {service:?} is {want:?}"), || {
            let mut health = health.clone();
            async move {
                let got = health
                    .check(HealthCheckRequest {
                        service: service.to_owned(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status;
                (got == want as i32).then_some(())
            }
        })
        .await;
        // One more call on the same connection proves it is still usable.
        health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
    }

    /// Waits until the first scan is done (health SERVING).
    pub async fn wait_serving(&self) {
        self.wait_health(API_SERVICE, ServingStatus::Serving).await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- autofs-agent log ---\n{}", self.log_text());
        }
    }
}

/// A plain HTTP/1.0 GET of `/metrics` (no chunked encoding to decode): the body.
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample whose name and labels are exactly `series` (0 when absent, as
/// for a counter never incremented).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series}: {v}: {e}"))
        })
}

/// Polls `probe` every 50 ms until it yields a value; panics naming `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects a whole ListMounts stream.
pub async fn list(
    client: &mut AutofsInspectorClient<Channel>,
    request: v1::ListMountsRequest,
) -> Result<Vec<v1::MountReport>, tonic::Status> {
    let mut stream = client.list_mounts(request).await?.into_inner();
    let mut out = Vec::new();
    while let Some(report) = stream.message().await? {
        out.push(report);
    }
    Ok(out)
}

/// ListMounts of one mount namespace.
pub async fn list_ns(
    client: &mut AutofsInspectorClient<Channel>,
    mnt_ns: u64,
) -> Vec<v1::MountReport> {
    list(
        client,
        v1::ListMountsRequest {
            mnt_ns: Some(mnt_ns),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Sorted mount ids of reports.
pub fn ids(reports: &[v1::MountReport]) -> Vec<u32> {
    let mut ids: Vec<u32> = reports.iter().map(|r| r.mount_id).collect();
    ids.sort_unstable();
    ids
}

/// The state of a report as the API enum.
pub fn state(report: &v1::MountReport) -> v1::MountState {
    v1::MountState::try_from(report.state).unwrap()
}

/// Asserts `status` has `code` and its message names `field`.
#[track_caller]
pub fn assert_status(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: tonic::Code,
    field: &str,
) {
    match result {
        Ok(v) => panic!("expected {code:?} naming {field:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(field),
                "the message should name {field:?}: {status:?}"
            );
        }
    }
}

/// A pid that no process has: pids are always below `kernel.pid_max`.
pub fn pid_that_does_not_exist() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!Path::new(&format!("/proc/{max}")).exists());
    max
}

/// A copy of a fixture proc tree of autofs-core (symlinks preserved) in a temp dir; the tree
/// is at `<tempdir>/proc`.
pub fn fixture_proc_root(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../autofs-core/tests/fixtures/proc")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proc");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&root)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a {} failed", src.display());
    (dir, root)
}

/// Makes `d`'s mount INTERIM: a requester looks up a missing name and the daemon does not
/// read the request. The requester stays blocked until the packet is read.
pub fn make_interim(sc: &mut Scenario, d: &Daemon, key: &str) -> Requester {
    let req = sc.trigger(&d.name, key).unwrap();
    assert!(
        sc.wait_until(WAIT, |s| s.queued_bytes(d).unwrap_or(0) == 304),
        "the request never reached the pipe of {}",
        d.name
    );
    req
}

/// Makes `d`'s mount CATATONIC: its daemon exits, then a lookup finds no reader and the
/// kernel sets `fd=-1`.
pub fn make_catatonic(sc: &mut Scenario, d: &Daemon) {
    sc.exit_daemon(d).unwrap();
    let req = sc.trigger(&d.name, "after-exit").unwrap();
    assert!(matches!(
        sc.wait_requester(&req, WAIT).unwrap(),
        RequesterOutcome::Failed(_)
    ));
    assert!(sc.wait_until(WAIT, |s| {
        s.mount_line(d.mount_id)
            .is_some_and(|l| l.option("fd") == Some("-1"))
    }));
}
