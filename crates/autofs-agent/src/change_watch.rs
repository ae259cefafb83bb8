//! Notices what a verdict rests on changing between scans, so that watchers, waiters and
//! metrics see it within about a second instead of at the next full scan:
//!
//! - a queue appearing or draining on a known read end: one `FIONREAD` per read end every
//!   `interval`, on a thread of its own that sleeps in between (nothing else is read, nothing
//!   is consumed, and no runtime thread wakes for it);
//! - a master exiting: one pidfd per master, which the runtime polls for free.
//!
//! Either wakes the background scanner, which then runs a scan (cheap: leader first).

use std::sync::Arc;
use std::time::Duration;

use autofs_core::Fionread;
use autofs_core::changes::{KnownQueues, masters, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::snapshot::Inventory;

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
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        exits.abort_all();
        // At most the descriptors budgeted for it; others are seen at the next scan.
        for pid in masters(&snapshot.scan).into_iter().take(max_pidfds) {
            watch_exit(&mut exits, pid, changed.clone());
        }
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
    let mut generation = u64::MAX;
    let mut queues = KnownQueues::default();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.generation != generation {
            generation = snapshot.generation;
            queues = KnownQueues::from_scan(&snapshot.scan);
        }
        if queues.is_empty() {
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
        if inventory
            .proc_root()
            .is_some_and(|root| queues.changed(root, &Fionread))
        {
            changed.notify_one();
        }
    }
}

/// Notifies `changed` once `pid` exits (at once if it is already gone).
fn watch_exit(exits: &mut JoinSet<()>, pid: i32, changed: Arc<Notify>) {
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
            if e.raw_os_error() == Some(nix::libc::ESRCH) {
                changed.notify_one();
            }
            return;
        }
    };
    exits.spawn(async move {
        if pidfd.readable().await.is_ok() {
            changed.notify_one();
        }
    });
}
