//! The tasks of a workload's dumped trees (`autofs_core::tasks`), read from the live proc root
//! when a check or a wait asks, off the async runtime; and their wire form.

use std::sync::Arc;

use autofs_api::v1;
use autofs_core::selector::Check;
use autofs_core::tasks::{TaskBlocker, TaskReason};
use tonic::Status;

use crate::snapshot::{Inventory, Snapshot};

/// At most this many workloads' tasks are read at once (each on a blocking thread): many
/// checks and waiters at the same moment queue here instead of taking every blocking thread.
const READS_AT_ONCE: usize = 2;

static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_AT_ONCE);

/// `check` (of `snapshot`) with the tasks of its dumped trees read now. A source without a
/// live proc root (a synthetic one) has no tasks to read: the check stays as it is. While the
/// current scan is stalled (`stale`: a /proc read hangs), reading them could hang as well:
/// they are not read, and the check says so (an `UNREADABLE` blocker).
///
/// # Errors
///
/// INTERNAL when the blocking read panicked.
pub(super) async fn with_tasks(
    inventory: &Arc<Inventory>,
    snapshot: &Arc<Snapshot>,
    stale: bool,
    mut check: Check,
) -> Result<Check, Status> {
    if inventory.proc_root().is_none() {
        return Ok(check);
    }
    if stale {
        check.tasks.push(TaskBlocker {
            pid: 0,
            tid: 0,
            comm: String::new(),
            reason: TaskReason::Unreadable,
            fd: -1,
            pipe_ino: 0,
            message: "the workload's tasks were not read: the current scan has stalled on a /proc read, and so could this".into(),
        });
        return Ok(check);
    }
    let _permit = READS
        .acquire()
        .await
        .map_err(|e| Status::internal(format!("reading the workload's tasks: {e}")))?;
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
