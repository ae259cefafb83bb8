//! The busy node: M autofs mounts of one daemon among P bystander processes holding F open
//! fds each, for every (P, F) asked. Per point, interleaved in one run on the same node state:
//!
//! * the scan, with one `Scanner` reused across iterations as the agent does (its holder memo
//!   carries over), and the first scan of a fresh `Scanner` on its own;
//! * CRIU's lookup floor ([`lookup_floor`]);
//! * the readlink of every process's `ns/mnt` ([`ns_walk`]), the part of that floor that must
//!   touch every process;
//! * the whole-node census every scan ran before the leader-first census:
//!   `PipeIndex::build` over every process for the mounts' pipes. The scan of that time was
//!   today's scan plus that census (the leaders' fds, which today's scan lists instead, are a
//!   few dozen readlinks), so the baseline column is, per iteration, scan + census.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use autofs_core::Scanner;
use autofs_core::pipes::PipeIndex;
use autofs_core::proc_root::ProcRoot;

use super::criu::{LOOKUP_PHASES, lookup_floor, ns_walk};
use super::node::{NodeSpec, build_node};
use super::sys::{CPath, open_proc, read_rel};
use super::{Config, Stats, check_scan, fail, heap_of, ms, stats};

/// Extra fds of the one daemon (dups of /dev/null): an `automount` holds a handful.
const DAEMON_FDS: usize = 10;

struct Row {
    p: usize,
    pf: usize,
    processes: usize,
    /// fds on the machine (counted by the whole-node census).
    node_fds: usize,
    first: Duration,
    /// Pipes the first scan and the later ones needed a whole-node census for.
    census_pipes: (usize, usize),
    /// Later scans that ran a census (for other tests' pipes on a shared machine).
    censused: usize,
    scan: Stats,
    /// The scans that ran no census.
    quiet: Option<Stats>,
    floor: Stats,
    ns: Stats,
    census: Stats,
    baseline: Stats,
    heap: usize,
}

pub fn run(config: &Config) {
    eprintln!(
        "autofs-core scan bench, busy node: M={} (1 daemon), P in {:?}, F in {:?} (bystanders in the {} namespace), up to {} iterations",
        config.busy_m,
        config.ps,
        config.pfs,
        match config.place {
            super::Place::Node => "node's",
            super::Place::Host => "bench's",
        },
        config.iters
    );
    let mut rows = Vec::new();
    for &pf in &config.pfs {
        for &p in &config.ps {
            if config.only.as_deref() == Some("scan") {
                profile_scan(config, p, pf);
                continue;
            }
            rows.push(run_one(config, p, pf));
        }
    }
    if rows.is_empty() {
        return;
    }
    print_table(config, &rows);
}

fn run_one(config: &Config, p: usize, pf: usize) -> Row {
    let m = config.busy_m;
    let spec = NodeSpec {
        mounts: m,
        daemon_fds: DAEMON_FDS,
        daemons: 1,
        bystanders: p,
        bystander_fds: pf,
        place: config.place,
    };
    let setup = Instant::now();
    let node = build_node(spec)
        .unwrap_or_else(|e| fail(&format!("building the busy node (P={p}, F={pf}): {e}")));
    let setup = setup.elapsed();

    let scanner = Scanner::new("/proc", "bench").unwrap_or_else(|e| fail(&format!("scanner: {e}")));
    let start = Instant::now();
    let first = scanner
        .scan()
        .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
    let first_time = start.elapsed();
    check_scan(&first, &node, m);
    let processes = first.stats.processes;
    let first_census = first.stats.census_pipes;
    // The pipes the scan before the leader-first census looked for: every mount's.
    let wanted: HashSet<u64> = first
        .reports
        .iter()
        .map(|r| r.pipe_ino)
        .filter(|&i| i != 0)
        .collect();
    let ours: Vec<u64> = first
        .reports
        .iter()
        .filter(|r| r.mnt_ns == node.mnt_ns)
        .map(|r| r.pipe_ino)
        .collect();
    // Members of the node's namespace: a scan once read `stat` + `status` of each to choose the
    // namespace's owner (the tree CRIU dumps); now `stat` alone, remembered across scans. Those
    // old reads are timed alone for the verbose breakdown.
    let members: Vec<i32> = first
        .namespaces
        .iter()
        .filter(|n| n.mnt_ns == node.mnt_ns)
        .flat_map(|n| n.pids.iter().copied())
        .collect();
    drop(first);
    let root = ProcRoot::open("/proc").unwrap_or_else(|e| fail(&format!("/proc: {e}")));
    let census = |root: &ProcRoot| {
        let pids = root.pids().unwrap_or_else(|e| fail(&format!("/proc: {e}")));
        let start = Instant::now();
        let index = PipeIndex::build(root, &pids, &wanted);
        let elapsed = start.elapsed();
        assert!(
            ours.iter()
                .all(|&ino| index.ends(ino).iter().any(|e| e.is_read_end())),
            "the whole-node census missed a read end of the node's mounts"
        );
        (elapsed, index.fds_seen())
    };

    // Warm-up of the references (the first scan warmed the scan's path).
    let mut spent = [Duration::ZERO; 4];
    lookup_floor(m, &mut spent);
    ns_walk();
    let (_, node_fds) = census(&root);
    spent = [Duration::ZERO; 4];

    let mut iters = config.iters;
    let mut census_pipes = 0;
    let mut censused = 0;
    let mut quiet = Vec::new();
    let (mut scans, mut floors, mut nss, mut censuses, mut baselines) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut member_times = Vec::new();
    let mut i = 0;
    while i < iters {
        let round = Instant::now();
        // The census first: it sweeps every fd of the node through the caches. The three
        // measurements then take turns right after it, so none always runs cold (the scan did
        // when it came first: 1.03–1.10 against 0.42 ms at P=100, F=100).
        let (c, _) = census(&root);
        censuses.push(c);
        for slot in 0..3 {
            match (i + slot) % 3 {
                0 => {
                    let start = Instant::now();
                    let scan = scanner
                        .scan()
                        .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
                    let t = start.elapsed();
                    census_pipes = census_pipes.max(scan.stats.census_pipes);
                    if scan.stats.census_pipes == 0 {
                        quiet.push(t);
                    } else {
                        censused += 1;
                    }
                    check_scan(&scan, &node, m);
                    drop(scan);
                    scans.push(t);
                    baselines.push(t + c);
                }
                1 => floors.push(lookup_floor(m, &mut spent)),
                _ => nss.push(ns_walk().0),
            }
        }
        if config.verbose {
            member_times.push(member_reads(&members));
        }
        if i == 0 {
            // Slow points run fewer iterations (at least 5) within the budget.
            let budget = config.budget * 3;
            let fit = budget.as_nanos() / round.elapsed().as_nanos().max(1);
            iters = usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(5, config.iters.max(5));
        }
        i += 1;
    }
    let heap = (0..3)
        .map(|_| {
            heap_of(|| {
                scanner
                    .scan()
                    .unwrap_or_else(|e| fail(&format!("scan failed: {e}")))
            })
        })
        .min()
        .unwrap_or(0);
    drop(node);
    let floor = stats(floors);
    if config.verbose {
        let runs = u32::try_from(floor.runs).unwrap_or(1);
        let parts: Vec<String> = LOOKUP_PHASES
            .iter()
            .zip(spent)
            .map(|(name, t)| format!("{name} {:.2}", ms(t / runs)))
            .collect();
        eprintln!(
            "  P={p} F={pf}: lookup floor breakdown (ms, mean): {}; stat + status of the node namespace's {} members (median): {:.2}",
            parts.join(", "),
            members.len(),
            ms(stats(member_times).median)
        );
    }
    eprintln!(
        "  P={p} F={pf}: node built in {:.0} ms; {} iterations",
        ms(setup),
        floor.runs
    );
    Row {
        p,
        pf,
        processes,
        node_fds,
        first: first_time,
        census_pipes: (first_census, census_pipes),
        censused,
        scan: stats(scans),
        quiet: (!quiet.is_empty()).then(|| stats(quiet)),
        floor,
        ns: stats(nss),
        census: stats(censuses),
        baseline: stats(baselines),
        heap,
    }
}

/// `AUTOFS_BENCH_ONLY=scan`: the kept `Scanner`'s scans alone, `ITERS` times after a first
/// one (for `perf record`, `strace -c`).
fn profile_scan(config: &Config, p: usize, pf: usize) {
    let spec = NodeSpec {
        mounts: config.busy_m,
        daemon_fds: DAEMON_FDS,
        daemons: 1,
        bystanders: p,
        bystander_fds: pf,
        place: config.place,
    };
    let node = build_node(spec)
        .unwrap_or_else(|e| fail(&format!("building the busy node (P={p}, F={pf}): {e}")));
    let scanner = Scanner::new("/proc", "bench").unwrap_or_else(|e| fail(&format!("scanner: {e}")));
    let first = scanner
        .scan()
        .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
    check_scan(&first, &node, config.busy_m);
    drop(first);
    let times: Vec<Duration> = (0..config.iters)
        .map(|_| {
            let start = Instant::now();
            let scan = scanner
                .scan()
                .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
            let t = start.elapsed();
            drop(scan);
            t
        })
        .collect();
    let s = stats(times);
    eprintln!(
        "P={p} F={pf}: kept scanner's scan median {:.2} ms (min {:.2}) over {} runs",
        ms(s.median),
        ms(s.min),
        s.runs
    );
}

/// `stat` + `status` of every pid, raw reads into one buffer (no parsing).
fn member_reads(pids: &[i32]) -> Duration {
    let start = Instant::now();
    let mut path = CPath(String::with_capacity(64));
    let mut buf = Vec::with_capacity(1 << 14);
    let proc = open_proc();
    for &pid in pids {
        read_rel(proc.as_fd(), path.set(format_args!("{pid}/stat")), &mut buf);
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/status")),
            &mut buf,
        );
    }
    start.elapsed()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn print_table(config: &Config, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "busy node: M={} autofs mounts of 1 daemon among P bystanders with F fds each (pipe ends), {cores} cores; ms, median (min)",
        config.busy_m
    );
    println!(
        "{:>5} {:>4} {:>5} {:>7} | {:>7} | {:>15} | {:>15} | {:>15} | {:>7} | {:>8} | {:>15} | {:>11} {:>11} {:>14} | {:>8} | {:>8}",
        "P",
        "F",
        "procs",
        "fds",
        "1st",
        "scan",
        "quiet scan",
        "criu floor",
        "ns/mnt",
        "census",
        "baseline",
        "scan/floor",
        "quiet/floor",
        "baseline/scan",
        "censuses",
        "heap KiB"
    );
    for r in rows {
        let quiet = r.quiet.as_ref();
        let q = |f: fn(&Stats) -> Duration| quiet.map_or(f64::NAN, |s| ms(f(s)));
        let qr = |f: fn(&Stats) -> Duration| quiet.map_or(f64::NAN, |s| ratio(f(s), f(&r.floor)));
        println!(
            "{:>5} {:>4} {:>5} {:>7} | {:>7.2} | {:>6.2} ({:>6.2}) | {:>6.2} ({:>6.2}) | {:>6.2} ({:>6.2}) | {:>7.2} | {:>8.1} | {:>6.1} ({:>6.1}) | {:>4.2} ({:>4.2}) {:>4.2} ({:>4.2}) {:>6.1} ({:>5.1}) | {:>2}+{:>2}/{:>2} | {:>8.1}",
            r.p,
            r.pf,
            r.processes,
            r.node_fds,
            ms(r.first),
            ms(r.scan.median),
            ms(r.scan.min),
            q(|s| s.median),
            q(|s| s.min),
            ms(r.floor.median),
            ms(r.floor.min),
            ms(r.ns.median),
            ms(r.census.median),
            ms(r.baseline.median),
            ms(r.baseline.min),
            ratio(r.scan.median, r.floor.median),
            ratio(r.scan.min, r.floor.min),
            qr(|s| s.median),
            qr(|s| s.min),
            ratio(r.baseline.median, r.scan.median),
            ratio(r.baseline.min, r.scan.min),
            r.census_pipes.0,
            r.censused,
            r.scan.runs,
            r.heap as f64 / 1024.0,
        );
    }
    // Growth with P at the same F: the scan's marginal cost per process against the ns/mnt
    // walk's (the floor's part that must touch every process).
    for &pf in &config.pfs {
        let same: Vec<_> = rows.iter().filter(|r| r.pf == pf).collect();
        let slopes: Vec<String> = same
            .windows(2)
            .filter(|w| w[1].p > w[0].p)
            .map(|w| {
                let per = |a: Duration, b: Duration| {
                    (b.as_secs_f64() - a.as_secs_f64()) * 1e6 / (w[1].p - w[0].p) as f64
                };
                // The scans without a census for other pipes of the machine, when there are.
                let quiet = |r: &Row| r.quiet.as_ref().map_or(r.scan.median, |q| q.median);
                let scan = per(quiet(w[0]), quiet(w[1]));
                let ns = per(w[0].ns.median, w[1].ns.median);
                format!(
                    "P {}→{}: scan {scan:.1} µs/process, ns/mnt {ns:.1} µs/process ({:.1}×)",
                    w[0].p,
                    w[1].p,
                    scan / ns
                )
            })
            .collect();
        if !slopes.is_empty() {
            println!("growth at F={pf}: {}", slopes.join("; "));
        }
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(r) = rows
        .iter()
        .find(|r| r.p == 2000 && r.pf == 100 && config.busy_m == 3)
    {
        let vs_floor = ratio(r.scan.median, r.floor.median);
        let quiet = r
            .quiet
            .as_ref()
            .map_or(f64::NAN, |q| ratio(q.median, r.floor.median));
        println!(
            "target at M=3 P=2000 F=100: scan/floor {vs_floor:.2} <= 1.5: {}; without the scans that ran a census for other pipes of the machine ({} of {}): {quiet:.2}: {} (whole-node census baseline {:.1}× the scan)",
            verdict(vs_floor <= 1.5),
            r.censused,
            r.scan.runs,
            verdict(quiet <= 1.5),
            ratio(r.baseline.median, r.scan.median)
        );
    }
}
