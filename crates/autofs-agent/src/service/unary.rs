//! The unary RPCs: `GetNodeInfo` (the handshake) and `CheckMigratable` (the core's check of a
//! workload against a fresh snapshot).

use std::time::Instant;

use autofs_api::v1;
use autofs_core::selector::SelectErrorKind;
use tonic::{Request, Response, Status};

use super::context::Context;
use super::metadata::mark_age;
use super::request;
use super::status::ApiError;
use super::tasks;
use crate::metrics as m;
use crate::snapshot::Answer;

/// Runs `call`, recording its code and latency.
async fn observed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    m::grpc_call(
        method,
        result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok),
        started,
    );
    result
}

pub(super) async fn get_node_info(
    ctx: &Context,
    _request: Request<v1::GetNodeInfoRequest>,
) -> Result<Response<v1::GetNodeInfoResponse>, Status> {
    observed("GetNodeInfo", async {
        let mut info = crate::node_info::collect(
            &ctx.inventory,
            &ctx.config.node_name,
            ctx.config.scan_interval,
        );
        info.agent_instance.clone_from(&ctx.instance);
        Ok(Response::new(info))
    })
    .await
}

pub(super) async fn check_migratable(
    ctx: &Context,
    request: Request<v1::CheckMigratableRequest>,
) -> Result<Response<v1::CheckMigratableResponse>, Status> {
    let (response, answer) = observed("CheckMigratable", check(ctx, request.into_inner())).await?;
    let mut response = Response::new(response);
    mark_age(&mut response, &answer);
    Ok(response)
}

async fn check(
    ctx: &Context,
    req: v1::CheckMigratableRequest,
) -> Result<(v1::CheckMigratableResponse, Answer), Status> {
    let workload = request::workload(req.target, &req.external_mounts, &ctx.inventory).await?;
    let answer = ctx.snapshot_for(&workload).await?;
    let check = match workload.check(&answer.snapshot.scan) {
        Err(e) if e.kind() == SelectErrorKind::NotFound && answer.stale => {
            // Not in a scan that predates the stall is no proof of absence.
            return Err(Status::unavailable(format!(
                "the current scan has stalled and the last good one ({} s old) does not show this workload; retry later",
                answer.age().as_secs()
            )));
        }
        checked => checked.map_err(ApiError::from)?,
    };
    let check = tasks::with_tasks(&ctx.inventory, &answer.snapshot, answer.stale, check).await?;
    // A drain is seen within one queue poll, and a retry then gets a scan at most
    // `max_scan_age` old: waiting longer than both tells nothing new.
    let retry_after_ms = if check.only_interim() {
        let noticed = ctx.config.queue_poll_interval.max(ctx.config.max_scan_age);
        u32::try_from(noticed.as_millis().clamp(100, 60_000)).unwrap_or(60_000)
    } else {
        0
    };
    let response = v1::CheckMigratableResponse {
        dumpable: check.dumpable(),
        blocking: answer.snapshot.api_reports(&check.blocking),
        external: answer.snapshot.api_reports(&check.external),
        blocking_tasks: tasks::api_tasks(&check.tasks),
        mounts_checked: check.mounts_checked,
        retry_after_ms,
        node: ctx.config.node_name.clone(),
        scan_age_ms: u64::try_from(answer.age().as_millis()).unwrap_or(u64::MAX),
        stale: answer.stale,
    };
    Ok((response, answer))
}
