//! `WatchMounts`: the selected mounts of a fresh snapshot as ADDED, then the ADDED / CHANGED
//! / REMOVED events of every later scan. Watchers share the inventory's snapshots and the
//! changes computed once per scan; a watcher holds no reports of its own.

use std::time::Instant;

use autofs_api::v1::{self, mount_event::Kind};
use autofs_core::Selector;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::budget::{StreamKind, client_of};
use super::context::Context;
use super::request;
use super::stream::{
    Ending, EventStream, Outgoing, STREAM_BUFFER, deadline, send, shutting_down, sleep_until,
};
use crate::changes::Change;
use crate::metrics as m;

pub(super) async fn watch_mounts(
    ctx: &Context,
    request: Request<v1::WatchMountsRequest>,
) -> Result<Response<EventStream<v1::MountEvent>>, Status> {
    let started = Instant::now();
    let filter_request = request.get_ref().filter.clone().unwrap_or_default();
    let client = client_of(&request);
    // Subscribe first, so a scan published while the first snapshot is taken is not missed.
    let mut updates = ctx.inventory.subscribe();
    let (selector, permit, answer) = ctx
        .open_stream(StreamKind::Watch, &client, started, &filter_request)
        .await?;
    let deadline = deadline(&request);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let ending = Ending::default();
    let end = ending.clone();
    let shutdown = ctx.shutdown.clone();
    let node = ctx.config.node_name.clone();
    // A watch with nothing to send never learns from a failed send that its client left,
    // so it also waits for the client to close the stream (which frees the permit).
    let gone = tx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut watcher = Watcher {
            selector,
            out: EventSender {
                node,
                sequence: 0,
                tx,
                ending: ending.clone(),
            },
        };
        let run = async {
            // The position: the snapshot delivered so far, shared, never copied.
            let mut position = answer.snapshot;
            let initial = position.reports.clone();
            if let Err(code) = watcher.send_initial(&initial).await {
                return code;
            }
            drop(initial);
            loop {
                if updates.changed().await.is_err() {
                    return tonic::Code::Ok; // the inventory is gone: shutting down
                }
                let next = updates.borrow_and_update().clone();
                if next.generation <= position.generation {
                    continue;
                }
                let sent = if next.generation == position.generation + 1 {
                    watcher.send_change(&next.change, &next.reports).await
                } else {
                    // Fell behind by more than one scan: diff from the position.
                    let change = Change::between(&position.reports, &next.reports);
                    watcher.send_change(&change, &next.reports).await
                };
                if let Err(code) = sent {
                    return code;
                }
                position = next;
            }
        };
        let code = tokio::select! {
            code = run => code,
            () = sleep_until(deadline) => {
                ending.fail(Status::deadline_exceeded("watch deadline reached"));
                tonic::Code::DeadlineExceeded
            }
            () = gone.closed() => tonic::Code::Cancelled,
            () = shutting_down(shutdown) => tonic::Code::Ok,
        };
        m::grpc_call("WatchMounts", code, started);
    });
    Ok(Response::new(end.stream(rx)))
}

/// Sends one stream's ADDED / CHANGED / REMOVED events. Holds no reports of its own: the
/// shared snapshots and their changes say what to send.
struct Watcher {
    selector: Selector,
    out: EventSender,
}

/// The numbered events of one stream.
struct EventSender {
    node: String,
    sequence: u64,
    tx: mpsc::Sender<Outgoing<v1::MountEvent>>,
    ending: Ending,
}

impl Watcher {
    /// Every selected mount of the first snapshot, as ADDED. An error code when the stream
    /// must stop (client gone or stalled).
    async fn send_initial(&mut self, reports: &[v1::MountReport]) -> Result<(), tonic::Code> {
        for report in reports
            .iter()
            .filter(|r| request::matches(&self.selector, r))
        {
            self.out.send(Kind::Added, report).await?;
        }
        Ok(())
    }

    /// The events of `change` (to the report set `reports`) that concern this watcher.
    async fn send_change(
        &mut self,
        change: &Change,
        reports: &[v1::MountReport],
    ) -> Result<(), tonic::Code> {
        let selector = &self.selector;
        for (kind, report) in change.events(reports, |r| request::matches(selector, r)) {
            self.out.send(kind, report).await?;
        }
        Ok(())
    }
}

impl EventSender {
    async fn send(&mut self, kind: Kind, report: &v1::MountReport) -> Result<(), tonic::Code> {
        self.sequence += 1;
        let event = v1::MountEvent {
            kind: kind.into(),
            sequence: self.sequence,
            node: self.node.clone(),
            mount: Some(report.clone()),
        };
        send(&self.tx, event, &self.ending).await
    }
}
