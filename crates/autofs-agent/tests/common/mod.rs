//! Harness of the end-to-end tests: the real `autofs-agent` binary of this package, started
//! by the testkit's agent builder on `127.0.0.1:0` ports (it finds the addresses in the JSON
//! log and kills the agent on drop, also when the test fails or the test process dies), and
//! the real tonic clients the tests talk to it through.
//!
//! Other test processes create their own autofs mounts on the same machine at the same time,
//! so every assertion about mounts filters by the scenario's mount namespace.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
pub use autofs_testkit::HANG_GUARD;
use autofs_testkit::agent::{AgentBuilder, AgentProcess};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Health service name of the API.
pub const API_SERVICE: &str = "autofs.v1.AutofsInspector";

/// A running `autofs-agent serve` of these tests (the testkit's [`AgentProcess`]: SIGKILLed
/// and reaped on drop), with the gRPC clients the tests talk to it through.
pub struct Agent(AgentProcess);

impl Deref for Agent {
    type Target = AgentProcess;
    fn deref(&self) -> &AgentProcess {
        &self.0
    }
}

impl DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut AgentProcess {
        &mut self.0
    }
}

impl Agent {
    /// This package's agent on `127.0.0.1:0` ports with `--scan-interval 200ms` (replaced by
    /// a `--scan-interval` among the builder's args) and a unique node name.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::new(env!("CARGO_BIN_EXE_autofs-agent")).scan_interval("200ms")
    }

    /// Starts `builder`'s agent.
    #[track_caller]
    pub fn from_builder(builder: AgentBuilder) -> Agent {
        Agent(builder.start())
    }

    /// [`Agent::builder`] plus `extra` flags, started.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Agent {
        Agent::from_builder(Agent::builder().args(extra))
    }

    /// [`Agent::start`] with `RLIMIT_NOFILE` (soft and hard) set to `nofile` by `prlimit`.
    #[track_caller]
    pub fn start_with_nofile(extra: &[&str], nofile: u64) -> Agent {
        Agent::from_builder(Agent::builder().nofile(nofile).args(extra))
    }

    /// Like [`Agent::start`], run through `wrapper` (a command that execs its arguments in
    /// the same process, e.g. `unshare --user`), so the pid is still the agent's.
    #[track_caller]
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Agent {
        Agent::from_builder(Agent::builder().wrapper(wrapper).args(extra))
    }

    /// Resident set size of the agent in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        autofs_testkit::procfs::status_kib(self.pid(), "VmRSS").unwrap()
    }

    /// A plaintext endpoint of the gRPC listener.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(HANG_GUARD)
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
        self.wait_health_within(service, want, HANG_GUARD).await;
    }

    /// [`Self::wait_health`] waiting up to `within`.
    pub async fn wait_health_within(&self, service: &str, want: ServingStatus, within: Duration) {
        let mut health = self.health().await;
        eventually_within(
            &format!("health of {service:?} is {want:?}"),
            within,
            || {
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
            },
        )
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

/// A plain HTTP/1.0 request ([`autofs_testkit::http::request`]): status code and body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    autofs_testkit::http::request(addr, method, path).unwrap_or_else(|e| panic!("{e}"))
}

/// The body of `GET /metrics`, which must answer 200.
pub fn scrape(addr: SocketAddr) -> String {
    autofs_testkit::http::scrape(addr).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of the sample whose name and labels are exactly `series` (as exposed), if any.
pub fn sample_value(text: &str, series: &str) -> Option<f64> {
    autofs_testkit::http::sample_value(text, series)
}

/// [`sample_value`], 0 when absent (as for a counter never incremented).
pub fn sample(text: &str, series: &str) -> f64 {
    sample_value(text, series).unwrap_or(0.0)
}

/// Polls `probe` every 50 ms until it yields a value; panics naming `what` after [`HANG_GUARD`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, HANG_GUARD, probe).await
}

/// [`eventually`] with a bound of its own, for what waits on an agent's timer measured in
/// seconds.
pub async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CheckMigratable of `target` over `client`'s connection must be refused with
/// PERMISSION_DENIED whose message contains `because`; returns that status.
pub async fn assert_check_denied(
    client: &mut AutofsInspectorClient<Channel>,
    target: v1::check_migratable_request::Target,
    because: &str,
) -> tonic::Status {
    let status = client
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(target.clone()),
            ..Default::default()
        })
        .await
        .expect_err("no answer can be given about a workload the agent cannot see");
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{target:?}: {status:?}"
    );
    assert!(status.message().contains(because), "{target:?}: {status:?}");
    status
}

/// GetNodeInfo over `client`'s connection; panics on an error status.
pub async fn node_info(client: &mut AutofsInspectorClient<Channel>) -> v1::GetNodeInfoResponse {
    client
        .get_node_info(v1::GetNodeInfoRequest {})
        .await
        .unwrap_or_else(|s| panic!("GetNodeInfo: {s:?}"))
        .into_inner()
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

/// What a finished `scan --json` gave: its reports (one JSON line each), its exit code, its
/// stderr. Panics on a line that is not JSON.
pub fn scan_output(out: std::process::Output) -> (Vec<serde_json::Value>, i32, String) {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let reports = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (reports, out.status.code().unwrap(), stderr)
}

#[allow(unused_imports)] // not every test binary copies a fixture tree
pub use autofs_testkit::proc_fixture::fixture_proc_root;
