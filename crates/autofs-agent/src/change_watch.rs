//! Notices what a verdict rests on changing between scans, so that watchers, waiters and
//! metrics see it within about a second instead of at the next full scan:
//!
//! - a queue appearing or draining on a known read end: one `FIONREAD` per read end every
//!   `interval`, on a thread of its own that sleeps in between (nothing else is read, nothing
//!   is consumed, and no runtime thread wakes for it);
//! - a master exiting: one pidfd per master, which the runtime polls for free.
//!
//! Either wakes the background scanner, which then runs a scan (cheap: leader first).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use autofs_core::Fionread;
use autofs_core::changes::{KnownQueues, Readings, masters, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::snapshot::{Inventory, Snapshot};

/// Runs until `shutdown` turns true, notifying `changed` whenever a master of the latest scan
/// exits. Holds at most `max_pidfds` pidfds (its share of the descriptor budget).
pub async fn run(
    inventory: Arc<Inventory>,
    max_pidfds: usize,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(root) = inventory.proc_root() else {
        return; // no live proc root (benchmarks): no masters
    };
    if !root.is_own_pid_namespace() {
        tracing::info!(
            "the proc root is not this agent's pid namespace: master exits are seen at the next scan"
        );
        return;
    }
    let mut snapshots = inventory.subscribe();
    let mut exits: JoinSet<()> = JoinSet::new();
    let mut gone = BTreeSet::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        exits.abort_all();
        // At most the descriptors budgeted for it; others are seen at the next scan.
        let now_gone = arm(&mut exits, masters(&snapshot.scan), max_pidfds, &changed);
        if exit_news(&now_gone, &gone) {
            changed.notify_one();
        }
        gone = now_gone;
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}

/// Starts the thread that measures the latest scan's read ends every `interval` and notifies
/// `changed` when a queue differs from what the scan measured (or can no longer be measured).
/// It sleeps between passes, waits for a scan while no read end is known, and ends at
/// `shutdown`; like the scan thread, nobody joins it, so a `/proc` read stuck in the kernel
/// cannot hold up shutdown. `runtime` is the runtime whose channels it waits on.
///
/// # Errors
///
/// The error of spawning the thread.
pub fn spawn_queue_poll(
    inventory: Arc<Inventory>,
    interval: Duration,
    changed: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    runtime: Handle,
) -> std::io::Result<()> {
    if inventory.proc_root().is_none() {
        return Ok(()); // no live proc root (benchmarks): no queues
    }
    std::thread::Builder::new()
        .name("queue-poll".into())
        .spawn(move || poll_queues(&inventory, interval, &changed, shutdown, &runtime))?;
    Ok(())
}

fn poll_queues(
    inventory: &Inventory,
    interval: Duration,
    changed: &Notify,
    mut shutdown: watch::Receiver<bool>,
    runtime: &Handle,
) {
    let mut snapshots = inventory.subscribe();
    let mut baseline = Baseline::default();
    let mut readings = Readings::default();
    loop {
        baseline.refresh(&mut snapshots);
        if baseline.queues.is_empty() {
            let ended = runtime.block_on(async {
                tokio::select! {
                    changed = snapshots.changed() => changed.is_err(),
                    _ = shutdown.wait_for(|stop| *stop) => true,
                }
            });
            if ended {
                return;
            }
            continue;
        }
        std::thread::sleep(interval);
        if *shutdown.borrow() {
            return;
        }
        // Compare with the scan published during the sleep, if any: a queue that drained just
        // after a scan showed it INTERIM is then noticed at this pass, not one pass later.
        baseline.refresh(&mut snapshots);
        if inventory
            .proc_root()
            .is_some_and(|root| baseline.queues.changed(root, &Fionread, &mut readings))
        {
            changed.notify_one();
        }
    }
}

/// The read ends of the latest scan and what it measured on them.
#[derive(Default)]
struct Baseline {
    generation: Option<u64>,
    queues: KnownQueues,
}

impl Baseline {
    /// Takes the latest snapshot's read ends if a scan was published since the last call.
    fn refresh(&mut self, snapshots: &mut watch::Receiver<Arc<Snapshot>>) {
        let snapshot = snapshots.borrow_and_update().clone();
        if self.generation != Some(snapshot.generation) {
            self.generation = Some(snapshot.generation);
            self.queues = KnownQueues::from_scan(&snapshot.scan);
        }
    }
}

/// Whether masters found gone when their pidfds were armed (`now_gone`) call for a scan: a
/// master that exited between the scan and the arming does, once. The scan that follows may
/// still name it (the leader of a mount whose daemon died stays its `pgrp=`): found gone
/// again (`gone_before`), it is not news, and asking again would rescan without end.
fn exit_news(now_gone: &BTreeSet<i32>, gone_before: &BTreeSet<i32>) -> bool {
    !now_gone.is_subset(gone_before)
}

/// Arms a pidfd watch for each of the first `max_pidfds` of `pids` (see [`watch_exit`]);
/// returns the pids that had already exited.
fn arm(
    exits: &mut JoinSet<()>,
    pids: BTreeSet<i32>,
    max_pidfds: usize,
    changed: &Arc<Notify>,
) -> BTreeSet<i32> {
    pids.into_iter()
        .take(max_pidfds)
        .filter(|&pid| !watch_exit(exits, pid, changed.clone()))
        .collect()
}

/// Notifies `changed` once `pid` exits. Returns false when `pid` has exited already (no
/// process: `ESRCH`); other failures leave its exit to the next scan.
fn watch_exit(exits: &mut JoinSet<()>, pid: i32, changed: Arc<Notify>) -> bool {
    let registered = pidfd_open(pid).and_then(|fd| {
        // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until it is dropped,
        // which happens only when the `AsyncFd` holding it is dropped.
        #[allow(unsafe_code)]
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into())
    });
    let pidfd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(pid, error = %e, "no pidfd; the master's exit is seen at the next scan");
            return e.raw_os_error() != Some(nix::libc::ESRCH);
        }
    };
    exits.spawn(async move {
        if pidfd.readable().await.is_ok() {
            changed.notify_one();
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_found_gone_asks_for_one_scan_not_one_per_scan() {
        let set = |pids: &[i32]| pids.iter().copied().collect::<BTreeSet<i32>>();
        assert!(!exit_news(&set(&[]), &set(&[])));
        assert!(exit_news(&set(&[7]), &set(&[])), "exited after the scan");
        assert!(
            !exit_news(&set(&[7]), &set(&[7])),
            "the next scan still names it"
        );
        assert!(exit_news(&set(&[7, 9]), &set(&[7])), "another one exited");
        assert!(!exit_news(&set(&[]), &set(&[7])));
    }

    #[tokio::test]
    async fn arming_tells_exited_masters_and_watches_live_ones() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let live = i32::try_from(child.id()).expect("pid");
        // Above the kernel's largest pid_max: no such process.
        let gone = 4_194_305;
        let changed = Arc::new(Notify::new());
        let mut exits = JoinSet::new();
        let found_gone = arm(&mut exits, [live, gone].into(), 16, &changed);
        assert_eq!(found_gone, [gone].into());
        // Only the live master's exit notifies.
        child.kill().expect("kill");
        child.wait().expect("reap");
        tokio::time::timeout(Duration::from_secs(60), changed.notified())
            .await
            .expect("the exit of a watched master is noticed (hang guard)");
    }
}
