//! What every RPC of the service shares: the inventory, the settings, the stream budgets and
//! the shutdown signal; and the steps every answer starts with (a fresh enough snapshot, a
//! stream slot).

use std::sync::Arc;
use std::time::Instant;

use autofs_api::v1;
use autofs_core::selector::{Selector, Workload};
use tokio::sync::watch;
use tonic::Status;

use super::budget::{Budgets, StreamKind, StreamSlot};
use super::config::ServiceConfig;
use super::request;
use super::status::ApiError;
use crate::metrics as m;
use crate::snapshot::{Answer, Inventory};

/// The state behind the service.
pub(super) struct Context {
    pub(super) inventory: Arc<Inventory>,
    pub(super) config: ServiceConfig,
    budgets: Budgets,
    pub(super) shutdown: watch::Receiver<bool>,
    /// GetNodeInfo's `agent_instance`: 128 random bits, drawn once per process.
    pub(super) instance: String,
}

impl Context {
    pub(super) fn new(
        inventory: Arc<Inventory>,
        config: ServiceConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            budgets: Budgets::new(&config),
            inventory,
            config,
            shutdown,
            instance: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        }
    }

    /// A stream slot of `kind` for `client` (RESOURCE_EXHAUSTED when none is left).
    pub(super) fn stream_slot(&self, kind: StreamKind, client: &str) -> Result<StreamSlot, Status> {
        self.budgets.take(kind, client)
    }

    /// What a list or watch needs before its producer starts: a valid selector, a stream slot
    /// and a fresh snapshot. A refusal is recorded as the call's outcome.
    pub(super) async fn open_stream(
        &self,
        kind: StreamKind,
        client: &str,
        started: Instant,
        request: &v1::ListMountsRequest,
    ) -> Result<(Selector, StreamSlot, Answer), Status> {
        let setup = async {
            let selector = request::selector(request, &self.inventory).await?;
            let slot = self.stream_slot(kind, client)?;
            let answer = self.fresh().await?;
            Ok::<_, Status>((selector, slot, answer))
        };
        let result = setup.await;
        if let Err(status) = &result {
            m::grpc_call(kind.name(), status.code(), started);
        }
        result
    }

    /// A snapshot no older than `--max-scan-age` (see [`Inventory::fresh`]).
    pub(super) async fn fresh(&self) -> Result<Answer, Status> {
        Ok(self
            .inventory
            .fresh(self.config.max_scan_age)
            .await
            .map_err(ApiError::from)?)
    }

    /// A fresh snapshot that knows the workload's namespace (a process newer than the latest
    /// scan makes it look again). While a scan is stalled, the last good scan answers as it
    /// is: see [`Answer`].
    pub(super) async fn snapshot_for(&self, workload: &Workload) -> Result<Answer, Status> {
        let answer = self.fresh().await?;
        if let Some(ns) = workload.pid_namespace()
            && answer.snapshot.namespace(ns).is_none()
            && !answer.stale
        {
            return Ok(self
                .inventory
                .rescan_bounded()
                .await
                .map_err(ApiError::from)?);
        }
        Ok(answer)
    }
}
