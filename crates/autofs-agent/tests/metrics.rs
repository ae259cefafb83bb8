//! The agent's Prometheus endpoint, end to end: the real binary over real autofs mounts,
//! checked with Debian's `promtool` and scraped by a real Prometheus server.
//!
//! The `*_mounts_total` counters and the `autofs_mounts` gauge are node-wide, and other tests
//! create INTERIM, ORPHANED and CATATONIC mounts on the same machine. The tests that assert
//! exact deltas (`exclusive_*`) therefore run alone: `.config/nextest.toml` gives them every
//! test thread, and [`EXCLUSIVE`] serializes this binary's tests under `cargo test`.
//! Mounts of other test *runs* on the same machine would still disturb them.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use autofs_api::v1;
use autofs_testkit::{MountSpec, Scenario};
use common::{Agent, HANG_GUARD};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The agent under test scans every 200 ms; "several scans" is this long.
const SEVERAL_SCANS: Duration = Duration::from_millis(1500);

const CATATONIC: &str = "autofs_catatonic_mounts_total";
const INTERIM: &str = "autofs_interim_mounts_total";
const ORPHANED: &str = "autofs_orphaned_mounts_total";

/// Held by every test of this binary (matters only when the tests share a process).
static EXCLUSIVE: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A plain HTTP/1.0 GET: status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::http_request(addr, "GET", path)
}

fn scrape(agent: &Agent) -> String {
    common::scrape(agent.metrics)
}

fn value(text: &str, series: &str) -> f64 {
    common::sample_value(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// The three state counters, in the order catatonic, interim, orphaned.
fn counters(agent: &Agent) -> [f64; 3] {
    let text = scrape(agent);
    [CATATONIC, INTERIM, ORPHANED].map(|name| value(&text, name))
}

fn mounts_gauge(text: &str, state: &str) -> f64 {
    value(text, &format!("autofs_mounts{{state=\"{state}\"}}"))
}

/// Polls the metrics until `pred` holds; the last scrape.
fn wait_metrics(agent: &Agent, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let text = scrape(agent);
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The agent's reports of one mount namespace, through its gRPC API.
fn reports_of(agent: &Agent, mnt_ns: u64) -> Vec<v1::MountReport> {
    runtime().block_on(async {
        let mut client = agent.client().await;
        common::list_ns(&mut client, mnt_ns).await
    })
}

/// Waits until the agent reports `mount_id` in `want`.
fn wait_state(agent: &Agent, sc: &Scenario, mount_id: u32, want: v1::MountState) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let reports = reports_of(agent, sc.mnt_ns());
        let got = reports
            .iter()
            .find(|r| r.mount_id == mount_id)
            .map(common::state);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mount {mount_id} never became {want:?} (last: {got:?}): {reports:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For failure messages: the autofs mounts of other mount namespaces the agent sees now. The
/// counters are node-wide, so a test run beside this one (another session on the same machine)
/// moves them too.
fn foreign_mounts(agent: &Agent, ours: u64) -> String {
    let all = runtime().block_on(async {
        let mut client = agent.client().await;
        common::list(&mut client, v1::ListMountsRequest::default())
            .await
            .unwrap()
    });
    let foreign: Vec<String> = all
        .iter()
        .filter(|r| r.mnt_ns != ours)
        .map(|r| format!("{}/{} {:?}", r.mnt_ns, r.mount_id, common::state(r)))
        .collect();
    format!(
        "autofs mounts of other namespaces now (did another test run beside this one?): {foreign:?}"
    )
}

/// Waits until the background scanner has published at least `scans` more scans.
fn wait_scans(agent: &Agent, scans: u64) {
    let count = |text: &str| value(text, "autofs_scan_duration_seconds_count");
    let start = count(&scrape(agent));
    wait_metrics(agent, &format!("{scans} more scans"), |text| {
        count(text) >= start + scans as f64
    });
}

#[test]
fn metrics_output_passes_promtool_check_metrics() {
    let _one = exclusive();
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    // Traffic, so the gRPC families (labelled counter, histogram) are in the output too.
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Active);
    let text = wait_metrics(&agent, "gRPC metrics appear", |t| {
        t.contains("autofs_grpc_request_duration_seconds_bucket{")
    });

    for family in [
        CATATONIC,
        INTERIM,
        ORPHANED,
        "autofs_mounts",
        "autofs_interim_oldest_age_seconds",
        "autofs_scan_duration_seconds",
        "autofs_scan_errors_total",
        "autofs_last_scan_success_timestamp_seconds",
        "autofs_grpc_requests_total",
        "autofs_grpc_request_duration_seconds",
        "autofs_build_info",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
    }
    assert!(
        text.contains(
            "autofs_grpc_requests_total{service=\"autofs.v1.AutofsInspector\",method=\"ListMounts\",code=\"OK\"}"
        ),
        "{text}"
    );
    // Failure counters exist at 0 before any failure, for every listener.
    for series in [
        "autofs_accept_errors_total{listener=\"grpc\"} 0",
        "autofs_accept_errors_total{listener=\"metrics\"} 0",
        "autofs_connections_refused_total{listener=\"grpc\",reason=\"not_http2\"} 0",
        "autofs_connections_refused_total{listener=\"grpc\",reason=\"handshake_timeout\"} 0",
    ] {
        assert!(text.contains(series), "no `{series}`:\n{text}");
    }
    // Plaintext HTTP/1 awaits nothing before serving: nothing to refuse.
    assert!(
        !text.contains("autofs_connections_refused_total{listener=\"metrics\""),
        "{text}"
    );
    assert!(
        !text.contains("reason=\"client_certificate\""),
        "a plaintext listener refuses no certificates:\n{text}"
    );
    // Explicit buckets, not a summary.
    assert!(
        text.contains("autofs_scan_duration_seconds_bucket{le=\"0.005\"}"),
        "{text}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool must be installed (Debian package prometheus; scripts/install-test-deps)",
        );
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics exited {:?}:\n{}{}\n--- input ---\n{text}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn any_path_but_metrics_is_not_found() {
    let _one = exclusive();
    let agent = Agent::start(&[]);
    let (code, body) = http_get(agent.metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("autofs_build_info{"), "{body}");
    for path in [
        "/",
        "/metric",
        "/metrics/",
        "/metrics/x",
        "/debug/pprof",
        "/..%2fmetrics",
    ] {
        let (code, body) = http_get(agent.metrics, path);
        assert_eq!(code, 404, "GET {path}: {body}");
    }
    let (code, _) = common::http_request(agent.metrics, "POST", "/metrics");
    assert_eq!(code, 404, "POST /metrics");
    let (code, body) = common::http_request(agent.metrics, "HEAD", "/metrics");
    assert_eq!(code, 200, "HEAD /metrics");
    assert!(body.is_empty(), "HEAD has no body: {body}");
}

#[test]
fn exclusive_state_counters_count_each_mount_entering_a_state_once() {
    let _one = exclusive();
    let mut sc = Scenario::start_or_panic();
    let interim = sc.mount(MountSpec::indirect().name("interim")).unwrap();
    let delegated = sc.mount(MountSpec::indirect().name("delegated")).unwrap();
    // Indirect: a direct mount whose leader is a zombie for a moment after `exit_daemon`
    // (still listed, no fds) is probed, and the probe says CATATONIC; a scan in that window
    // would count a catatonic mount early. An indirect mount is never probed.
    let abandoned = sc.mount(MountSpec::indirect().name("abandoned")).unwrap();
    let active = sc.mount(MountSpec::indirect().name("active")).unwrap();
    let agent = Agent::start(&[]);
    for d in [&interim, &delegated, &abandoned, &active] {
        wait_state(&agent, &sc, d.mount_id, v1::MountState::Active);
    }
    wait_scans(&agent, 2);
    let [cat0, int0, orph0] = counters(&agent);
    let ns = sc.mnt_ns();
    let expect = |what: &str, want: [f64; 3]| {
        let got = counters(&agent);
        assert_eq!(
            got,
            want,
            "{what}: [catatonic, interim, orphaned] deltas {:?}; {}",
            [got[0] - cat0, got[1] - int0, got[2] - orph0],
            foreign_mounts(&agent, ns)
        );
    };

    // INTERIM: an unanswered lookup.
    let _blocked = sc.make_interim(&interim, "key", HANG_GUARD).unwrap();
    wait_state(&agent, &sc, interim.mount_id, v1::MountState::Interim);
    wait_scans(&agent, 1);
    expect("interim mount", [cat0, int0 + 1.0, orph0]);

    // ORPHANED twice: the read end delegated to another process group, and a daemon gone
    // without a lookup (hidden catatonic).
    sc.delegate(&delegated).unwrap();
    wait_state(&agent, &sc, delegated.mount_id, v1::MountState::Orphaned);
    sc.exit_daemon(&abandoned).unwrap();
    wait_state(&agent, &sc, abandoned.mount_id, v1::MountState::Orphaned);
    wait_scans(&agent, 1);
    expect("two orphaned mounts", [cat0, int0 + 1.0, orph0 + 2.0]);

    // CATATONIC: the abandoned mount meets a lookup; leaving ORPHANED takes nothing back.
    let req = sc.trigger(&abandoned.name, "after-exit").unwrap();
    sc.wait_requester(&req, HANG_GUARD).unwrap();
    wait_state(&agent, &sc, abandoned.mount_id, v1::MountState::Catatonic);
    wait_scans(&agent, 1);
    expect("catatonic mount", [cat0 + 1.0, int0 + 1.0, orph0 + 2.0]);

    // The same stuck mounts, scanned again and again, count no more.
    std::thread::sleep(SEVERAL_SCANS);
    wait_scans(&agent, 3);
    expect(
        "after several more scans",
        [cat0 + 1.0, int0 + 1.0, orph0 + 2.0],
    );
    let reports = reports_of(&agent, sc.mnt_ns());
    let state_of = |id: u32| {
        reports
            .iter()
            .find(|r| r.mount_id == id)
            .map(common::state)
            .unwrap()
    };
    assert_eq!(state_of(interim.mount_id), v1::MountState::Interim);
    assert_eq!(state_of(delegated.mount_id), v1::MountState::Orphaned);
    assert_eq!(state_of(abandoned.mount_id), v1::MountState::Catatonic);
    assert_eq!(state_of(active.mount_id), v1::MountState::Active);
}

#[test]
fn exclusive_interim_counts_again_only_after_leaving_and_reentering() {
    let _one = exclusive();
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Active);
    wait_scans(&agent, 2);
    let interim = || counters(&agent)[1];
    let base = interim();

    let _first = sc.make_interim(&d, "one", HANG_GUARD).unwrap();
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Interim);
    std::thread::sleep(SEVERAL_SCANS);
    wait_scans(&agent, 2);
    let ns = sc.mnt_ns();
    assert_eq!(
        interim(),
        base + 1.0,
        "stuck INTERIM counts once; {}",
        foreign_mounts(&agent, ns)
    );

    // The daemon reads the request: ACTIVE again. A new request: INTERIM again.
    assert_eq!(sc.read_packet(&d).unwrap().name, b"one");
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Active);
    assert_eq!(
        interim(),
        base + 1.0,
        "leaving INTERIM takes nothing back; {}",
        foreign_mounts(&agent, ns)
    );
    let _second = sc.make_interim(&d, "two", HANG_GUARD).unwrap();
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Interim);
    std::thread::sleep(SEVERAL_SCANS);
    wait_scans(&agent, 2);
    assert_eq!(
        interim(),
        base + 2.0,
        "re-entering INTERIM counts again, once; {}",
        foreign_mounts(&agent, ns)
    );
}

#[test]
fn exclusive_mounts_gauge_and_interim_age_follow_the_latest_scan() {
    let _one = exclusive();
    let mut sc = Scenario::start_or_panic();
    let a = sc.mount(MountSpec::indirect()).unwrap();
    let b = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    wait_state(&agent, &sc, a.mount_id, v1::MountState::Active);
    wait_state(&agent, &sc, b.mount_id, v1::MountState::Active);
    wait_scans(&agent, 2);
    let before = scrape(&agent);
    let gauge_before = |state: &str| mounts_gauge(&before, state);
    assert!(gauge_before("ACTIVE") >= 2.0, "{before}");
    for state in [
        "ACTIVE",
        "INTERIM",
        "ORPHANED",
        "CATATONIC",
        "UNSUPPORTED",
        "ERROR",
    ] {
        assert!(
            common::sample_value(&before, &format!("autofs_mounts{{state=\"{state}\"}}")).is_some(),
            "every state has a gauge, zero included: {state}\n{before}"
        );
    }

    let _blocked = sc.make_interim(&a, "key", HANG_GUARD).unwrap();
    sc.exit_daemon(&b).unwrap();
    wait_state(&agent, &sc, a.mount_id, v1::MountState::Interim);
    wait_state(&agent, &sc, b.mount_id, v1::MountState::Orphaned);
    wait_scans(&agent, 1);
    let stuck = scrape(&agent);
    assert_eq!(
        mounts_gauge(&stuck, "ACTIVE"),
        gauge_before("ACTIVE") - 2.0,
        "{stuck}\n{}",
        foreign_mounts(&agent, sc.mnt_ns())
    );
    assert_eq!(
        mounts_gauge(&stuck, "INTERIM"),
        gauge_before("INTERIM") + 1.0,
        "{stuck}\n{}",
        foreign_mounts(&agent, sc.mnt_ns())
    );
    assert_eq!(
        mounts_gauge(&stuck, "ORPHANED"),
        gauge_before("ORPHANED") + 1.0,
        "{stuck}\n{}",
        foreign_mounts(&agent, sc.mnt_ns())
    );
    let age = |text: &str| value(text, "autofs_interim_oldest_age_seconds");
    assert!(age(&stuck) > 0.0, "{stuck}");
    // The age is taken at each scan, so it is waited for, not slept for: on a busy machine no
    // scan may finish within any fixed sleep. A gauge that reset or stood still times out.
    let first = age(&stuck);
    wait_metrics(
        &agent,
        &format!("the INTERIM age grows past {first} + 1 s while the mount stays stuck"),
        |text| age(text) >= first + 1.0,
    );
}

/// A Prometheus server on a free loopback port with its own storage; SIGTERMed, then
/// SIGKILLed and reaped on drop.
struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    fn start(target: SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: autofs-agent\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            let addr = free_loopback_port();
            let mut child = spawn_dying_with_us(
                Command::new("prometheus")
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--log.level=warn")
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let deadline = Instant::now() + HANG_GUARD;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("prometheus on {addr} exited early ({status}); retrying");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok_and(|_| http_get(addr, "/-/ready").0 == 200)
                {
                    return PrometheusServer {
                        child,
                        addr,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus never became ready on loopback");
    }

    /// `/api/v1/query` of `expr`: the `data.result` array.
    fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (code, body) = http_get(self.addr, &path);
        assert_eq!(code, 200, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{body}");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Spawns `cmd` so that it is SIGKILLed if the test process dies before dropping it.
fn spawn_dying_with_us(cmd: &mut Command) -> Child {
    autofs_testkit::child::die_with_parent(cmd);
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {:?} (Debian package prometheus; scripts/install-test-deps): {e}",
            cmd.get_program()
        )
    })
}

#[test]
fn real_prometheus_scrapes_the_interim_counter() {
    let _one = exclusive();
    assert!(
        Path::new("/usr/bin/prometheus").exists() || which("prometheus"),
        "the prometheus server must be installed (scripts/install-test-deps)"
    );
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    let _blocked = sc.make_interim(&d, "key", HANG_GUARD).unwrap();
    wait_state(&agent, &sc, d.mount_id, v1::MountState::Interim);

    let prometheus = PrometheusServer::start(agent.metrics);
    let deadline = Instant::now() + HANG_GUARD;
    let series = loop {
        let result = prometheus.query(INTERIM);
        if let Some(series) = result.into_iter().next() {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned {INTERIM} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(series["metric"]["__name__"], INTERIM, "{series}");
    assert_eq!(series["metric"]["job"], "autofs-agent", "{series}");
    assert_eq!(
        series["metric"]["instance"],
        agent.metrics.to_string(),
        "{series}"
    );
    // Node-wide, but this test's mount alone makes it at least 1.
    let v: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
    assert!(v >= 1.0, "{series}");
    let up = prometheus.query("up{job=\"autofs-agent\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_a_hundred_waiters_cost_no_more_scans_than_one() {
    use v1::wait_migratable_response::Outcome;
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&d, "shared", HANG_GUARD).unwrap();
    // Scans only at start and when change detection sees something: waiters must not add any.
    // A hundred waiters from one address: lift the per-client share for them.
    let agent = Agent::start(&[
        "--scan-interval",
        "1h",
        "--max-scan-age",
        "1h",
        "--max-streams-per-client",
        "128",
    ]);
    agent.wait_serving().await;
    let scans = |text: &str| value(text, "autofs_scan_duration_seconds_count");
    let before = scans(&scrape(&agent));
    let request = v1::WaitMigratableRequest {
        target: Some(v1::wait_migratable_request::Target::Pid(sc.init_host_pid())),
        ..Default::default()
    };
    let mut streams = Vec::new();
    for _ in 0..100 {
        // One connection each: a connection carries at most --max-streams-per-connection.
        let mut stream = agent
            .client()
            .await
            .wait_migratable(request.clone())
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(HANG_GUARD, stream.message())
            .await
            .expect("a first message in time")
            .unwrap()
            .unwrap();
        assert_eq!(first.outcome, Outcome::Waiting as i32, "{first:#?}");
        streams.push(stream);
    }
    // No scan per waiter (a hundred would show). Changes elsewhere on the node may still
    // cause a scan or two meanwhile; those are shared by every waiter too.
    let during = scans(&scrape(&agent)) - before;
    assert!(
        during < 10.0,
        "{during} scans while a hundred waiters started"
    );
    // One drain, seen once by change detection, answers every waiter.
    sc.read_packet_with(&d.name, autofs_testkit::Answer::Ready, HANG_GUARD)
        .unwrap();
    for stream in &mut streams {
        let last = loop {
            let m = tokio::time::timeout(HANG_GUARD, stream.message())
                .await
                .expect("an answer in time")
                .unwrap()
                .expect("a final message");
            if m.outcome != Outcome::Waiting as i32 {
                break m;
            }
        };
        assert_eq!(last.outcome, Outcome::Dumpable as i32, "{last:#?}");
    }
    let after = scans(&scrape(&agent)) - before;
    assert!(
        after < 10.0,
        "{after} scans for one drain seen by a hundred waiters"
    );
}
