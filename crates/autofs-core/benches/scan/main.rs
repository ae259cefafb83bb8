//! Benchmarks of one full scan, against references measured in the same run on the same node
//! state (ratios between columns of one run are what to read; absolute times depend on load).
//!
//! * The **M × F matrix**: M real autofs mounts whose daemons hold F extra open fds, against
//!   `floor` (the /proc reads the scan performs, with no parsing at all) and `criu` (CRIU's
//!   per-mount algorithm, reference §3.4–3.7, which rescans the master's `/proc/<pgrp>/fd`
//!   once per mount).
//! * The **busy node**: M mounts of one daemon among P bystander processes with F open fds
//!   each, against CRIU's lookup floor (each mount namespace's `mountinfo` once, each master's
//!   fds once), the readlink of every process's `ns/mnt`, and the whole-node census every scan
//!   ran before the leader-first census.
//! * The **namespace walk**: the agent's per-pass walk of the kernel's list of mount
//!   namespaces for K namespaces, against the readlink of every process's `ns/mnt`
//!   (`AUTOFS_BENCH_MODE=namespaces`).
//! * The **agent** on the busy node: CPU share and peak RSS of the release `autofs-agent serve`
//!   at its default settings (`AUTOFS_BENCH_MODE=agent`, see `scripts/bench-agent-busy-node`).
//!
//! Run as root: `cargo bench -p autofs-core --bench scan`. The knobs (`AUTOFS_BENCH_*`) are in
//! `benches/README.md`, with the layout of the nodes and how to read the tables.
//!
//! Nothing is mounted in the bench's own mount namespace: a forked "node builder" unshares a
//! private mount namespace, mounts a tmpfs over its /tmp (the host never sees it) and forks the
//! daemons, which create the pipes and the autofs mounts under /tmp/autofs-bench, and the
//! bystanders. Tearing the node down (also on panic, and through `PR_SET_PDEATHSIG` when the
//! bench is killed) kills that process tree, and the namespace disappears with its mounts.

mod agent;
mod alloc;
mod busy;
mod criu;
mod floor;
mod namespaces;
mod node;
mod sys;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use autofs_core::{MountState, Scan, Scanner};

use alloc::{LIVE, PEAK};
use criu::{criu, criu_node};
use floor::{FLOOR_PHASES, floor, plan_floor};
use node::{Node, NodeSpec, Place, build_node};

// ---------------------------------------------------------------------------------------------
// Configuration.

/// What to run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The M × F matrix.
    Matrix,
    /// The busy node.
    Busy,
    /// The agent's CPU share and RSS on the busy node.
    Agent,
    /// The walk of the kernel's list of mount namespaces.
    Namespaces,
}

struct Config {
    modes: Vec<Mode>,
    ms: Vec<usize>,
    fs: Vec<usize>,
    iters: usize,
    daemons: usize,
    /// Busy node: bystander processes.
    ps: Vec<usize>,
    /// Busy node: open fds per bystander.
    pfs: Vec<usize>,
    /// Busy node (and agent): autofs mounts, all served by one daemon.
    busy_m: usize,
    /// Busy node: the bystanders' mount namespace.
    place: Place,
    /// Agent: the binary and how long to sample it.
    agent_bin: std::path::PathBuf,
    agent_secs: u64,
    /// Agent: bystanders and their fds.
    agent_p: usize,
    agent_pf: usize,
    /// Namespaces: how many mount namespaces to hold (one process each).
    namespaces: Vec<usize>,
    /// Wall-time budget per measurement series; slow series run fewer iterations (at least 1).
    budget: Duration,
    /// `AUTOFS_BENCH_VERBOSE=1`: print the floors' per-phase breakdown.
    verbose: bool,
    /// `AUTOFS_BENCH_ONLY=scan|floor|criu|criu-node`: only run that measurement, `ITERS` times, for
    /// profiling under `valgrind --tool=callgrind` or `strace -c`.
    pub only: Option<String>,
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("{name}: '{t}' is not a number")))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    fn from_env() -> Self {
        let one = |name, default| env_list(name, &[default])[0];
        let modes = env_str("AUTOFS_BENCH_MODE")
            .unwrap_or_else(|| "matrix,busy".into())
            .split(',')
            .map(|m| match m.trim() {
                "matrix" => Mode::Matrix,
                "busy" => Mode::Busy,
                "agent" => Mode::Agent,
                "namespaces" => Mode::Namespaces,
                other => fail(&format!(
                    "AUTOFS_BENCH_MODE: '{other}' is not matrix, busy, agent or namespaces"
                )),
            })
            .collect();
        let place = match env_str("AUTOFS_BENCH_BYSTANDERS").as_deref() {
            None | Some("node") => Place::Node,
            Some("host") => Place::Host,
            Some(other) => fail(&format!(
                "AUTOFS_BENCH_BYSTANDERS: '{other}' is not node or host"
            )),
        };
        let agent_bin = env_str("AUTOFS_BENCH_AGENT_BIN").map_or_else(
            || {
                // The workspace's release build, wherever cargo put its target dir.
                let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                    || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                    Into::into,
                );
                target.join("release/autofs-agent")
            },
            Into::into,
        );
        let config = Self {
            modes,
            ms: env_list("AUTOFS_BENCH_M", &[10, 100, 1000]),
            fs: env_list("AUTOFS_BENCH_F", &[100, 10000]),
            iters: one("AUTOFS_BENCH_ITERS", 21).max(1),
            daemons: one("AUTOFS_BENCH_DAEMONS", 10).max(1),
            ps: env_list("AUTOFS_BENCH_P", &[100, 2000, 5000]),
            pfs: env_list("AUTOFS_BENCH_PF", &[10, 100]),
            busy_m: one("AUTOFS_BENCH_BUSY_M", 3),
            place,
            agent_bin,
            agent_secs: one("AUTOFS_BENCH_AGENT_SECS", 60).max(1) as u64,
            agent_p: one("AUTOFS_BENCH_AGENT_P", 2000),
            agent_pf: one("AUTOFS_BENCH_AGENT_PF", 100),
            namespaces: env_list("AUTOFS_BENCH_NS", &[10, 100, 1000]),
            budget: Duration::from_secs(6),
            verbose: std::env::var("AUTOFS_BENCH_VERBOSE").is_ok_and(|v| v == "1"),
            only: env_str("AUTOFS_BENCH_ONLY"),
        };
        if let Some(only) = &config.only
            && !["scan", "floor", "criu", "criu-node"].contains(&only.as_str())
        {
            fail(&format!(
                "AUTOFS_BENCH_ONLY: '{only}' is not scan, floor, criu or criu-node"
            ));
        }
        if config.ms.contains(&0) || config.busy_m == 0 {
            fail("AUTOFS_BENCH_M, AUTOFS_BENCH_BUSY_M: M must be at least 1");
        }
        config
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("scan bench: {msg}");
    std::process::exit(1);
}

// ---------------------------------------------------------------------------------------------
// The scan and its checks (both benchmarks).

fn full_scan() -> (Duration, Scan) {
    let start = Instant::now();
    let scan = Scanner::new("/proc", "bench")
        .and_then(|s| s.scan())
        .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
    (start.elapsed(), scan)
}

fn check_scan(scan: &Scan, node: &Node, m: usize) {
    let ours: Vec<_> = scan
        .reports
        .iter()
        .filter(|r| r.mnt_ns == node.mnt_ns)
        .collect();
    let active = ours
        .iter()
        .filter(|r| r.state == MountState::Active)
        .count();
    if ours.len() != m || active != m {
        let sample = ours
            .iter()
            .find(|r| r.state != MountState::Active)
            .map(|r| format!("{} {}: {}", r.mount_point, r.state, r.message))
            .unwrap_or_default();
        // A panic (not `fail`, which exits) so the node is torn down by `Node::drop`.
        panic!(
            "sanity check: expected {m} ACTIVE mounts in the node's namespace, found {} mounts, {active} ACTIVE ({sample})",
            ours.len()
        );
    }
}

/// Peak heap growth (bytes) while one scan runs, the result included.
fn scan_heap() -> usize {
    heap_of(|| full_scan().1)
}

/// Peak heap growth (bytes) while `scan` runs, its result included.
fn heap_of(scan: impl FnOnce() -> Scan) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let scan = scan();
    let peak = PEAK.load(Ordering::Relaxed);
    drop(scan);
    peak.saturating_sub(before)
}

// ---------------------------------------------------------------------------------------------
// Statistics and the matrix.

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
    runs: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and minimum of a series.
fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort_unstable();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        runs: times.len(),
    }
}

struct Row {
    m: usize,
    f: usize,
    fds: usize,
    processes: usize,
    scan: Stats,
    floor: Stats,
    criu: Stats,
    criu_node: Stats,
    heap: usize,
}

fn run_one(config: &Config, m: usize, f: usize) -> Row {
    let setup = Instant::now();
    let node = build_node(NodeSpec::matrix(m, f, config.daemons))
        .unwrap_or_else(|e| fail(&format!("building the node (M={m}, F={f}): {e}")));
    let setup = setup.elapsed();

    let (_, first) = full_scan();
    check_scan(&first, &node, m);
    let plan = plan_floor(&first);
    let processes = first.stats.processes;
    let fds = first.stats.fds;
    drop(first);

    // All three series are interleaved (scan, floor, and CRIU every few iterations) so they
    // see the same cache and machine state and their ratios do not drift with the machine.
    let mut spent = [Duration::ZERO; 6];
    floor(&plan, &mut spent); // warm-up (the first scan above warmed the scan's path)
    spent = [Duration::ZERO; 6];
    let mut criu_times = vec![criu(node.builder, m)];
    let mut criu_node_times = vec![criu_node(node.builder, m)];
    // CRIU's algorithm is slow at large M×F: fewer runs (at least one) within the budget.
    let criu_runs = usize::try_from(config.budget.as_nanos() / criu_times[0].as_nanos().max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, config.iters);
    let criu_every = config.iters.div_ceil(criu_runs);
    let mut scan_times = Vec::new();
    let mut floor_times = Vec::new();
    let mut last_scan = None;
    for i in 0..config.iters {
        let (t, s) = full_scan();
        scan_times.push(t);
        last_scan = Some(s);
        floor_times.push(floor(&plan, &mut spent));
        if criu_times.len() < criu_runs && i % criu_every == criu_every - 1 {
            criu_times.push(criu(node.builder, m));
            criu_node_times.push(criu_node(node.builder, m));
        }
    }
    check_scan(last_scan.as_ref().expect("at least one scan"), &node, m);
    drop(last_scan);
    let (scan, floor) = (stats(scan_times), stats(floor_times));
    let (criu, criu_node) = (stats(criu_times), stats(criu_node_times));
    if config.verbose {
        let runs = u32::try_from(floor.runs).unwrap_or(1);
        let parts: Vec<String> = FLOOR_PHASES
            .iter()
            .zip(spent)
            .map(|(name, t)| format!("{name} {:.2}", ms(t / runs)))
            .collect();
        eprintln!(
            "  M={m} F={f}: floor breakdown (ms, mean): {}",
            parts.join(", ")
        );
    }
    let heap = {
        scan_heap(); // warm any lazily allocated state
        (0..3).map(|_| scan_heap()).min().unwrap_or(0)
    };
    drop(node);
    eprintln!(
        "  M={m} F={f}: node built in {:.0} ms; scan {}x, floor {}x, criu {}x",
        ms(setup),
        scan.runs,
        floor.runs,
        criu.runs
    );
    Row {
        m,
        f,
        fds,
        processes,
        scan,
        floor,
        criu,
        criu_node,
        heap,
    }
}

/// Runs one measurement `iters` times on a fresh node (for profilers); prints the median.
fn profile_one(config: &Config, m: usize, f: usize, only: &str) {
    let node = build_node(NodeSpec::matrix(m, f, config.daemons))
        .unwrap_or_else(|e| fail(&format!("building the node (M={m}, F={f}): {e}")));
    let (_, first) = full_scan();
    check_scan(&first, &node, m);
    let plan = plan_floor(&first);
    drop(first);
    let mut spent = [Duration::ZERO; 6];
    let mut times: Vec<Duration> = (0..config.iters)
        .map(|_| match only {
            "scan" => full_scan().0,
            "floor" => floor(&plan, &mut spent),
            "criu-node" => criu_node(node.builder, m),
            _ => criu(node.builder, m),
        })
        .collect();
    times.sort_unstable();
    println!(
        "M={m} F={f}: {only} median {:.2} ms over {} runs",
        ms(times[times.len() / 2]),
        times.len()
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        fail(
            "must run as root: it creates autofs mounts in a private mount namespace (try `sudo -E cargo bench -p autofs-core --bench scan`)",
        );
    }
    let config = Config::from_env();
    // Orphaned daemons and bystanders (if the builder dies first) are reparented to us, so we
    // reap them.
    nix::sys::prctl::set_child_subreaper(true)
        .unwrap_or_else(|e| fail(&format!("PR_SET_CHILD_SUBREAPER: {e}")));
    let total = Instant::now();
    for &mode in &config.modes {
        match mode {
            Mode::Matrix => run_matrix(&config),
            Mode::Busy => busy::run(&config),
            Mode::Agent => agent::run(&config),
            Mode::Namespaces => namespaces::run(&config),
        }
    }
    eprintln!("total bench time {:.1} s", total.elapsed().as_secs_f64());
}

fn run_matrix(config: &Config) {
    eprintln!(
        "autofs-core scan bench, M x F matrix: M in {:?}, F in {:?}, {} daemons, up to {} iterations",
        config.ms, config.fs, config.daemons, config.iters
    );
    let mut rows = Vec::new();
    for &f in &config.fs {
        for &m in &config.ms {
            match config.only.as_deref() {
                Some(only) => profile_one(config, m, f, only),
                None => rows.push(run_one(config, m, f)),
            }
        }
    }
    if config.only.is_none() {
        print_table(config, &rows);
    }
}

fn print_table(config: &Config, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let processes = rows.iter().map(|r| r.processes).max().unwrap_or(0);
    println!();
    println!(
        "autofs-core full scan vs. floor vs. CRIU per-mount ({cores} cores, {processes} processes on the machine incl. {} daemons + builder)",
        config.daemons
    );
    println!(
        "{:>5} {:>6} {:>6} | {:>17} | {:>17} | {:>19} | {:>19} | {:>17} {:>17} {:>17} | {:>8} {:>7}",
        "M",
        "F",
        "fds",
        "scan ms med (min)",
        "floor ms med (min)",
        "criu ms med (min)",
        "node ms med (min)",
        "scan/floor (min)",
        "criu/scan (min)",
        "node/scan (min)",
        "heap KiB",
        "B/mount"
    );
    for r in rows {
        println!(
            "{:>5} {:>6} {:>6} | {:>8.2} ({:>6.2}) | {:>8.2} ({:>6.2}) | {:>9.1} ({:>7.1}) | {:>9.1} ({:>7.1}) | {:>9.2} ({:>5.2}) {:>9.1} ({:>5.1}) {:>9.1} ({:>5.1}) | {:>8.1} {:>7}",
            r.m,
            r.f,
            r.fds,
            ms(r.scan.median),
            ms(r.scan.min),
            ms(r.floor.median),
            ms(r.floor.min),
            ms(r.criu.median),
            ms(r.criu.min),
            ms(r.criu_node.median),
            ms(r.criu_node.min),
            r.scan.median.as_secs_f64() / r.floor.median.as_secs_f64(),
            r.scan.min.as_secs_f64() / r.floor.min.as_secs_f64(),
            r.criu.median.as_secs_f64() / r.scan.median.as_secs_f64(),
            r.criu.min.as_secs_f64() / r.scan.min.as_secs_f64(),
            r.criu_node.median.as_secs_f64() / r.scan.median.as_secs_f64(),
            r.criu_node.min.as_secs_f64() / r.scan.min.as_secs_f64(),
            r.heap as f64 / 1024.0,
            r.heap / r.m,
        );
    }
    // Marginal heap per mount between consecutive M at the same F: flat means linear in M.
    for &f in &config.fs {
        let same: Vec<_> = rows.iter().filter(|r| r.f == f).collect();
        let slopes: Vec<String> = same
            .windows(2)
            .filter(|w| w[1].m > w[0].m)
            .map(|w| {
                let delta = w[1].heap as f64 - w[0].heap as f64;
                format!(
                    "M {}→{}: {:.0} B/mount",
                    w[0].m,
                    w[1].m,
                    delta / (w[1].m - w[0].m) as f64
                )
            })
            .collect();
        if !slopes.is_empty() {
            println!("heap growth at F={f}: {}", slopes.join(", "));
        }
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let slowest = |reference: fn(&Row) -> Duration| {
        rows.iter()
            .map(|r| {
                (
                    reference(r).as_secs_f64() / r.scan.median.as_secs_f64(),
                    r.m,
                    r.f,
                )
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    if let Some((ratio, m, f)) = slowest(|r| r.criu.median) {
        println!(
            "target at every point: faster than CRIU's per-mount algorithm (criu/scan > 1): {} (lowest criu/scan {ratio:.2} at M={m} F={f})",
            verdict(ratio > 1.0),
        );
    }
    if let Some((ratio, m, f)) = slowest(|r| r.criu_node.median) {
        println!(
            "  the same algorithm over every mount namespace of the node, as a scan covers (node/scan > 1): {} (lowest node/scan {ratio:.2} at M={m} F={f})",
            verdict(ratio > 1.0),
        );
    }
    if let Some(r) = rows.iter().find(|r| r.m == 1000 && r.f == 10000) {
        let scan = ms(r.scan.median);
        let vs_floor = r.scan.median.as_secs_f64() / r.floor.median.as_secs_f64();
        let vs_criu = r.criu.median.as_secs_f64() / r.scan.median.as_secs_f64();
        println!(
            "targets at M=1000 F=10000: scan {scan:.1} ms < 100 ms: {}; scan/floor {vs_floor:.2} <= 1.5: {}; criu/scan {vs_criu:.1} >= 20: {}",
            verdict(scan < 100.0),
            verdict(vs_floor <= 1.5),
            verdict(vs_criu >= 20.0)
        );
    }
}
