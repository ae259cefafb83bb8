//! Wakes the background scanner when a mount table changes: the core's watcher
//! ([`autofs_core::mount_watch`]) over the `mountinfo` files each scan read and kept open, one
//! per mount namespace (at most the descriptor budget). A table opened before the scan read
//! it reports every change made after that read, so no change falls between a scan and the
//! watch that follows it. Waiting is the reactor's: no thread, no timer, no read of the
//! tables.

use std::sync::Arc;

use autofs_core::mount_watch::MountTableWatch;
use tokio::sync::{Notify, watch};

use crate::snapshot::Inventory;

/// Runs until `shutdown` turns true, notifying `changed` whenever a watched mount table
/// changes. Each scan keeps the tables of at most `max_tables` namespaces (its share of the
/// descriptor budget) open for it.
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
    let mut watch: Option<MountTableWatch> = None;
    loop {
        snapshots.borrow_and_update();
        // The tables of the latest scan replace the previous scan's: they report what
        // changed after that scan read them.
        if let Some(tables) = inventory.take_open_tables() {
            let Some(root) = inventory.proc_root() else {
                return;
            };
            watch = match MountTableWatch::adopt(root, tables) {
                Ok(watch) => {
                    tracing::debug!(
                        tables = watch.len(),
                        unopened = watch.unopened(),
                        limit = max_tables,
                        "watching mount tables"
                    );
                    Some(watch)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch mount tables: changes are seen at the next scan");
                    None
                }
            };
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
