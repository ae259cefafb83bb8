//! The walk of the kernel's list of mount namespaces (`autofs_core::mount_namespaces`) that
//! the agent's polling thread runs every `--queue-poll-interval` to notice namespaces made
//! between scans, for K namespaces each held by one process of its own, against the
//! readlink of every process's `ns/mnt` (the way a scan finds the namespaces, and the only
//! other way to notice a new one without `CAP_SYS_ADMIN`). Both run interleaved on the same
//! machine state; the walk's CPU share at the agent's default 500 ms interval is derived from
//! its median.

use std::time::{Duration, Instant};

use autofs_core::mount_namespaces::NamespaceWalk;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getpid, pipe2};

use super::criu::ns_walk;
use super::node::{child_exit, die_with_parent, send};
use super::{Config, Stats, fail, ms, stats};

/// The agent's default `--queue-poll-interval`.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// K processes, each alone in a mount namespace of its own; dropping it kills and reaps them.
struct Holders(Vec<Pid>);

impl Drop for Holders {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for &pid in &self.0 {
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
        }
    }
}

/// Forks `k` holders and waits until each has unshared its mount namespace.
fn hold_namespaces(k: usize) -> Result<Holders, String> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let bench = getpid();
    let mut holders = Holders(Vec::with_capacity(k));
    for _ in 0..k {
        // SAFETY: the bench is single-threaded here; the child runs only async-signal-safe
        // work (prctl, unshare, write, pause) before `_exit`.
        #[allow(unsafe_code)]
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                use std::os::fd::AsRawFd;
                let report = ready_w.as_raw_fd();
                child_exit(
                    || {
                        die_with_parent(bench)?;
                        unshare(CloneFlags::CLONE_NEWNS)
                            .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
                        send(report, "ok\n");
                        loop {
                            nix::unistd::pause();
                        }
                    },
                    report,
                )
            }
            ForkResult::Parent { child } => holders.0.push(child),
        }
    }
    drop(ready_w);
    // One line per holder ("ok", or "err why"); EOF before that means one died silently.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::from(ready_r)));
    for _ in 0..k {
        match lines.next() {
            Some(Ok(line)) if line == "ok" => {}
            Some(Ok(line)) => return Err(line),
            Some(Err(e)) => return Err(format!("reading the holders' readiness: {e}")),
            None => return Err("a holder died before it was ready".into()),
        }
    }
    Ok(holders)
}

struct Row {
    k: usize,
    namespaces: usize,
    processes: usize,
    walk: Stats,
    proc_walk: Stats,
}

pub fn run(config: &Config) {
    let walk = NamespaceWalk::open().unwrap_or_else(|e| fail(&format!("namespace walk: {e}")));
    eprintln!(
        "autofs-core namespace walk bench: K in {:?} namespaces held, {} iterations",
        config.namespaces, config.iters
    );
    let mut rows = Vec::new();
    for &k in &config.namespaces {
        let before = walk
            .walk()
            .unwrap_or_else(|e| fail(&format!("walk: {e}")))
            .len();
        let holders =
            hold_namespaces(k).unwrap_or_else(|e| fail(&format!("holding {k} namespaces: {e}")));
        let mut walks = Vec::with_capacity(config.iters);
        let mut proc_walks = Vec::with_capacity(config.iters);
        let mut namespaces = 0;
        let mut processes = 0;
        for i in 0..config.iters {
            // Alternating order: neither series always runs on the other's warm caches.
            let mut one_walk = || {
                let start = Instant::now();
                let seen = walk.walk();
                walks.push(start.elapsed());
                namespaces = seen.unwrap_or_else(|e| fail(&format!("walk: {e}"))).len();
            };
            let mut one_proc_walk = || {
                let (t, p) = ns_walk();
                proc_walks.push(t);
                processes = p;
            };
            if i % 2 == 0 {
                one_walk();
                one_proc_walk();
            } else {
                one_proc_walk();
                one_walk();
            }
        }
        drop(holders);
        if namespaces < before + k {
            fail(&format!(
                "the walk saw {namespaces} namespaces with {k} held, {before} before: it misses some"
            ));
        }
        rows.push(Row {
            k,
            namespaces,
            processes,
            walk: stats(walks),
            proc_walk: stats(proc_walks),
        });
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!();
    println!("mount namespace walk (NS_MNT_GET_PREV/NEXT) vs. readlink of every process's ns/mnt");
    println!(
        "{:>5} {:>10} {:>9} | {:>17} {:>9} | {:>17} | {:>14} | {:>13}",
        "K",
        "namespaces",
        "processes",
        "walk ms med (min)",
        "µs/ns",
        "/proc ms med (min)",
        "/proc / walk",
        "walk % core"
    );
    for r in rows {
        println!(
            "{:>5} {:>10} {:>9} | {:>8.3} ({:>6.3}) {:>9.2} | {:>8.3} ({:>6.3}) | {:>14.1} | {:>12.3}%",
            r.k,
            r.namespaces,
            r.processes,
            ms(r.walk.median),
            ms(r.walk.min),
            r.walk.median.as_secs_f64() * 1e6 / r.namespaces as f64,
            ms(r.proc_walk.median),
            ms(r.proc_walk.min),
            r.proc_walk.median.as_secs_f64() / r.walk.median.as_secs_f64(),
            100.0 * r.walk.median.as_secs_f64() / POLL_INTERVAL.as_secs_f64(),
        );
    }
    println!(
        "(walk % core: the walk's median every {} ms, the agent's default --queue-poll-interval)",
        POLL_INTERVAL.as_millis()
    );
}
