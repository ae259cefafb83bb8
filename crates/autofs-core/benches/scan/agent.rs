//! The agent on the busy node: the release `autofs-agent serve` at its default settings
//! (only the listeners moved to free loopback ports) runs next to a busy node, and its CPU
//! time (`utime + stime` of `/proc/<pid>/stat`) and resident memory (`VmRSS`, `VmHWM`) are
//! sampled every second over `AUTOFS_BENCH_AGENT_SECS` (60) seconds once it has started. At the
//! end its own metrics say how many scans it ran and how long they took, and that it saw the
//! node's mounts.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::node::{NodeSpec, build_node};
use super::{Config, fail};

/// `autofs-agent serve --scan-interval` by default (crates/autofs-agent/src/main.rs).
const DEFAULT_INTERVAL_SECS: f64 = 30.0;

/// The agent's process; killed and reaped when dropped (before the node, declared after it).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One sample of `/proc/<pid>`.
struct Sample {
    /// utime + stime, clock ticks.
    ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    /// Bytes read through read(2)-like calls (`rchar` of `/proc/<pid>/io`).
    rchar: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))?
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        ticks,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
        rchar,
    })
}

/// The agent's log so far, without terminal colours.
fn log_text(log: &mut File) -> String {
    let mut raw = String::new();
    let _ = log.rewind();
    let _ = log.read_to_string(&mut raw);
    let mut text = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(at) = rest.find('\x1b') {
        text.push_str(&rest[..at]);
        rest = rest[at..].find('m').map_or("", |end| &rest[at + end + 1..]);
    }
    text.push_str(rest);
    text
}

/// `GET /metrics` from the agent's metrics address as it logged it.
fn scrape(addr: &str) -> Result<String, String> {
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    autofs_testkit::http::scrape(addr).map_err(|e| e.to_string())
}

/// The value of the sample `name` (no labels) in a Prometheus text body.
fn metric(body: &str, name: &str) -> Option<f64> {
    autofs_testkit::http::sample_value(body, name)
}

pub fn run(config: &Config) {
    let bin = &config.agent_bin;
    if !bin.is_file() {
        fail(&format!(
            "no agent binary at {}: build it with `cargo build --release -p autofs-agent` or set AUTOFS_BENCH_AGENT_BIN (scripts/bench-agent-busy-node does both)",
            bin.display()
        ));
    }
    let (m, p, pf) = (config.busy_m, config.agent_p, config.agent_pf);
    eprintln!(
        "autofs-agent on a busy node: M={m}, P={p}, F={pf}, {} s at default settings ({})",
        config.agent_secs,
        bin.display()
    );
    let node = build_node(NodeSpec {
        mounts: m,
        daemon_fds: 10,
        daemons: 1,
        bystanders: p,
        bystander_fds: pf,
        place: config.place,
    })
    .unwrap_or_else(|e| fail(&format!("building the busy node: {e}")));

    let mut log = tempfile::tempfile().unwrap_or_else(|e| fail(&format!("log file: {e}")));
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log.try_clone().unwrap_or_else(|e| fail(&e.to_string())));
    // Default settings: no configuration from the environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTOFS_AGENT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let mut agent = Agent(
        cmd.spawn()
            .unwrap_or_else(|e| fail(&format!("{}: {e}", bin.display()))),
    );
    let pid = agent.0.id();

    // Ready when it logs its listeners (after binding them; its first scan runs at start).
    let metrics_addr = loop {
        let text = log_text(&mut log);
        if let Some(addr) = text
            .lines()
            .filter(|l| l.contains("listening"))
            .find_map(|l| l.split_once("metrics=")?.1.split_whitespace().next())
        {
            break addr.trim_matches('"').to_owned();
        }
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("the agent exited ({status}) before listening; its log:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not listen within 60 s; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the start-up scan finish: measure the steady state.
    std::thread::sleep(Duration::from_secs(2));
    let scans_before = scrape(&metrics_addr)
        .ok()
        .and_then(|body| metric(&body, "autofs_scan_duration_seconds_count"));
    let start = sample(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}: the agent exited?"));
    let t0 = Instant::now();
    let mut peak_rss = start.rss_kib;
    let mut end = None;
    for _ in 0..config.agent_secs {
        std::thread::sleep(Duration::from_secs(1));
        let now = sample(pid).unwrap_or_else(|| {
            panic!(
                "the agent exited during the measurement; its log:\n{}",
                log_text(&mut log)
            )
        });
        peak_rss = peak_rss.max(now.rss_kib);
        end = Some((Instant::now(), now));
    }
    let Some((end_at, end)) = end else {
        unreachable!("at least one second is sampled")
    };
    let body = scrape(&metrics_addr).unwrap_or_else(|e| {
        eprintln!("  (could not scrape the agent's metrics: {e})");
        String::new()
    });
    drop(agent);
    drop(node);

    // SAFETY: sysconf reads a constant.
    #[allow(unsafe_code)]
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    let wall = (end_at - t0).as_secs_f64();
    let cpu = (end.ticks - start.ticks) as f64 / hz;
    let scans = metric(&body, "autofs_scan_duration_seconds_count");
    let scan_sum = metric(&body, "autofs_scan_duration_seconds_sum");
    let mounts: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("autofs_mounts{") && !l.ends_with(" 0"))
        .collect();
    println!();
    println!(
        "autofs-agent serve (default settings) on a busy node: M={m} P={p} F={pf}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  CPU over {wall:.1} s after start-up: {cpu:.2} s = {:.2} % of one core (target <= 0.3 %); start-up (listen + 2 s): {:.2} s",
        cpu / wall * 100.0,
        start.ticks as f64 / hz
    );
    println!(
        "  RSS: peak {:.1} MiB sampled each second, VmHWM {:.1} MiB (target <= 16 MiB); /proc read {:.1} MiB/min",
        peak_rss as f64 / 1024.0,
        end.hwm_kib as f64 / 1024.0,
        (end.rchar - start.rchar) as f64 / 1048576.0 / wall * 60.0
    );
    match (scans, scan_sum, scans_before) {
        (Some(n), Some(sum), Some(before)) if n > before => {
            let window = n - before;
            println!(
                "  the agent's own metrics: {window:.0} scans in the window ({:.1} ms of CPU each; the {:.0} s interval alone gives {:.0}, mount-table changes anywhere on the machine wake more), {:.1} ms each on average since start; mounts: {}",
                cpu / window * 1e3,
                DEFAULT_INTERVAL_SECS,
                wall / DEFAULT_INTERVAL_SECS,
                sum / n * 1e3,
                mounts.join(", ")
            );
            println!(
                "  at one scan per interval: {:.2} % of one core",
                cpu / window / DEFAULT_INTERVAL_SECS * 100.0
            );
        }
        _ => println!("  (the agent's metrics had no scan histogram)"),
    }
}
