//! `ListMounts`: the selected reports of a fresh snapshot, streamed. A list cut short (client
//! deadline, shutdown) ends with a status, never looks complete.

use std::time::Instant;

use autofs_api::v1;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::budget::{StreamKind, client_of};
use super::context::Context;
use super::metadata::mark_age;
use super::request;
use super::stream::{
    Ending, EventStream, STREAM_BUFFER, deadline, send, shutting_down, sleep_until,
};
use crate::metrics as m;

pub(super) async fn list_mounts(
    ctx: &Context,
    request: Request<v1::ListMountsRequest>,
) -> Result<Response<EventStream<v1::MountReport>>, Status> {
    let started = Instant::now();
    let client = client_of(&request);
    let (selector, permit, answer) = ctx
        .open_stream(StreamKind::List, &client, started, request.get_ref())
        .await?;
    // Hold only the shared API reports, not the whole snapshot: they stay alive for as
    // long as a slow client takes to read them.
    let reports = answer.snapshot.reports.clone();
    let deadline = deadline(&request);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let ending = Ending::default();
    let shutdown = ctx.shutdown.clone();
    let end = ending.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let send_all = async {
            for report in reports.iter().filter(|r| request::matches(&selector, r)) {
                if let Err(code) = send(&tx, report.clone(), &end).await {
                    return code;
                }
            }
            tonic::Code::Ok
        };
        // A list cut short must never look complete to the client.
        let code = tokio::select! {
            code = send_all => code,
            () = sleep_until(deadline) => {
                end.fail(Status::deadline_exceeded("deadline exceeded while streaming"));
                tonic::Code::DeadlineExceeded
            }
            () = shutting_down(shutdown) => {
                end.fail(Status::unavailable("agent shutting down; the list is incomplete, retry"));
                tonic::Code::Unavailable
            }
        };
        m::grpc_call("ListMounts", code, started);
    });
    let mut response = Response::new(ending.stream(rx));
    mark_age(&mut response, &answer);
    Ok(response)
}
