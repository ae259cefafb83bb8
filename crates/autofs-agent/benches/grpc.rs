//! Benchmarks of the agent as a running process, over loopback, against the targets of
//! issue 3:
//!
//! * ListMounts throughput with 10,000 mounts in the report set (`--synthetic-mounts 10000`):
//!   one tonic client streams the whole set several times; target ≥ 100,000 messages/s.
//! * Resident memory idle with 100 REAL autofs mounts (one autofs-testkit scenario):
//!   target VmRSS < 20 MiB.
//! * Resident memory while 50 concurrent clients (one connection each) stream 10,000
//!   synthetic mounts each: target peak < 64 MiB (VmRSS sampled every 5 ms, and VmHWM).
//! * Debian's `prometheus-node-exporter` (default collectors, one scrape) measured in the same
//!   run, and the ratio printed.
//! * Resident memory with 1 and with 128 idle WatchMounts streams on 3,000 synthetic mounts
//!   (issue 14: watchers share state; 128 must cost within a few MiB of one).
//!
//! Run as root (real mounts), on an otherwise quiet machine:
//!
//! ```sh
//! scripts/install-test-deps && scripts/install-bench-deps
//! cargo bench -p autofs-agent --bench grpc
//! ```
//!
//! `cargo bench` builds the `autofs-agent` binary with the bench profile (release settings)
//! into `target/release/` and this bench runs exactly that binary (`CARGO_BIN_EXE_autofs-agent`),
//! so no separate `cargo build --release` is needed. Without `--bench` (as `cargo test
//! --benches` runs it, with a debug binary) it does nothing.
//! `AUTOFS_BENCH_STREAMS` (default 20) sets the timed ListMounts streams;
//! `AUTOFS_BENCH_ONLY=watchers` runs only the watcher rows (no root, no node exporter).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use autofs_testkit::agent::{AgentBuilder, AgentProcess};
use autofs_testkit::{MountSpec, Scenario, procfs};
use tonic::transport::{Channel, Endpoint};

const SYNTHETIC_MOUNTS: usize = 10_000;
const REAL_MOUNTS: usize = 100;
const CONCURRENT_CLIENTS: usize = 50;
const MIB: f64 = 1024.0 * 1024.0;

const WATCHED_MOUNTS: usize = 3_000;
const WATCHERS: usize = 128;
/// 128 watchers may cost at most this much more than one.
const TARGET_WATCHERS_EXTRA_MIB: f64 = 8.0;

const TARGET_MSGS_PER_S: f64 = 100_000.0;
const TARGET_IDLE_MIB: f64 = 20.0;
const TARGET_LOADED_MIB: f64 = 64.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("grpc bench: run it with `cargo bench -p autofs-agent --bench grpc`");
        return;
    }
    let streams: usize = std::env::var("AUTOFS_BENCH_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("AUTOFS_BENCH_ONLY").as_deref() == Ok("watchers") {
        let mut rows = Vec::new();
        watcher_rows(&runtime, &mut rows);
        print_table(&rows);
        return;
    }
    let exporter = Path::new("/usr/bin/prometheus-node-exporter");
    if !exporter.exists() {
        eprintln!(
            "grpc bench: {} is missing: run scripts/install-bench-deps (as root)",
            exporter.display()
        );
        std::process::exit(2);
    }
    let mut rows = Vec::new();

    // (a) Throughput.
    eprintln!(
        "grpc bench: ListMounts throughput, {SYNTHETIC_MOUNTS} synthetic mounts, {streams} streams"
    );
    let agent = start_agent(&["--synthetic-mounts", &SYNTHETIC_MOUNTS.to_string()]);
    let t = runtime.block_on(throughput(agent.grpc, streams));
    rows.push(Row::higher(
        format!("ListMounts, 1 client, {SYNTHETIC_MOUNTS} mounts x {streams} streams"),
        t.total_rate(),
        "msg/s",
        TARGET_MSGS_PER_S,
    ));
    rows.push(Row::info(
        "  median stream".into(),
        t.median_rate(),
        "msg/s",
    ));
    rows.push(Row::info(
        "  slowest / fastest stream".into(),
        t.worst_ms,
        &format!("ms / {:.1} ms", t.best_ms),
    ));
    drop(agent);

    // (b1) Idle with 100 real mounts.
    eprintln!("grpc bench: agent idle with {REAL_MOUNTS} real mounts");
    let mut sc = Scenario::start_or_panic();
    for i in 0..REAL_MOUNTS {
        sc.mount(MountSpec::indirect().name(&format!("b{i:03}")).timeout(300))
            .unwrap_or_else(|e| panic!("mount {i}: {e}"));
    }
    let agent = start_agent(&["--scan-interval", "1s"]);
    let seen = runtime.block_on(count_mounts(agent.grpc, sc.mnt_ns()));
    assert_eq!(
        seen, REAL_MOUNTS,
        "the agent must see every mount of the scenario"
    );
    // A few background scans and no client: idle.
    std::thread::sleep(Duration::from_secs(3));
    let idle = Memory::of(agent.pid());
    rows.push(Row::lower(
        format!("agent RSS, idle, {REAL_MOUNTS} real mounts"),
        idle.rss_mib(),
        "MiB VmRSS",
        TARGET_IDLE_MIB,
    ));
    rows.push(Row::info(
        "  its high-water mark".into(),
        idle.hwm_mib(),
        "MiB VmHWM",
    ));
    drop(agent);
    drop(sc);

    // (b2) 50 concurrent clients streaming 10,000 mounts each.
    eprintln!(
        "grpc bench: {CONCURRENT_CLIENTS} concurrent clients x {SYNTHETIC_MOUNTS} synthetic mounts"
    );
    // One loopback address for all 50: lift the per-client stream share for them.
    let agent = start_agent(&[
        "--synthetic-mounts",
        &SYNTHETIC_MOUNTS.to_string(),
        "--max-streams-per-client",
        "128",
    ]);
    let sampler = Sampler::start(agent.pid());
    let before = Memory::of(agent.pid());
    let started = Instant::now();
    let received = runtime.block_on(concurrent_clients(agent.grpc));
    let took = started.elapsed();
    let peak_sampled = sampler.stop();
    let after = Memory::of(agent.pid());
    assert_eq!(received, (CONCURRENT_CLIENTS * SYNTHETIC_MOUNTS) as u64);
    let peak = after.hwm_kib.max(peak_sampled);
    rows.push(Row::lower(
        format!("agent peak RSS, {CONCURRENT_CLIENTS} clients x {SYNTHETIC_MOUNTS} mounts"),
        peak as f64 * 1024.0 / MIB,
        "MiB VmHWM",
        TARGET_LOADED_MIB,
    ));
    rows.push(Row::info(
        "  before the clients / after".into(),
        before.rss_mib(),
        &format!("MiB / {:.1} MiB VmRSS", after.rss_mib()),
    ));
    rows.push(Row::info(
        "  all clients together".into(),
        received as f64 / took.as_secs_f64(),
        &format!("msg/s ({:.2} s)", took.as_secs_f64()),
    ));
    drop(agent);

    // Node exporter, same machine, same run.
    eprintln!("grpc bench: prometheus-node-exporter, default collectors, one scrape");
    let ne = NodeExporter::start(exporter);
    let (code, body) = http_get(ne.addr, "/metrics");
    assert_eq!(code, 200, "node exporter scrape");
    let ne_mem = Memory::of(ne.pid());
    drop(ne);
    rows.push(Row::info(
        "node_exporter RSS after one scrape".into(),
        ne_mem.rss_mib(),
        &format!(
            "MiB VmRSS ({:.1} MiB VmHWM, {} samples)",
            ne_mem.hwm_mib(),
            body.lines().filter(|l| !l.starts_with('#')).count()
        ),
    ));
    rows.push(Row::info(
        "  agent idle / node_exporter".into(),
        idle.rss_mib() / ne_mem.rss_mib(),
        "x",
    ));
    rows.push(Row::info(
        "  agent peak under load / node_exporter".into(),
        peak as f64 * 1024.0 / MIB / ne_mem.rss_mib(),
        "x",
    ));

    // (d) Watchers share state.
    watcher_rows(&runtime, &mut rows);

    print_table(&rows);
}

/// RSS with 1, then 128, idle watchers of every mount (each having read its initial snapshot).
fn watcher_rows(runtime: &tokio::runtime::Runtime, rows: &mut Vec<Row>) {
    eprintln!("grpc bench: 1 vs {WATCHERS} watchers of {WATCHED_MOUNTS} synthetic mounts");
    let agent = start_agent(&[
        "--synthetic-mounts",
        &WATCHED_MOUNTS.to_string(),
        "--max-streams-per-client",
        &WATCHERS.to_string(),
    ]);
    let one = runtime.block_on(watchers(agent.grpc, 1));
    std::thread::sleep(Duration::from_secs(2));
    let with_one = Memory::of(agent.pid());
    let many = runtime.block_on(watchers(agent.grpc, WATCHERS - 1));
    std::thread::sleep(Duration::from_secs(2));
    let with_all = Memory::of(agent.pid());
    rows.push(Row::info(
        format!("agent RSS, 1 watcher, {WATCHED_MOUNTS} mounts"),
        with_one.rss_mib(),
        "MiB VmRSS",
    ));
    rows.push(Row::lower(
        format!("agent RSS, {WATCHERS} watchers, {WATCHED_MOUNTS} mounts"),
        with_all.rss_mib(),
        "MiB VmRSS",
        with_one.rss_mib() + TARGET_WATCHERS_EXTRA_MIB,
    ));
    drop((one, many));
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// Opens `n` watches of every mount (32 per connection) and reads each initial snapshot.
async fn watchers(addr: SocketAddr, n: usize) -> Vec<tonic::Streaming<v1::MountEvent>> {
    let mut streams = Vec::with_capacity(n);
    let mut client = connect(addr).await;
    for i in 0..n {
        if i % 32 == 0 {
            client = connect(addr).await;
        }
        let mut stream = client
            .watch_mounts(v1::WatchMountsRequest::default())
            .await
            .expect("WatchMounts")
            .into_inner();
        for _ in 0..WATCHED_MOUNTS {
            stream
                .message()
                .await
                .expect("watch")
                .expect("initial snapshot");
        }
        streams.push(stream);
    }
    streams
}

struct Throughput {
    /// Seconds per stream, sorted.
    per_stream: Vec<f64>,
    messages_per_stream: u64,
    best_ms: f64,
    worst_ms: f64,
}

impl Throughput {
    /// The median stream's rate (robust against one stream disturbed by the machine).
    fn median_rate(&self) -> f64 {
        let median = self.per_stream[self.per_stream.len() / 2];
        self.messages_per_stream as f64 / median
    }

    /// All timed messages over all timed streams: includes the fresh scans that streams
    /// trigger when the latest scan is older than `--max-scan-age` (default 1 s).
    fn total_rate(&self) -> f64 {
        let total: f64 = self.per_stream.iter().sum();
        (self.messages_per_stream * self.per_stream.len() as u64) as f64 / total
    }
}

async fn connect(addr: SocketAddr) -> AutofsInspectorClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e:?}"));
    AutofsInspectorClient::new(channel)
}

/// Messages of one whole ListMounts stream.
async fn stream_all(
    client: &mut AutofsInspectorClient<Channel>,
    request: v1::ListMountsRequest,
) -> u64 {
    let mut stream = client
        .list_mounts(request)
        .await
        .expect("ListMounts")
        .into_inner();
    let mut n = 0;
    while let Some(report) = stream.message().await.expect("stream") {
        std::hint::black_box(&report);
        n += 1;
    }
    n
}

async fn throughput(addr: SocketAddr, streams: usize) -> Throughput {
    let mut client = connect(addr).await;
    // Warm-up: connection, first scan, allocator.
    for _ in 0..2 {
        assert_eq!(
            stream_all(&mut client, Default::default()).await,
            SYNTHETIC_MOUNTS as u64
        );
    }
    let mut per_stream = Vec::with_capacity(streams);
    for _ in 0..streams {
        let started = Instant::now();
        let n = stream_all(&mut client, Default::default()).await;
        per_stream.push(started.elapsed().as_secs_f64());
        assert_eq!(n, SYNTHETIC_MOUNTS as u64);
    }
    per_stream.sort_by(f64::total_cmp);
    Throughput {
        best_ms: per_stream[0] * 1e3,
        worst_ms: per_stream[per_stream.len() - 1] * 1e3,
        per_stream,
        messages_per_stream: SYNTHETIC_MOUNTS as u64,
    }
}

/// Waits for the agent's view of one mount namespace to settle on its mounts; their number.
async fn count_mounts(addr: SocketAddr, mnt_ns: u64) -> usize {
    let mut client = connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = stream_all(
            &mut client,
            v1::ListMountsRequest {
                mnt_ns: Some(mnt_ns),
                ..Default::default()
            },
        )
        .await as usize;
        if n >= REAL_MOUNTS || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `CONCURRENT_CLIENTS` clients, one connection each, all streaming at once; total messages.
async fn concurrent_clients(addr: SocketAddr) -> u64 {
    let mut clients = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        clients.push(connect(addr).await);
    }
    let total = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(CONCURRENT_CLIENTS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (total, start) = (total.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                let n = stream_all(&mut client, Default::default()).await;
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    total.load(Ordering::Relaxed)
}

/// VmRSS and VmHWM of a process, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn of(pid: i32) -> Memory {
        let field =
            |name: &str| -> u64 { procfs::status_kib(pid, name).unwrap_or_else(|e| panic!("{e}")) };
        Memory {
            rss_kib: field("VmRSS"),
            hwm_kib: field("VmHWM"),
        }
    }

    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 * 1024.0 / MIB
    }

    fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 * 1024.0 / MIB
    }
}

/// Samples VmRSS every 5 ms on a thread; the maximum seen, in KiB.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start(pid: i32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(Memory::of(pid).rss_kib);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Spawns `cmd` so that it is SIGKILLed if the bench dies before dropping it.
fn spawn_dying_with_us(cmd: &mut Command) -> Child {
    autofs_testkit::child::die_with_parent(cmd);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

/// The release `autofs-agent serve` on loopback ports (the agent's own scan interval, warnings
/// and the listening line only in its log); SIGKILLed and reaped on drop.
fn start_agent(extra: &[&str]) -> AgentProcess {
    AgentBuilder::new(env!("CARGO_BIN_EXE_autofs-agent"))
        .node_name("bench-node")
        .env("RUST_LOG", "warn,autofs_agent::serve=info")
        .args(extra)
        .start()
}

/// Debian's node exporter with its default collectors on a free loopback port.
struct NodeExporter {
    child: Child,
    addr: SocketAddr,
}

impl NodeExporter {
    fn start(binary: &Path) -> NodeExporter {
        for _ in 0..5 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let mut child = spawn_dying_with_us(
                Command::new(binary)
                    .arg(format!("--web.listen-address={addr}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return NodeExporter { child, addr };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus-node-exporter never listened on loopback");
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET: status code and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    autofs_testkit::http::request(addr, "GET", path).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// The table.

enum Target {
    AtLeast(f64),
    Below(f64),
    None,
}

struct Row {
    what: String,
    value: f64,
    unit: String,
    target: Target,
}

impl Row {
    fn higher(what: String, value: f64, unit: &str, target: f64) -> Row {
        Row {
            what,
            value,
            unit: unit.into(),
            target: Target::AtLeast(target),
        }
    }

    fn lower(what: String, value: f64, unit: &str, target: f64) -> Row {
        Row {
            what,
            value,
            unit: unit.into(),
            target: Target::Below(target),
        }
    }

    fn info(what: String, value: f64, unit: &str) -> Row {
        Row {
            what,
            value,
            unit: unit.into(),
            target: Target::None,
        }
    }
}

fn print_table(rows: &[Row]) {
    let value = |r: &Row| {
        if r.value >= 1000.0 {
            format!("{:.0} {}", r.value, r.unit)
        } else {
            format!("{:.2} {}", r.value, r.unit)
        }
    };
    let target = |r: &Row| match r.target {
        Target::AtLeast(t) => (
            format!(">= {t:.0}"),
            if r.value >= t { "yes" } else { "NO" },
        ),
        Target::Below(t) => (format!("< {t:.0}"), if r.value < t { "yes" } else { "NO" }),
        Target::None => (String::new(), ""),
    };
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| value(r).len()).max().unwrap_or(0);
    let w2 = rows
        .iter()
        .map(|r| target(r).0.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!();
    println!(
        "| {:w0$} | {:w1$} | {:w2$} | met |",
        "measurement", "value", "target"
    );
    println!(
        "|{}|{}|{}|-----|",
        "-".repeat(w0 + 2),
        "-".repeat(w1 + 2),
        "-".repeat(w2 + 2)
    );
    for r in rows {
        let (t, met) = target(r);
        println!("| {:w0$} | {:w1$} | {t:w2$} | {met:3} |", r.what, value(r));
    }
    let missed = rows.iter().filter(|r| target(r).1 == "NO").count();
    println!();
    if missed == 0 {
        println!("every target met");
    } else {
        println!("{missed} target(s) NOT met");
    }
}
