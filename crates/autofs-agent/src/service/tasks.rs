//! The tasks of a workload's dumped trees (`autofs_core::tasks`), read from the live proc root
//! when a check or a wait asks, off the async runtime (the trees' roots too: a namespace
//! without autofs mounts has its owner read then); and their wire form.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use autofs_api::v1;
use autofs_core::selector::Check;
use autofs_core::tasks::{TaskBlocker, TaskReason};
use tokio::sync::Semaphore;
use tonic::Status;

use crate::snapshot::{Inventory, Snapshot};

/// At most this many workloads' tasks are read at once (each on a blocking thread): many
/// checks and waiters at the same moment queue here instead of taking every blocking thread.
/// A read holds its permit until it ends, even when the asker has gone (a cancelled call).
const READS_AT_ONCE: usize = 2;

static READS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(READS_AT_ONCE)));

/// How long one read of a workload's tasks answers every check and waiter of the same mount
/// namespaces: a hundred waiters on one workload read its tasks once in this long, not a
/// hundred times.
const SHARED_FOR: Duration = Duration::from_millis(250);

/// One read of a workload's tasks: when it started, and what it found.
type Read = (Instant, Arc<Vec<TaskBlocker>>);

/// The latest read for each scan (its generation) and set of mount namespaces, behind a lock
/// that makes askers who come while it is read wait for that read instead of making their own.
/// Keyed by scan: a read answers only questions about the scan whose namespaces, owners and
/// readers it was made from, and it started after that scan had read every mount table the
/// answer rests on (a mount unmounted between an older read and a newer scan would leave its
/// daemon's packet-mode end exempt in the read yet absent from the scan).
type Slot = Arc<tokio::sync::Mutex<Option<Read>>>;

/// A scan's generation and a workload's mount namespaces (ascending).
type Key = (u64, Vec<u64>);

static LATEST: LazyLock<Mutex<HashMap<Key, Slot>>> = LazyLock::new(Mutex::default);

/// Whether a read that started at `read` may answer a question asked at `asked` about the same
/// scan: it started at most [`SHARED_FOR`] before the question (a read the asker waited for,
/// however long it took, started after the question or shortly before it).
fn fresh_for(read: Instant, asked: Instant) -> bool {
    asked.saturating_duration_since(read) < SHARED_FOR
}

/// `check` (of `snapshot`) with the tasks of its dumped trees read now: by this call, or by
/// another check or waiter of the same mount namespaces and scan whose read may answer it too
/// ([`fresh_for`]). A source without a live proc root (a synthetic one) has no tasks to read:
/// the check stays as it is. While the current scan is stalled (`stale`: a /proc read hangs),
/// reading them could hang as well: they are not read, and the check says so (an
/// `UNREADABLE` blocker).
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
    let asked = Instant::now();
    let mut namespaces = check.namespaces.clone();
    namespaces.sort_unstable();
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
        latest
            .entry((snapshot.generation, namespaces.clone()))
            .or_default()
            .clone()
    };
    let mut read = slot.lock().await;
    if let Some((at, tasks)) = read.as_ref()
        && fresh_for(*at, asked)
    {
        check.tasks = tasks.as_ref().clone();
        return Ok(check);
    }
    let permit = READS
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Status::internal(format!("reading the workload's tasks: {e}")))?;
    let started = Instant::now();
    let (inventory, snapshot) = (inventory.clone(), snapshot.clone());
    let tasks = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        inventory
            .proc_root()
            .map(|root| {
                let trees = autofs_core::tasks::dump_roots(root, &snapshot.scan, &namespaces);
                autofs_core::tasks::blocking_tasks(root, &trees)
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_answers_questions_asked_soon_after_it_started_or_while_it_ran() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Asked 100 ms after it started.
        assert!(fresh_for(t0 + ms(10), t0 + ms(110)));
        // A read the asker waited for, however long: it started after the question.
        assert!(fresh_for(t0 + ms(500), t0 + ms(100)));
        // Started too long before the question.
        assert!(!fresh_for(t0 + ms(10), t0 + ms(10) + SHARED_FOR));
    }
}
