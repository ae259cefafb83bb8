//! A fake agent: a tiny in-process tonic server of the agent API for the tests of agents that
//! misbehave (another API major, contract violations, floods) and the collectors that ask it.
//! Everything a test does not set is UNIMPLEMENTED.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use autofs_api::v1::{
    self,
    autofs_inspector_server::{AutofsInspector, AutofsInspectorServer},
};
use autofs_controller::{Collector, CollectorConfig, NodeEndpoint};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The ListMounts stream of a fake agent.
pub type Mounts = Pin<Box<dyn Stream<Item = Result<v1::MountReport, Status>> + Send>>;
/// The WatchMounts stream of a fake agent.
pub type Events = Pin<Box<dyn Stream<Item = Result<v1::MountEvent, Status>> + Send>>;
pub type Waits = Pin<Box<dyn Stream<Item = Result<v1::WaitMigratableResponse, Status>> + Send>>;

/// What a fake agent answers.
#[derive(Clone)]
pub struct FakeAgent {
    /// GetNodeInfo's answer.
    pub info: v1::GetNodeInfoResponse,
    /// Makes each ListMounts stream.
    list: Arc<dyn Fn() -> Mounts + Send + Sync>,
    /// CheckMigratable's answer; `None`: UNIMPLEMENTED.
    check: Option<v1::CheckMigratableResponse>,
    /// Answers each WatchMounts call; `None`: UNIMPLEMENTED.
    watch: Option<Arc<dyn Fn() -> Result<Events, Status> + Send + Sync>>,
    /// Makes the stream of the n-th WaitMigratable call (from 0); `None`: UNIMPLEMENTED.
    wait: Option<Arc<dyn Fn(usize) -> Waits + Send + Sync>>,
    /// WaitMigratable calls so far.
    waits: Arc<std::sync::atomic::AtomicUsize>,
    /// The GetNodeInfo calls (counted from 0) answered UNAVAILABLE, as by a proxy in front
    /// of an agent that restarts.
    unavailable_infos: std::ops::Range<usize>,
    /// GetNodeInfo calls so far.
    infos: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeAgent {
    /// Agent `node` of this API major (version 9.9.9), with no mounts.
    pub fn new(node: &str) -> FakeAgent {
        FakeAgent {
            info: v1::GetNodeInfoResponse {
                agent_version: "9.9.9".into(),
                api_major: autofs_api::API_MAJOR,
                node: node.into(),
                kernel_release: "6.18.0-fake".into(),
                pipe_ino_supported: true,
                can_read_fds: true,
                scan_interval_ms: 200,
                ..Default::default()
            },
            list: Arc::new(|| Box::pin(tokio_stream::empty())),
            check: None,
            watch: None,
            wait: None,
            waits: Default::default(),
            unavailable_infos: 0..0,
            infos: Default::default(),
        }
    }

    /// Answers each ListMounts with the stream `list` makes.
    pub fn listing(mut self, list: impl Fn() -> Mounts + Send + Sync + 'static) -> FakeAgent {
        self.list = Arc::new(list);
        self
    }

    /// Answers each CheckMigratable with `answer`.
    pub fn checking(mut self, answer: v1::CheckMigratableResponse) -> FakeAgent {
        self.check = Some(answer);
        self
    }

    /// Answers each WatchMounts call with what `watch` gives: a stream, or a refusal.
    pub fn watching(
        mut self,
        watch: impl Fn() -> Result<Events, Status> + Send + Sync + 'static,
    ) -> FakeAgent {
        self.watch = Some(Arc::new(watch));
        self
    }

    /// Answers each WaitMigratable with `messages`, then ends the stream OK.
    pub fn waiting(self, messages: Vec<v1::WaitMigratableResponse>) -> FakeAgent {
        self.waiting_with(move |_| {
            Box::pin(tokio_stream::iter(messages.clone().into_iter().map(Ok)))
        })
    }

    /// Answers each WaitMigratable with `messages`, then keeps the stream open, silent.
    pub fn waiting_then_silent(self, messages: Vec<v1::WaitMigratableResponse>) -> FakeAgent {
        self.waiting_with(move |_| {
            Box::pin(
                tokio_stream::iter(messages.clone().into_iter().map(Ok))
                    .chain(tokio_stream::pending()),
            )
        })
    }

    /// Answers the n-th WaitMigratable call (from 0) with the stream `wait(n)` makes.
    pub fn waiting_with(
        mut self,
        wait: impl Fn(usize) -> Waits + Send + Sync + 'static,
    ) -> FakeAgent {
        self.wait = Some(Arc::new(wait));
        self
    }

    /// Answers GetNodeInfo calls `calls` (counted from 0) with UNAVAILABLE.
    pub fn unavailable_for(mut self, calls: std::ops::Range<usize>) -> FakeAgent {
        self.unavailable_infos = calls;
        self
    }

    /// The GetNodeInfo calls answered so far (by this agent and its clones).
    pub fn handshakes(&self) -> usize {
        self.infos.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves it on the connections `incoming` yields, for the life of the runtime.
    pub fn serve_incoming<S, IO>(self, incoming: S)
    where
        S: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
    {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AutofsInspectorServer::new(self))
                .serve_with_incoming(incoming),
        );
    }

    /// Serves it on `127.0.0.1:0` for the life of the runtime; the address.
    pub async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AutofsInspectorServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[tonic::async_trait]
impl AutofsInspector for FakeAgent {
    type ListMountsStream = Mounts;
    type WatchMountsStream = Events;
    type WaitMigratableStream = Waits;

    async fn list_mounts(
        &self,
        _: Request<v1::ListMountsRequest>,
    ) -> Result<Response<Mounts>, Status> {
        Ok(Response::new((self.list)()))
    }

    async fn watch_mounts(
        &self,
        _: Request<v1::WatchMountsRequest>,
    ) -> Result<Response<Events>, Status> {
        let watch = self
            .watch
            .clone()
            .ok_or_else(|| Status::unimplemented("fake"))?;
        watch().map(Response::new)
    }

    async fn wait_migratable(
        &self,
        _: Request<v1::WaitMigratableRequest>,
    ) -> Result<Response<Waits>, Status> {
        let wait = self
            .wait
            .clone()
            .ok_or_else(|| Status::unimplemented("fake"))?;
        let n = self
            .waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(wait(n)))
    }

    async fn check_migratable(
        &self,
        _: Request<v1::CheckMigratableRequest>,
    ) -> Result<Response<v1::CheckMigratableResponse>, Status> {
        self.check
            .clone()
            .map(Response::new)
            .ok_or_else(|| Status::unimplemented("fake"))
    }

    async fn get_node_info(
        &self,
        _: Request<v1::GetNodeInfoRequest>,
    ) -> Result<Response<v1::GetNodeInfoResponse>, Status> {
        let n = self
            .infos
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.unavailable_infos.contains(&n) {
            return Err(Status::unavailable("fake: restarting"));
        }
        Ok(Response::new(self.info.clone()))
    }
}

/// A library collector of `addrs` (origin `test`).
pub fn collector(addrs: &[SocketAddr], config: CollectorConfig) -> Collector {
    let eps = addrs
        .iter()
        .map(|a| NodeEndpoint::from_socket_addr(*a, "test"))
        .collect();
    Collector::new(eps, config).unwrap()
}

/// [`CollectorConfig::default`] with a 3 s deadline.
pub fn three_second_deadline() -> CollectorConfig {
    CollectorConfig {
        timeout: Duration::from_secs(3),
        ..CollectorConfig::default()
    }
}
