//! Wakes the background scanner when a mount table changes: the core's watcher
//! ([`autofs_core::mount_watch`]) over the `mountinfo` files each scan read and kept open, one
//! per mount namespace (at most the descriptor budget). A table opened before the scan read it
//! reports every change made after that read, so no change falls between a scan and the watch
//! that follows it.
//!
//! The wait is `poll(2)` on a thread of its own, which sleeps until a table changes or a task
//! says that a scan was published (a byte on a pipe), then takes that scan's tables from the
//! inventory. No timer (but a pause after a failed wait), no read of the tables.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use autofs_core::mount_watch::MountTableWatch;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::snapshot::Inventory;

/// Starts watching the mount tables of every later scan, at most `max_tables` of them (its
/// share of the descriptor budget): from now on each scan keeps its tables open for the watch.
/// Call it before the first scan. Runs until `shutdown` turns true: the task returned, which
/// tells the thread of each new scan, ends then, and with it the thread. Nothing to watch without a live
/// procfs (fixture trees, benchmarks): then `None`.
///
/// # Errors
///
/// Creating the wake pipe or spawning the thread failed.
pub fn spawn(
    inventory: Arc<Inventory>,
    max_tables: usize,
    changed: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if !inventory.proc_root().is_some_and(|root| root.is_procfs()) {
        return Ok(None);
    }
    let (wake_rx, wake_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    inventory.keep_open_tables(max_tables);
    let theirs = inventory.clone();
    std::thread::Builder::new()
        .name("mount-watch".into())
        .spawn(move || watch_tables(&theirs, &wake_rx, &changed))?;
    Ok(Some(tokio::spawn(tell_of_scans(
        inventory, wake_tx, shutdown,
    ))))
}

/// Wakes the thread for each published scan. Dropping the pipe's write end (shutdown, or the
/// runtime going away) ends the thread.
async fn tell_of_scans(
    inventory: Arc<Inventory>,
    wake: OwnedFd,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut snapshots = inventory.subscribe();
    loop {
        // A full pipe already holds a wake-up; the thread takes the latest tables.
        let _ = nix::unistd::write(&wake, &[1]);
        tokio::select! {
            next = snapshots.changed() => if next.is_err() {
                return; // the inventory is gone: shutting down
            },
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}

fn watch_tables(inventory: &Inventory, wake: &OwnedFd, changed: &Notify) {
    let mut watch = MountTableWatch::default();
    // Since a wait failed, until a wait over a scan's tables works again.
    let mut failing = false;
    loop {
        let watched = watch.len();
        let woken = match watch.wait(wake.as_fd()) {
            Ok(woken) => woken,
            Err(e) => {
                // `poll(2)` refused (ENOMEM; EINVAL once RLIMIT_NOFILE is below the tables
                // watched): let the tables go and watch the next scan's, which sees what
                // changed meanwhile. A pause, so that a wait that fails even on the wake pipe
                // alone is not retried hot.
                if failing {
                    tracing::debug!(error = %e, "mount-table watch failed again");
                } else {
                    tracing::warn!(error = %e, "mount-table watch failed: changes are seen at the next scan, whose tables are watched again");
                    failing = true;
                }
                watch = MountTableWatch::default();
                std::thread::sleep(RETRY_PAUSE);
                continue;
            }
        };
        if failing && watched > 0 {
            tracing::info!(tables = watched, "mount-table watch works again");
            failing = false;
        }
        if woken.changed {
            changed.notify_one();
        }
        if woken.woken {
            if !drain(wake) {
                return; // the write end is gone: shutting down
            }
            if let Some(tables) = inventory.take_open_tables() {
                // The previous scan's tables close here: the new ones report every change
                // since their scan read them.
                watch = MountTableWatch::adopt(tables);
                tracing::debug!(
                    tables = watch.len(),
                    unopened = watch.unopened(),
                    "watching mount tables"
                );
            }
        }
    }
}

/// How long the watch pauses after a failed wait before it waits again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Empties the wake pipe; false once its write end is closed.
fn drain(wake: &OwnedFd) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(wake, &mut buf) {
            Ok(0) => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return true, // EAGAIN: empty
        }
    }
}
