//! Requests into the core's questions: a list's filters become a [`Selector`], a workload
//! target a [`Workload`]. The core validates; only what the wire alone can get wrong (an
//! unknown enum value, a missing oneof) is refused here.

use autofs_api::v1;
use autofs_core::MountState;
use autofs_core::selector::{SelectError, Selector, Workload};
use std::sync::Arc;

use tonic::Status;

use super::status::ApiError;
use crate::snapshot::Inventory;

/// The selector of a list or watch request; a pid is resolved to its mount namespace now.
pub(super) async fn selector(
    req: &v1::ListMountsRequest,
    inventory: &Arc<Inventory>,
) -> Result<Selector, Status> {
    let mut selector = Selector::new(req.mnt_ns, &req.container_id, &req.pod_uid, Vec::new())
        .map_err(ApiError::from)?;
    for (i, &raw) in req.states.iter().enumerate() {
        let state = core_state(raw).ok_or_else(|| {
            Status::invalid_argument(format!("states[{i}]: unknown mount state {raw}"))
        })?;
        selector.states.push(state);
    }
    if let Some(pid) = req.pid {
        let root = live_root(pid, inventory)?;
        selector = match selector.with_pid(root, pid) {
            Ok(selector) => selector,
            Err(e) => return Err(ApiError::from(unless_hidden(e, inventory).await).into()),
        };
    }
    Ok(selector)
}

/// Whether an API report passes `selector`.
pub(super) fn matches(selector: &Selector, r: &v1::MountReport) -> bool {
    selector.admits(r.mnt_ns, &r.container_id, &r.pod_uid, core_state(r.state))
}

/// The core state of a wire `MountState` value (`None` for UNSPECIFIED and unknown numbers).
fn core_state(raw: i32) -> Option<MountState> {
    v1::MountState::try_from(raw)
        .ok()
        .and_then(|s| MountState::try_from(s).ok())
}

/// The workload of a CheckMigratable or WaitMigratable target, dumped with `external_mounts`
/// external (CRIU's `--external mnt[PATH]`), validated before any scan: bad input never costs
/// one.
pub(super) async fn workload(
    target: Option<v1::check_migratable_request::Target>,
    external_mounts: &[String],
    inventory: &Arc<Inventory>,
) -> Result<Workload, Status> {
    use v1::check_migratable_request::Target as Wire;
    let target = target.ok_or_else(|| {
        Status::invalid_argument("target: one of pid, container_id or pod_uid is required")
    })?;
    let workload = match target {
        Wire::Pid(pid) => Workload::of_pid(live_root(pid, inventory)?, pid),
        Wire::ContainerId(id) => Workload::of_container(&id),
        Wire::PodUid(uid) => Workload::of_pod(&uid),
    };
    let workload = match workload {
        Ok(workload) => workload,
        Err(e) => return Err(ApiError::from(unless_hidden(e, inventory).await).into()),
    };
    Ok(workload
        .with_external_mounts(external_mounts)
        .map_err(ApiError::from)?)
}

/// A process not found through the latest scan's restricted view may be hidden, not gone
/// ([`SelectError::unless_hidden`]). Before the first scan the view is not known: the first
/// scan is awaited (bounded by the stall timeout, as every fresh answer is) and judges it; if
/// it fails, nothing is known to be gone either ([`crate::snapshot::Snapshot::view`]). An
/// agent asked right after it started thus answers as it will a moment later.
async fn unless_hidden(e: SelectError, inventory: &Arc<Inventory>) -> SelectError {
    let mut latest = inventory.latest();
    if latest.generation == 0
        && e.kind() == autofs_core::selector::SelectErrorKind::NotFound
        && let Ok(answer) = inventory.fresh(std::time::Duration::ZERO).await
    {
        latest = answer.snapshot;
    }
    e.unless_hidden(&latest.view())
}

/// The wire target of a WaitMigratable request, as CheckMigratable's.
pub(super) fn wait_target(
    target: Option<v1::wait_migratable_request::Target>,
) -> Option<v1::check_migratable_request::Target> {
    use v1::check_migratable_request::Target;
    use v1::wait_migratable_request::Target as WaitTarget;
    target.map(|t| match t {
        WaitTarget::Pid(pid) => Target::Pid(pid),
        WaitTarget::ContainerId(id) => Target::ContainerId(id),
        WaitTarget::PodUid(uid) => Target::PodUid(uid),
    })
}

/// The live proc root a pid is looked up in; a source without one (benchmarks) knows no pids.
fn live_root(pid: i32, inventory: &Inventory) -> Result<&autofs_core::ProcRoot, Status> {
    if pid <= 0 {
        return Err(ApiError::from(SelectError::InvalidPid { pid }).into());
    }
    inventory.proc_root().ok_or_else(|| {
        Status::not_found(format!(
            "pid {pid}: this agent serves a synthetic report set"
        ))
    })
}
