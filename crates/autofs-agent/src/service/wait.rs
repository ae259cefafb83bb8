//! `WaitMigratable`: the core's check of a workload against every new snapshot, one message
//! each time the blocking set changes, ending as soon as nothing blocks or waiting cannot help.
//! Waiters share the agent's change detection: no scan per waiter. A wait cannot follow its
//! workload while a scan is stalled: it ends UNAVAILABLE as soon as the watchdog says so,
//! not at its client's deadline.

use std::sync::Arc;
use std::time::Instant;

use autofs_api::json::ShortName;
use autofs_api::v1;
use autofs_core::selector::{Check, Outcome, Workload};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::budget::{StreamKind, client_of};
use super::context::Context;
use super::request;
use super::status::ApiError;
use super::stream::{
    Ending, EventStream, Outgoing, STREAM_BUFFER, deadline, send, shutting_down, sleep_until,
};
use super::tasks;
use crate::metrics as m;
use crate::snapshot::{Answer, Inventory, Snapshot};

pub(super) async fn wait_migratable(
    ctx: &Context,
    request: Request<v1::WaitMigratableRequest>,
) -> Result<Response<EventStream<v1::WaitMigratableResponse>>, Status> {
    let started = Instant::now();
    let target = request::wait_target(request.get_ref().target.clone());
    let external_mounts = request.get_ref().external_mounts.clone();
    let client = client_of(&request);
    // Subscribe first, so a scan published while the first verdict is taken is not missed.
    let mut updates = ctx.inventory.subscribe();
    let mut stalls = ctx.inventory.stalls();
    let setup = async {
        let workload = request::workload(target, &external_mounts, &ctx.inventory).await?;
        let permit = ctx.stream_slot(StreamKind::Wait, &client)?;
        let answer = ctx.snapshot_for(&workload).await?;
        let snapshot = not_stale(answer)?;
        let snapshot = final_from_newer(&ctx.inventory, snapshot, started, &workload).await?;
        Ok::<_, Status>((workload, permit, snapshot))
    };
    let (workload, permit, snapshot) = match setup.await {
        Ok(ready) => ready,
        Err(status) => {
            m::grpc_call("WaitMigratable", status.code(), started);
            return Err(status);
        }
    };
    let deadline = deadline(&request);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let ending = Ending::default();
    let end = ending.clone();
    let shutdown = ctx.shutdown.clone();
    // A waiter that sends nothing while blockers do not change learns that its client
    // left from the channel closing, which frees its slot at once.
    let gone = tx.clone();
    let inventory = ctx.inventory.clone();
    let task_recheck = ctx.config.queue_poll_interval;
    let mut wait = Wait {
        inventory: inventory.clone(),
        tasks_waiting: false,
        node: ctx.config.node_name.clone(),
        sequence: 0,
        last: None,
        tx,
        ending: ending.clone(),
    };
    tokio::spawn(async move {
        let _permit = permit;
        let run = async {
            match wait.apply(&snapshot, &workload).await {
                Ok(true) => return tonic::Code::Ok,
                Ok(false) => {}
                Err(code) => return code,
            }
            let mut seen = snapshot.generation;
            drop(snapshot);
            loop {
                // A requester waking (its daemon answered) changes no mount and no pipe, so
                // no scan shows it: while one blocks, its tasks are read again every queue
                // poll against the latest snapshot.
                let recheck = async {
                    if wait.tasks_waiting {
                        tokio::time::sleep(task_recheck).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                let changed = tokio::select! {
                    changed = updates.changed() => changed.is_ok().then_some(true),
                    () = recheck => Some(false),
                };
                let Some(changed) = changed else {
                    ending.fail(Status::unavailable("agent shutting down; wait again"));
                    return tonic::Code::Unavailable;
                };
                let next: Arc<Snapshot> = updates.borrow_and_update().clone();
                if changed && next.generation <= seen {
                    continue;
                }
                let next = match final_from_newer(&inventory, next, started, &workload).await {
                    Ok(next) => next,
                    Err(status) => {
                        let code = status.code();
                        ending.fail(status);
                        return code;
                    }
                };
                seen = next.generation;
                match wait.apply(&next, &workload).await {
                    Ok(true) => return tonic::Code::Ok,
                    Ok(false) => {}
                    Err(code) => return code,
                }
            }
        };
        let code = tokio::select! {
            code = run => code,
            () = sleep_until(deadline) => {
                ending.fail(Status::deadline_exceeded(
                    "deadline reached while blockers that clear by themselves (INTERIM mounts, requesters waiting for an answer) still block; the last message lists them",
                ));
                tonic::Code::DeadlineExceeded
            }
            () = gone.closed() => tonic::Code::Cancelled,
            () = shutting_down(shutdown) => {
                ending.fail(Status::unavailable("agent shutting down; wait again"));
                tonic::Code::Unavailable
            }
            Ok(_) = stalls.wait_for(|stalled| *stalled) => {
                ending.fail(Status::unavailable(
                    "the current scan has stalled (a /proc read does not return): no verdict can follow the workload; wait again later",
                ));
                tonic::Code::Unavailable
            }
        };
        m::grpc_call("WaitMigratable", code, started);
    });
    Ok(Response::new(end.stream(rx)))
}

/// The snapshot of `answer`, unless it is the last good scan behind a stalled one: a gate
/// must not open on a scan older than the stall.
fn not_stale(answer: Answer) -> Result<Arc<Snapshot>, Status> {
    if answer.stale {
        return Err(Status::unavailable(format!(
            "the current scan has stalled; the last good one is {} s old; retry later",
            answer.age().as_secs()
        )));
    }
    Ok(answer.snapshot)
}

/// `snapshot`, or, when it would end the wait but its scan started before the request
/// (`started`), a scan started after the request: a mount created just before the question
/// may be missing from an older scan, including one that was still running when the question
/// came. (Waiting answers can be older: every later change is seen anyway; concurrent waiters
/// share the scan.)
async fn final_from_newer(
    inventory: &Arc<Inventory>,
    snapshot: Arc<Snapshot>,
    started: Instant,
    workload: &Workload,
) -> Result<Arc<Snapshot>, Status> {
    if snapshot.taken >= started || !is_final(&snapshot, workload) {
        return Ok(snapshot);
    }
    let answer = inventory
        .fresh_since(started)
        .await
        .map_err(ApiError::from)?;
    not_stale(answer)
}

/// Whether `snapshot` would end a wait for `workload` (dumpable, or blocked for good), or
/// refuse it (nothing of the workload found).
fn is_final(snapshot: &Snapshot, workload: &Workload) -> bool {
    workload
        .check(&snapshot.scan)
        .map_or(true, |check| check.outcome() != Outcome::Waiting)
}

/// What a message of a wait said: (namespace, mount, state, queued packets) per blocking
/// mount, then (pid, tid, reason, fd) per blocking task.
type Said = (Vec<(u64, u32, i32, u64)>, Vec<(i32, i32, i32, i32)>);

/// One wait: the messages of a WaitMigratable stream, sent when the blocking set changes.
struct Wait {
    /// Where the workload's tasks are read from.
    inventory: Arc<Inventory>,
    /// Whether the last check found tasks blocking (they are read again without a new scan).
    tasks_waiting: bool,
    node: String,
    sequence: u64,
    /// What the last message said.
    last: Option<Said>,
    tx: mpsc::Sender<Outgoing<v1::WaitMigratableResponse>>,
    ending: Ending,
}

impl Wait {
    /// Sends the verdict of `snapshot` if it differs from the last one. `Ok(true)` when the
    /// wait is over (dumpable, or blocked for good); `Err` when the stream must stop.
    async fn apply(
        &mut self,
        snapshot: &Arc<Snapshot>,
        workload: &Workload,
    ) -> Result<bool, tonic::Code> {
        let checked = match workload.check(&snapshot.scan) {
            // A wait never answers from a stalled scan (`not_stale`).
            Ok(check) => tasks::with_tasks(&self.inventory, snapshot, false, check).await,
            Err(e) => Err(Status::from(ApiError::from(e))),
        };
        let check = match checked {
            Ok(check) => check,
            Err(status) => {
                let code = status.code();
                self.ending.fail(status);
                return Err(code);
            }
        };
        let blocking = snapshot.api_reports(&check.blocking);
        let blocking_tasks = tasks::api_tasks(&check.tasks);
        self.tasks_waiting = !check.tasks.is_empty();
        let (outcome, message) = describe(&check, snapshot, blocking.len());
        let key = (
            blocking
                .iter()
                .map(|r| (r.mnt_ns, r.mount_id, r.state, r.pending_packets))
                .collect(),
            blocking_tasks
                .iter()
                .map(|t| (t.pid, t.tid, t.reason, t.fd))
                .collect(),
        );
        let done = outcome != v1::wait_migratable_response::Outcome::Waiting;
        if self.last.as_ref() != Some(&key) || done {
            self.last = Some(key);
            self.sequence += 1;
            let response = v1::WaitMigratableResponse {
                dumpable: check.dumpable(),
                blocking,
                mounts_checked: check.mounts_checked,
                external: snapshot.api_reports(&check.external),
                blocking_tasks,
                node: self.node.clone(),
                outcome: outcome.into(),
                message,
                sequence: self.sequence,
            };
            send(&self.tx, response, &self.ending).await?;
        }
        Ok(done)
    }
}

/// The wire outcome of a check and the message that explains it.
fn describe(
    check: &Check,
    snapshot: &Snapshot,
    blocking: usize,
) -> (v1::wait_migratable_response::Outcome, String) {
    use v1::wait_migratable_response::Outcome as Wire;
    match check.outcome() {
        Outcome::Dumpable if check.external.is_empty() => (
            Wire::Dumpable,
            format!(
                "nothing blocks: {} autofs mount(s) CRIU can dump now",
                check.mounts_checked
            ),
        ),
        Outcome::Dumpable => (
            Wire::Dumpable,
            format!(
                "nothing blocks: {} autofs mount(s), of which CRIU skips {} as external bind(s) and can dump the rest now",
                check.mounts_checked,
                check.external.len()
            ),
        ),
        Outcome::WillNotClear if check.stuck.is_empty() => {
            let stuck: Vec<_> = check
                .tasks
                .iter()
                .filter(|t| !t.clears_by_itself())
                .collect();
            let message = stuck.first().map_or("", |t| t.message.as_str());
            (
                Wire::WillNotClear,
                format!(
                    "waiting will not help: {} task(s) of the tree CRIU dumps stop it and cannot clear by themselves, e.g. {message}",
                    stuck.len()
                ),
            )
        }
        Outcome::WillNotClear => {
            let first = snapshot.api_reports(&check.stuck[..check.stuck.len().min(1)]);
            let (mount_point, state, message) = first.first().map_or(("", "?", ""), |r| {
                (
                    r.mount_point.as_str(),
                    v1::MountState::try_from(r.state).map_or("?", ShortName::short_name),
                    r.message.as_str(),
                )
            });
            (
                Wire::WillNotClear,
                format!(
                    "waiting will not help: {} blocking mount(s) cannot clear by themselves, e.g. {mount_point} ({state}): {message}",
                    check.stuck.len(),
                ),
            )
        }
        Outcome::Waiting => {
            let mut message = format!(
                "waiting: {blocking} mount(s) INTERIM with {} queued request(s) the daemon has not read yet",
                check.queued_packets,
            );
            if !check.tasks.is_empty() {
                message.push_str(&format!(
                    "; {} task(s) of the tree CRIU dumps asleep until their daemon answers a request",
                    check.tasks.len()
                ));
            }
            (Wire::Waiting, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::StallPolicy;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_final_answer_from_a_scan_before_the_request_is_replaced_by_one_shared_scan_after_it()
    {
        // Real scans of a fixture proc tree: an ACTIVE mount, so any scan is a final answer.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../autofs-core/tests/fixtures/proc/active_indirect");
        let scanner = autofs_core::Scanner::new(&root, "node").unwrap();
        let inventory = Arc::new(Inventory::new(scanner, StallPolicy::default()).unwrap());
        let proc_root = autofs_core::ProcRoot::open(&root).unwrap();
        let workload = Workload::of_pid(&proc_root, 1234).unwrap();
        let older = inventory.rescan().await.unwrap();
        let started = Instant::now();
        assert!(older.taken < started && is_final(&older, &workload));

        let newer = final_from_newer(&inventory, older.clone(), started, &workload)
            .await
            .unwrap();
        assert_eq!(newer.generation, older.generation + 1);
        assert!(newer.taken >= started);
        // Another waiter that asked at the same moment, handed the same older scan, shares
        // the newer one instead of scanning again.
        let shared = final_from_newer(&inventory, older, started, &workload)
            .await
            .unwrap();
        assert_eq!(shared.generation, newer.generation);
        // A final answer from a scan that started after the request is taken as it is.
        let kept = final_from_newer(&inventory, newer.clone(), started, &workload)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&kept, &newer));
    }
}
