//! Fan-out benchmark: `collect` from 1,000 agent endpoints serving 20 mounts each, then the same
//! with 5 % of the endpoints black-holed. Needs root (it makes a private network namespace).
//!
//! Setup, all inside a network namespace private to this process (nothing leaks to the host):
//! four real `autofs-agent` processes with `--synthetic-mounts 20` listen on `0.0.0.0:50051..4`;
//! in the namespace only `lo` exists, so every `127.1.x.y` reaches them. The 1,000 endpoints are
//! 250 loopback addresses × 4 ports: 1,000 distinct TCP/HTTP/2 connections and handshakes, served
//! by 4 processes (1,000 agent processes would measure the host, not the controller). Since four
//! agents stand for 1,000 nodes, the hidden `--allow-duplicate-nodes` flag keeps the controller
//! from refusing endpoints that answer with an already-seen node name.
//!
//! Black holes: 50 of the endpoints are addresses routed into a veth whose peer is down, with
//! permanent neighbour entries: every packet silently vanishes (no RST, no ICMP, no ARP
//! failure), so their connects hang until the deadline.
//!
//! Measured: the real CLI (`autofs-controller collect --output json`), wall time and peak RSS
//! (`VmHWM` of the child), plus in-process library runs. Run: `cargo bench -p autofs-controller
//! --bench fanout`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autofs_controller::{Collector, CollectorConfig, NodeEndpoint};
use common::{Agent, sh, start_agent};

const ENDPOINTS: usize = 1000;
const AGENTS: usize = 4;
const MOUNTS: usize = 20;
const BLACK_HOLED: usize = 50;

fn endpoint(i: usize) -> String {
    let addr = i / AGENTS;
    format!(
        "127.1.{}.{}:{}",
        addr / 200,
        addr % 200 + 1,
        50051 + i % AGENTS
    )
}

struct Run {
    name: &'static str,
    wall: Duration,
    peak_kib: Option<u64>,
    mounts: usize,
    failed: usize,
    limit: Duration,
    exit: Option<i32>,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the CLI on a nodes file, polling its peak RSS until it exits.
fn cli_collect(name: &'static str, nodes_file: &str, limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autofs-controller"))
        .args([
            "collect",
            "--nodes-file",
            nodes_file,
            "--allow-duplicate-nodes",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run autofs-controller");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut s).unwrap();
        s
    });
    let mut peak = None;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = Some(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let out = reader.join().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    Run {
        name,
        wall,
        peak_kib: peak,
        mounts: doc["mounts"].as_array().map_or(0, Vec::len),
        failed: doc["failed"].as_array().map_or(0, Vec::len),
        limit,
        exit: status.code(),
    }
}

fn lib_collect(name: &'static str, addrs: &[String], limit: Duration) -> Run {
    let endpoints = addrs
        .iter()
        .map(|a| NodeEndpoint::parse(a, "bench").unwrap())
        .collect();
    let config = CollectorConfig {
        unique_nodes: false,
        ..CollectorConfig::default()
    };
    let collector = Collector::new(endpoints, config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let report = rt.block_on(collector.collect(Default::default()));
    Run {
        name,
        wall: started.elapsed(),
        peak_kib: None,
        mounts: report.mounts().count(),
        failed: report.failed().count(),
        limit,
        exit: None,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probing
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fan-out benchmark needs root (it creates a private network namespace)"
    );
    // Before any thread exists: this process and its children get their own network namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    sh(&["ip", "link", "set", "lo", "up"]);
    // The black hole: a veth whose peer stays down, with permanent neighbour entries for the
    // black-holed addresses, so frames leave and vanish (no ARP failure, no RST, no ICMP).
    sh(&[
        "ip", "link", "add", "bh0", "type", "veth", "peer", "name", "bh1",
    ]);
    sh(&["ip", "addr", "add", "10.200.0.1/16", "dev", "bh0"]);
    sh(&["ip", "link", "set", "bh0", "up"]);

    let mounts = MOUNTS.to_string();
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            start_agent(
                None,
                &format!("bench-agent-{i}"),
                &format!("0.0.0.0:{}", 50051 + i),
                &["--synthetic-mounts", &mounts],
            )
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let healthy: Vec<String> = (0..ENDPOINTS).map(endpoint).collect();
    let mut faulty = healthy.clone();
    for k in 0..BLACK_HOLED {
        let ip = format!("10.200.{}.{}", k / 200, k % 200 + 2);
        sh(&[
            "ip",
            "neigh",
            "replace",
            &ip,
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "bh0",
            "nud",
            "permanent",
        ]);
        faulty[k * (ENDPOINTS / BLACK_HOLED)] = format!("{ip}:50051");
    }
    let write = |name: &str, list: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, list.join("\n")).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let healthy_file = write("healthy.txt", &healthy);
    let faulty_file = write("faulty.txt", &faulty);

    let deadline = CollectorConfig::default().timeout;
    let mut runs = vec![
        // Warm-up: first connections, page cache.
        lib_collect("library, warm-up", &healthy, Duration::from_secs(2)),
    ];
    runs.push(cli_collect(
        "CLI collect, 1000 healthy",
        &healthy_file,
        Duration::from_secs(2),
    ));
    for _ in 0..3 {
        runs.push(lib_collect(
            "library collect, 1000 healthy",
            &healthy,
            Duration::from_secs(2),
        ));
    }
    runs.push(cli_collect(
        "CLI collect, 5% black-holed",
        &faulty_file,
        deadline + Duration::from_secs(1),
    ));

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nfan-out: {ENDPOINTS} endpoints ({AGENTS} agents x {} loopback addresses), {MOUNTS} mounts each, concurrency 64, deadline {}s, {} cpus",
        ENDPOINTS / AGENTS,
        deadline.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        out,
        "{:<32} {:>9} {:>10} {:>8} {:>7} {:>6} {:>8}  verdict",
        "run", "wall", "peak RSS", "mounts", "failed", "exit", "limit"
    );
    let mut ok = true;
    for r in &runs {
        let within = r.wall <= r.limit && r.peak_kib.is_none_or(|k| k < 150 * 1024);
        ok &= within;
        let _ = writeln!(
            out,
            "{:<32} {:>7}ms {:>10} {:>8} {:>7} {:>6} {:>6}ms  {}",
            r.name,
            r.wall.as_millis(),
            r.peak_kib
                .map_or("-".into(), |k| format!("{:.1}MiB", k as f64 / 1024.0)),
            r.mounts,
            r.failed,
            r.exit.map_or("-".into(), |c| c.to_string()),
            r.limit.as_millis(),
            if within { "ok" } else { "OVER LIMIT" }
        );
    }
    drop(agents);
    assert!(ok, "a run exceeded its limit");
}
