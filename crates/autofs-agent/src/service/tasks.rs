//! The tasks of a workload's dumped trees (`autofs_core::tasks`), read from the live proc root
//! when a check or a wait asks, off the async runtime; and their wire form.

use std::sync::Arc;

use autofs_api::v1;
use autofs_core::selector::Check;
use autofs_core::tasks::{TaskBlocker, TaskReason};
use tonic::Status;

use crate::snapshot::{Inventory, Snapshot};

/// `check` (of `snapshot`) with the tasks of its dumped trees read now. A source without a
/// live proc root (a synthetic one) has no tasks to read: the check stays as it is.
///
/// # Errors
///
/// INTERNAL when the blocking read panicked.
pub(super) async fn with_tasks(
    inventory: &Arc<Inventory>,
    snapshot: &Arc<Snapshot>,
    mut check: Check,
) -> Result<Check, Status> {
    if inventory.proc_root().is_none() {
        return Ok(check);
    }
    let inventory = inventory.clone();
    let snapshot = snapshot.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(root) = inventory.proc_root() {
            check.look_at_tasks(root, &snapshot.scan);
        }
        check
    })
    .await
    .map_err(|e| Status::internal(format!("reading the workload's tasks failed: {e}")))
}

/// The wire form of the tasks that block.
pub(super) fn api_tasks(tasks: &[TaskBlocker]) -> Vec<v1::TaskBlocker> {
    tasks
        .iter()
        .map(|t| v1::TaskBlocker {
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            reason: match t.reason {
                TaskReason::RequesterWaiting => v1::TaskReason::RequesterWaiting,
                TaskReason::PacketModePipe => v1::TaskReason::PacketModePipe,
                TaskReason::Unreadable => v1::TaskReason::Unreadable,
            }
            .into(),
            fd: t.fd,
            pipe_ino: t.pipe_ino,
            message: t.message.clone(),
        })
        .collect()
}
