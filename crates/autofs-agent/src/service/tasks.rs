//! The tasks of a workload's dumped trees (`autofs_core::tasks`), read from the live proc root
//! when a check or a wait asks, off the async runtime; and their wire form.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use autofs_api::v1;
use autofs_core::selector::Check;
use autofs_core::tasks::{TaskBlocker, TaskReason};
use tonic::Status;

use crate::snapshot::{Inventory, Snapshot};

/// At most this many trees' tasks are read at once (each on a blocking thread): many checks
/// and waiters at the same moment queue here instead of taking every blocking thread.
const READS_AT_ONCE: usize = 2;

static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READS_AT_ONCE);

/// How long one read of a tree's tasks answers every check and waiter of the same tree: a
/// hundred waiters on one workload read its tasks once in this long, not a hundred times.
const SHARED_FOR: Duration = Duration::from_millis(250);

/// One read of a tree's tasks: when it started, and what it found.
type Read = (Instant, Arc<Vec<TaskBlocker>>);

/// The latest read of each set of trees (by their roots), behind a lock that makes askers who
/// come while it is read wait for that read instead of making their own.
type Slot = Arc<tokio::sync::Mutex<Option<Read>>>;

static LATEST: LazyLock<Mutex<HashMap<Vec<i32>, Slot>>> = LazyLock::new(Mutex::default);

/// `check` (of `snapshot`) with the tasks of its dumped trees read now: by this call, or by
/// another check or waiter of the same trees whose read started at most [`SHARED_FOR`] ago. A
/// source without a live proc root (a synthetic one) has no tasks to read: the check stays as
/// it is. While the current scan is stalled (`stale`: a /proc read hangs), reading them could
/// hang as well: they are not read, and the check says so (an `UNREADABLE` blocker).
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
    let (roots, readers) = autofs_core::tasks::dump_roots(&snapshot.scan, &check.namespaces);
    let slot = {
        let mut latest = LATEST.lock().unwrap_or_else(PoisonError::into_inner);
        // Reads nobody waits for and nobody can share any more go.
        latest.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |read| {
                    read.as_ref()
                        .is_some_and(|(at, _)| at.elapsed() < SHARED_FOR)
                })
        });
        latest.entry(roots.clone()).or_default().clone()
    };
    let mut read = slot.lock().await;
    if let Some((at, tasks)) = read.as_ref()
        && at.elapsed() < SHARED_FOR
    {
        check.tasks = tasks.as_ref().clone();
        return Ok(check);
    }
    let _permit = READS
        .acquire()
        .await
        .map_err(|e| Status::internal(format!("reading the workload's tasks: {e}")))?;
    let started = Instant::now();
    let inventory = inventory.clone();
    let tasks = tokio::task::spawn_blocking(move || {
        inventory
            .proc_root()
            .map(|root| autofs_core::tasks::blocking_tasks(root, &roots, &readers))
            .unwrap_or_default()
    })
    .await
    .map_err(|e| Status::internal(format!("reading the workload's tasks failed: {e}")))?;
    let tasks = Arc::new(tasks);
    *read = Some((started, tasks.clone()));
    check.tasks = tasks.as_ref().clone();
    Ok(check)
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
