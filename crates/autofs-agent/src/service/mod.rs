//! The `autofs.v1.AutofsInspector` gRPC service: a thin adapter from the wire to the core's
//! questions ([`autofs_core::selector`]) over the inventory's snapshots, one file per RPC
//! family:
//!
//! - `unary`: `GetNodeInfo`, `CheckMigratable`;
//! - `list`: `ListMounts`; `watch`: `WatchMounts`; `wait`: `WaitMigratable`;
//! - what they share: `config` (settings), `context` (inventory, budgets, fresh snapshots),
//!   `request` (wire → core), `status` (errors → statuses), `metadata` (scan age),
//!   `budget` (stream budgets per kind and client), `stream` (producer-fed streams), `tasks`
//!   (the workload's tasks, read when asked).

mod budget;
mod config;
mod context;
mod list;
mod metadata;
mod request;
mod status;
mod stream;
mod tasks;
mod unary;
mod wait;
mod watch;

use std::sync::Arc;

use autofs_api::v1::{self, autofs_inspector_server::AutofsInspector};
use tokio::sync::watch as signal;
use tonic::{Request, Response, Status};

pub use config::ServiceConfig;
pub use metadata::{SCAN_AGE_HEADER, STALE_HEADER};
pub use stream::EventStream;

use crate::snapshot::Inventory;

/// The service implementation.
#[derive(Clone)]
pub struct AgentService(Arc<context::Context>);

impl AgentService {
    /// A service over `inventory`; streams end cleanly when `shutdown` turns true.
    pub fn new(
        inventory: Arc<Inventory>,
        config: ServiceConfig,
        shutdown: signal::Receiver<bool>,
    ) -> Self {
        Self(Arc::new(context::Context::new(inventory, config, shutdown)))
    }
}

#[tonic::async_trait]
impl AutofsInspector for AgentService {
    type ListMountsStream = EventStream<v1::MountReport>;
    type WatchMountsStream = EventStream<v1::MountEvent>;
    type WaitMigratableStream = EventStream<v1::WaitMigratableResponse>;

    async fn list_mounts(
        &self,
        request: Request<v1::ListMountsRequest>,
    ) -> Result<Response<Self::ListMountsStream>, Status> {
        list::list_mounts(&self.0, request).await
    }

    async fn watch_mounts(
        &self,
        request: Request<v1::WatchMountsRequest>,
    ) -> Result<Response<Self::WatchMountsStream>, Status> {
        watch::watch_mounts(&self.0, request).await
    }

    async fn check_migratable(
        &self,
        request: Request<v1::CheckMigratableRequest>,
    ) -> Result<Response<v1::CheckMigratableResponse>, Status> {
        unary::check_migratable(&self.0, request).await
    }

    async fn wait_migratable(
        &self,
        request: Request<v1::WaitMigratableRequest>,
    ) -> Result<Response<Self::WaitMigratableStream>, Status> {
        wait::wait_migratable(&self.0, request).await
    }

    async fn get_node_info(
        &self,
        request: Request<v1::GetNodeInfoRequest>,
    ) -> Result<Response<v1::GetNodeInfoResponse>, Status> {
        unary::get_node_info(&self.0, request).await
    }
}
