//! Notices what a verdict rests on changing between scans, so that watchers, waiters and
//! metrics see it within about a second instead of at the next full scan:
//!
//! - a queue appearing or draining on a known read end: one `FIONREAD` per read end every
//!   `interval` (nothing else is read, nothing is consumed);
//! - a master exiting: one pidfd per master, which the runtime polls for free.
//!
//! Either wakes the background scanner, which then runs a scan (cheap: leader first).

use std::sync::Arc;
use std::time::Duration;

use autofs_core::Fionread;
use autofs_core::changes::{KnownQueues, masters, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::snapshot::Inventory;

/// Runs until `shutdown` turns true, notifying `changed` whenever a queue or a master changed.
/// Holds at most `max_pidfds` pidfds (its share of the descriptor budget).
pub async fn run(
    inventory: Arc<Inventory>,
    interval: Duration,
    max_pidfds: usize,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(root) = inventory.proc_root() else {
        return; // no live proc root (benchmarks): no queues, no masters
    };
    let own_pids = root.is_own_pid_namespace();
    if !own_pids {
        tracing::info!(
            "the proc root is not this agent's pid namespace: master exits are seen at the next scan"
        );
    }
    let mut snapshots = inventory.subscribe();
    let mut generation = u64::MAX;
    let mut queues = KnownQueues::default();
    let mut exits: JoinSet<()> = JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.generation != generation {
            generation = snapshot.generation;
            queues = KnownQueues::from_scan(&snapshot.scan);
            exits.abort_all();
            if own_pids {
                // At most the descriptors budgeted for it; others are seen at the next scan.
                for pid in masters(&snapshot.scan).into_iter().take(max_pidfds) {
                    watch_exit(&mut exits, pid, changed.clone());
                }
            }
        }
        tokio::select! {
            _ = ticker.tick() => {
                if queues.is_empty() {
                    continue;
                }
                let (inventory, known) = (inventory.clone(), queues.clone());
                let moved = tokio::task::spawn_blocking(move || {
                    inventory
                        .proc_root()
                        .is_some_and(|root| known.changed(root, &Fionread))
                })
                .await
                .unwrap_or(true);
                if moved {
                    changed.notify_one();
                }
            }
            Ok(()) = snapshots.changed() => {}
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
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
