//! Wakes the background scanner when a mount table changes: the core's watcher
//! ([`autofs_core::mount_watch`]) over one member's `mountinfo` per mount namespace the latest
//! scan knows (at most the descriptor budget), re-opened only when a scan finds a different
//! set. Waiting is the reactor's: no thread, no timer, no read of the tables.

use std::sync::Arc;

use autofs_core::mount_watch::MountTableWatch;
use tokio::sync::{Notify, watch};

use crate::snapshot::Inventory;

/// Runs until `shutdown` turns true, notifying `changed` whenever a watched mount table
/// changes. Watches at most `max_tables` namespaces (its share of the descriptor budget).
pub async fn run(
    inventory: Arc<Inventory>,
    max_tables: usize,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    if inventory.proc_root().is_none() {
        return; // no live proc root: no mount tables to watch
    }
    let mut snapshots = inventory.subscribe();
    // (mount namespace, member whose table is open) of the set being watched.
    let mut watched: Option<Vec<(u64, i32)>> = None;
    let mut watch: Option<MountTableWatch> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let members: Vec<(u64, i32)> = snapshot
            .scan
            .namespaces
            .iter()
            .take(max_tables)
            .filter_map(|ns| Some((ns.mnt_ns, *ns.pids.first()?)))
            .collect();
        drop(snapshot);
        if watched.as_ref() != Some(&members) {
            let Some(root) = inventory.proc_root() else {
                return;
            };
            watch = match MountTableWatch::open(root, members.iter().map(|&(_, pid)| pid)) {
                Ok(watch) => {
                    tracing::debug!(
                        tables = watch.len(),
                        unopened = watch.unopened(),
                        "watching mount tables"
                    );
                    Some(watch)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch mount tables: changes are seen at the next scan");
                    None
                }
            };
            watched = Some(members);
        }
        let woke = async {
            match &watch {
                Some(watch) => watch.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            woke = woke => match woke {
                Ok(()) => changed.notify_one(),
                Err(e) => {
                    // The reactor is going away: stop watching until the next scan.
                    tracing::debug!(error = %e, "mount-table watch failed");
                    watch = None;
                }
            },
            next = snapshots.changed() => if next.is_err() {
                return; // the inventory is gone: shutting down
            },
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}
