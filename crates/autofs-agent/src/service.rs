//! The `autofs.v1.AutofsInspector` gRPC service.
//!
//! Streams are fed by a producer task through a bounded channel: a slow client applies
//! backpressure (the producer waits), a client that goes away closes the channel and stops the
//! producer, and producers are bounded, so clients that never read cannot grow the agent's
//! memory without bound. Lists and watches have budgets of their own (idle watches never
//! starve lists), and each client — its certificate identity under mutual TLS, else its IP
//! address — gets at most `max_streams_per_client` of each, so one client cannot take them all.
//! Watchers share the inventory's snapshots and the changes computed once per scan.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autofs_api::v1::{self, autofs_inspector_server::AutofsInspector, mount_event::Kind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::changes::Change;
use crate::filter::{self, Filter};
use crate::listener::PeerInfo;
use crate::metrics as m;
use crate::snapshot::{Answer, Inventory, ScanError, Snapshot};

/// Messages buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 32;
/// A client that reads nothing for this long loses its stream (and frees the slot).
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Node name in responses.
    pub node_name: String,
    /// On-demand RPCs reuse a scan younger than this, else they scan.
    pub max_scan_age: Duration,
    /// Background scan interval (reported by GetNodeInfo, used as retry hint).
    pub scan_interval: Duration,
    /// Concurrent ListMounts streams across all clients.
    pub max_streams: usize,
    /// Concurrent WatchMounts streams across all clients (and as many WaitMigratable).
    pub max_watches: usize,
    /// Concurrent streams of each kind per client (certificate identity, else IP address).
    pub max_streams_per_client: usize,
}

/// The service implementation.
#[derive(Clone)]
pub struct AgentService {
    inventory: Arc<Inventory>,
    config: Arc<ServiceConfig>,
    lists: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    waits: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    shutdown: watch::Receiver<bool>,
}

/// The two kinds of stream, budgeted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StreamKind {
    List,
    Watch,
    Wait,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::List => "ListMounts",
            StreamKind::Watch => "WatchMounts",
            StreamKind::Wait => "WaitMigratable",
        }
    }
}

/// Streams open per client and kind. Entries exist only while a stream is open, so the map is
/// bounded by the global budgets.
struct PerClient {
    limit: usize,
    open: std::sync::Mutex<HashMap<(StreamKind, String), usize>>,
}

/// One client's share of a stream; given back on drop.
struct ClientSlot {
    owner: Arc<PerClient>,
    key: (StreamKind, String),
}

impl PerClient {
    fn try_take(self: &Arc<Self>, kind: StreamKind, client: &str) -> Option<ClientSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kind, client.to_owned());
        let n = open.entry(key.clone()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a running stream holds: its client's share and a global slot.
struct StreamSlot {
    _client: ClientSlot,
    _global: OwnedSemaphorePermit,
}

/// Who sent a request, for budgets: the certificate identity, else the peer's IP address.
fn client_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<PeerInfo>()
        .map_or_else(|| "unknown".to_owned(), PeerInfo::client_key)
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AgentService {
    /// A service over `inventory`; streams end cleanly when `shutdown` turns true.
    pub fn new(
        inventory: Arc<Inventory>,
        config: ServiceConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            lists: Arc::new(Semaphore::new(config.max_streams)),
            watches: Arc::new(Semaphore::new(config.max_watches)),
            waits: Arc::new(Semaphore::new(config.max_watches)),
            per_client: Arc::new(PerClient {
                limit: config.max_streams_per_client,
                open: Default::default(),
            }),
            inventory,
            config: Arc::new(config),
            shutdown,
        }
    }

    /// The client's share first (a client at its limit takes nothing global), then a global
    /// slot of the kind.
    fn stream_slot(&self, kind: StreamKind, client: &str) -> Result<StreamSlot, Status> {
        let client_slot = self.per_client.try_take(kind, client).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this client ({client}) already has {} {} streams open (--max-streams-per-client); close one or retry later",
                self.config.max_streams_per_client,
                kind.name()
            ))
        })?;
        let (global, limit) = match kind {
            StreamKind::List => (&self.lists, self.config.max_streams),
            StreamKind::Watch => (&self.watches, self.config.max_watches),
            StreamKind::Wait => (&self.waits, self.config.max_watches),
        };
        let global = global.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent streams ({} limit {limit}); retry later",
                kind.name()
            ))
        })?;
        Ok(StreamSlot {
            _client: client_slot,
            _global: global,
        })
    }

    /// What every stream needs before its producer starts: a valid filter, a stream slot and
    /// a fresh snapshot. A refusal is recorded as the call's outcome.
    async fn open_stream(
        &self,
        kind: StreamKind,
        client: &str,
        started: Instant,
        request: &v1::ListMountsRequest,
    ) -> Result<(Filter, StreamSlot, Answer), Status> {
        let setup = async {
            let filter = Filter::from_request(request, &self.inventory)?;
            let slot = self.stream_slot(kind, client)?;
            let answer = self.fresh().await?;
            Ok::<_, Status>((filter, slot, answer))
        };
        let result = setup.await;
        if let Err(status) = &result {
            m::grpc_call(kind.name(), status.code(), started);
        }
        result
    }

    async fn fresh(&self) -> Result<Answer, Status> {
        self.inventory
            .fresh(self.config.max_scan_age)
            .await
            .map_err(scan_status)
    }
}

/// A scan that could not answer: the agent cannot say anything true right now.
fn scan_status(e: ScanError) -> Status {
    match e {
        ScanError::Stalled { .. } => Status::unavailable(e.to_string()),
        e => Status::unavailable(format!("scan failed: {e}")),
    }
}

/// Response metadata saying how old the scan behind an answer is, and whether it is the last
/// good one of a stalled scan.
fn mark_age<T>(response: &mut Response<T>, answer: &Answer) {
    let age_ms = u64::try_from(answer.age().as_millis()).unwrap_or(u64::MAX);
    let md = response.metadata_mut();
    md.insert(SCAN_AGE_HEADER, age_ms.into());
    if answer.stale {
        md.insert(
            STALE_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
}

/// Initial metadata of ListMounts and CheckMigratable: age of the scan answered from (ms).
pub const SCAN_AGE_HEADER: &str = "autofs-scan-age-ms";
/// Initial metadata set (`true`) when the answer comes from the last good scan because the
/// current one has stalled.
pub const STALE_HEADER: &str = "autofs-scan-stale";

impl AgentService {}

/// Runs `call`, recording its code and latency (unary calls).
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

/// The client's deadline (`grpc-timeout`), which a stream must honour itself. Values beyond
/// the 8 digits gRPC allows, or otherwise unusable, mean no deadline (never a panic).
fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(d)
}

/// How a stream ends after its last message: normally, or with the status a producer set
/// when it had to stop early. The status reaches the client even when the channel is full.
#[derive(Clone, Default)]
struct Ending(Arc<std::sync::Mutex<Option<Status>>>);

impl Ending {
    fn fail(&self, status: Status) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
    }

    fn stream<T: Send + 'static>(self, rx: mpsc::Receiver<Result<T, Status>>) -> EventStream<T> {
        let last = std::iter::from_fn(move || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(Err)
        });
        Box::pin(ReceiverStream::new(rx).chain(tokio_stream::iter(last)))
    }
}

/// Sends one message, giving up on a client that has not read for [`STALL_LIMIT`]. False when
/// the stream must stop (client gone or stalled; `ending` says which to the client).
async fn send<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    item: T,
    ending: &Ending,
) -> Result<(), tonic::Code> {
    match tokio::time::timeout(STALL_LIMIT, tx.send(Ok(item))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(tonic::Code::Cancelled), // the client went away
        Err(_) => {
            ending.fail(Status::resource_exhausted(format!(
                "the client read nothing for {} s; stream closed to free its slot",
                STALL_LIMIT.as_secs()
            )));
            Err(tonic::Code::ResourceExhausted)
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn shutting_down(mut shutdown: watch::Receiver<bool>) {
    // A dropped sender also means the server is going away.
    let _ = shutdown.wait_for(|stop| *stop).await;
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
        let started = Instant::now();
        let client = client_of(&request);
        let (filter, permit, answer) = self
            .open_stream(StreamKind::List, &client, started, request.get_ref())
            .await?;
        // Hold only the shared API reports, not the whole snapshot: they stay alive for as
        // long as a slow client takes to read them.
        let reports = answer.snapshot.reports.clone();
        let deadline = deadline(&request);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let ending = Ending::default();
        let shutdown = self.shutdown.clone();
        let end = ending.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let send_all = async {
                for report in reports.iter().filter(|r| filter.matches(r)) {
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

    async fn watch_mounts(
        &self,
        request: Request<v1::WatchMountsRequest>,
    ) -> Result<Response<Self::WatchMountsStream>, Status> {
        let started = Instant::now();
        let filter_request = request.get_ref().filter.clone().unwrap_or_default();
        let client = client_of(&request);
        // Subscribe first, so a scan published while the first snapshot is taken is not missed.
        let mut updates = self.inventory.subscribe();
        let (filter, permit, answer) = self
            .open_stream(StreamKind::Watch, &client, started, &filter_request)
            .await?;
        let deadline = deadline(&request);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let ending = Ending::default();
        let end = ending.clone();
        let shutdown = self.shutdown.clone();
        let node = self.config.node_name.clone();
        // A watch with nothing to send never learns from a failed send that its client left,
        // so it also waits for the client to close the stream (which frees the permit).
        let gone = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut watcher = Watcher {
                filter,
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

    async fn check_migratable(
        &self,
        request: Request<v1::CheckMigratableRequest>,
    ) -> Result<Response<v1::CheckMigratableResponse>, Status> {
        let (response, answer) =
            observed("CheckMigratable", self.check(request.into_inner())).await?;
        let mut response = Response::new(response);
        mark_age(&mut response, &answer);
        Ok(response)
    }

    async fn wait_migratable(
        &self,
        request: Request<v1::WaitMigratableRequest>,
    ) -> Result<Response<Self::WaitMigratableStream>, Status> {
        use v1::check_migratable_request::Target;
        use v1::wait_migratable_request::Target as WaitTarget;
        let started = Instant::now();
        let target = request.get_ref().target.clone().map(|t| match t {
            WaitTarget::Pid(pid) => Target::Pid(pid),
            WaitTarget::ContainerId(id) => Target::ContainerId(id),
            WaitTarget::PodUid(uid) => Target::PodUid(uid),
        });
        let client = client_of(&request);
        // Subscribe first, so a scan published while the first verdict is taken is not missed.
        let mut updates = self.inventory.subscribe();
        let setup = async {
            let workload = self.workload(target)?;
            let permit = self.stream_slot(StreamKind::Wait, &client)?;
            let mut answer = self.snapshot_for(&workload).await?;
            if answer.stale {
                // A gate must not open on a scan older than the stall: wait for a real one.
                return Err(Status::unavailable(format!(
                    "the current scan has stalled; the last good one is {} s old; retry later",
                    answer.age().as_secs()
                )));
            }
            // A final answer must come from a scan newer than the question: a mount created
            // just before it may not be in an older one. (Waiting answers can be older: every
            // later change is seen anyway; concurrent waiters share the scan.)
            if answer.snapshot.taken < started && is_final(&answer.snapshot, &workload) {
                answer = self
                    .inventory
                    .fresh(Duration::ZERO)
                    .await
                    .map_err(scan_status)?;
                if answer.stale {
                    return Err(Status::unavailable(format!(
                        "the current scan has stalled; the last good one is {} s old; retry later",
                        answer.age().as_secs()
                    )));
                }
            }
            Ok::<_, Status>((workload, permit, answer.snapshot))
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
        let shutdown = self.shutdown.clone();
        // A waiter that sends nothing while blockers do not change learns that its client
        // left from the channel closing, which frees its slot at once.
        let gone = tx.clone();
        let mut wait = Wait {
            node: self.config.node_name.clone(),
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
                    // Waiters share the agent's change detection: no scan per waiter.
                    if updates.changed().await.is_err() {
                        ending.fail(Status::unavailable("agent shutting down; wait again"));
                        return tonic::Code::Unavailable;
                    }
                    let next = updates.borrow_and_update().clone();
                    if next.generation <= seen {
                        continue;
                    }
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
                        "deadline reached while INTERIM mounts still block; the last message lists them",
                    ));
                    tonic::Code::DeadlineExceeded
                }
                () = gone.closed() => tonic::Code::Cancelled,
                () = shutting_down(shutdown) => {
                    ending.fail(Status::unavailable("agent shutting down; wait again"));
                    tonic::Code::Unavailable
                }
            };
            m::grpc_call("WaitMigratable", code, started);
        });
        Ok(Response::new(end.stream(rx)))
    }

    async fn get_node_info(
        &self,
        _request: Request<v1::GetNodeInfoRequest>,
    ) -> Result<Response<v1::GetNodeInfoResponse>, Status> {
        observed("GetNodeInfo", async {
            let info = crate::node_info::collect(&self.inventory, &self.config);
            Ok(Response::new(info))
        })
        .await
    }
}

/// A validated workload: the mount namespace of a pid, a container id prefix, or a pod UID.
#[derive(Debug, Clone)]
struct Workload {
    target: v1::check_migratable_request::Target,
    pid_ns: Option<u64>,
    container: Option<String>,
    pod: Option<String>,
}

/// What one snapshot says about a workload.
struct Judgement {
    mounts_checked: u32,
    blocking: Vec<v1::MountReport>,
}

impl AgentService {
    /// Validates a target before any scan: bad input never costs one.
    fn workload(
        &self,
        target: Option<v1::check_migratable_request::Target>,
    ) -> Result<Workload, Status> {
        use v1::check_migratable_request::Target;
        let target = target.ok_or_else(|| {
            Status::invalid_argument("target: one of pid, container_id or pod_uid is required")
        })?;
        let mut workload = Workload {
            target: target.clone(),
            pid_ns: None,
            container: None,
            pod: None,
        };
        match &target {
            Target::Pid(pid) => {
                workload.pid_ns = Some(filter::mount_namespace_of(*pid, &self.inventory)?);
            }
            Target::ContainerId(id) => {
                workload.container = Some(
                    filter::container_id(id)?
                        .ok_or_else(|| Status::invalid_argument("container_id: empty"))?,
                );
            }
            Target::PodUid(uid) => {
                workload.pod = Some(
                    filter::pod_uid(uid)?
                        .ok_or_else(|| Status::invalid_argument("pod_uid: empty"))?,
                );
            }
        }
        Ok(workload)
    }

    /// A fresh snapshot that knows the workload's namespace (a process newer than the latest
    /// scan makes it look again).
    /// (While a scan is stalled, the last good scan answers as it is: see [`Answer`].)
    async fn snapshot_for(&self, workload: &Workload) -> Result<Answer, Status> {
        let answer = self.fresh().await?;
        if let Some(ns) = workload.pid_ns
            && answer.snapshot.namespace(ns).is_none()
            && !answer.stale
        {
            return self.inventory.rescan_bounded().await.map_err(scan_status);
        }
        Ok(answer)
    }

    async fn check(
        &self,
        req: v1::CheckMigratableRequest,
    ) -> Result<(v1::CheckMigratableResponse, Answer), Status> {
        let workload = self.workload(req.target)?;
        let answer = self.snapshot_for(&workload).await?;
        let Judgement {
            mounts_checked,
            blocking,
        } = match judge(&answer.snapshot, &workload) {
            Err(status) if status.code() == tonic::Code::NotFound && answer.stale => {
                // Not in a scan that predates the stall is no proof of absence.
                return Err(Status::unavailable(format!(
                    "the current scan has stalled and the last good one ({} s old) does not show this workload; retry later",
                    answer.age().as_secs()
                )));
            }
            judged => judged?,
        };
        let only_interim = !blocking.is_empty()
            && blocking
                .iter()
                .all(|r| r.state == v1::MountState::Interim as i32);
        let retry_after_ms = if only_interim {
            u32::try_from(self.config.scan_interval.as_millis().clamp(100, 60_000))
                .unwrap_or(60_000)
        } else {
            0
        };
        let response = v1::CheckMigratableResponse {
            dumpable: blocking.is_empty(),
            blocking,
            mounts_checked,
            retry_after_ms,
            node: self.config.node_name.clone(),
            scan_age_ms: u64::try_from(answer.age().as_millis()).unwrap_or(u64::MAX),
            stale: answer.stale,
        };
        Ok((response, answer))
    }
}

/// The workload's mounts in `snapshot` and those that block a dump. NOT_FOUND when nothing of
/// the workload runs on the node; INVALID_ARGUMENT for an ambiguous container id prefix.
fn judge(snapshot: &Snapshot, workload: &Workload) -> Result<Judgement, Status> {
    use v1::check_migratable_request::Target;
    let namespaces: Vec<u64> = snapshot
        .scan
        .namespaces
        .iter()
        .filter(|n| {
            workload.pid_ns.is_some_and(|ns| ns == n.mnt_ns)
                || workload
                    .container
                    .as_deref()
                    .is_some_and(|id| !n.container_id.is_empty() && n.container_id.starts_with(id))
                || workload.pod.as_deref().is_some_and(|uid| n.pod_uid == uid)
        })
        .map(|n| n.mnt_ns)
        .collect();
    if namespaces.is_empty() {
        return Err(Status::not_found(match &workload.target {
            Target::Pid(pid) => format!("pid {pid}: its mount namespace vanished"),
            Target::ContainerId(id) => {
                format!("container {id}: no process of it runs on this node")
            }
            Target::PodUid(uid) => format!("pod {uid}: no container of it runs on this node"),
        }));
    }
    if let Some(id) = &workload.container {
        let mut ids: Vec<&str> = snapshot
            .scan
            .namespaces
            .iter()
            .filter(|n| namespaces.contains(&n.mnt_ns))
            .map(|n| n.container_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "container_id: prefix {id} matches {} containers; give more digits",
                ids.len()
            )));
        }
    }
    let mut mounts_checked = 0;
    let mut blocking = Vec::new();
    for (core, report) in snapshot.scan.reports.iter().zip(snapshot.reports.iter()) {
        if namespaces.contains(&core.mnt_ns) {
            mounts_checked += 1;
            if !core.dumpable {
                blocking.push(report.clone());
            }
        }
    }
    Ok(Judgement {
        mounts_checked,
        blocking,
    })
}

/// Whether `snapshot` would end a wait for `workload` (dumpable, or blocked for good), or
/// refuse it (nothing of the workload found).
fn is_final(snapshot: &Snapshot, workload: &Workload) -> bool {
    judge(snapshot, workload).map_or(true, |j| {
        j.blocking.is_empty()
            || j.blocking
                .iter()
                .any(|r| r.state != v1::MountState::Interim as i32)
    })
}

/// One wait: the messages of a WaitMigratable stream, sent when the blocking set changes.
struct Wait {
    node: String,
    sequence: u64,
    /// What the last message said: (namespace, mount, state, queued packets) per blocker.
    last: Option<Vec<(u64, u32, i32, u64)>>,
    tx: mpsc::Sender<Result<v1::WaitMigratableResponse, Status>>,
    ending: Ending,
}

impl Wait {
    /// Sends the verdict of `snapshot` if it differs from the last one. `Ok(true)` when the
    /// wait is over (dumpable, or blocked for good); `Err` when the stream must stop.
    async fn apply(
        &mut self,
        snapshot: &Snapshot,
        workload: &Workload,
    ) -> Result<bool, tonic::Code> {
        use v1::wait_migratable_response::Outcome;
        let Judgement {
            mounts_checked,
            blocking,
        } = match judge(snapshot, workload) {
            Ok(j) => j,
            Err(status) => {
                let code = status.code();
                self.ending.fail(status);
                return Err(code);
            }
        };
        let stuck: Vec<&v1::MountReport> = blocking
            .iter()
            .filter(|r| r.state != v1::MountState::Interim as i32)
            .collect();
        let (outcome, message) = if blocking.is_empty() {
            (
                Outcome::Dumpable,
                format!("nothing blocks: {mounts_checked} autofs mount(s) CRIU can dump now"),
            )
        } else if let Some(first) = stuck.first() {
            (
                Outcome::WillNotClear,
                format!(
                    "waiting will not help: {} blocking mount(s) cannot clear by themselves, e.g. {} ({}): {}",
                    stuck.len(),
                    first.mount_point,
                    v1::MountState::try_from(first.state).map_or("?", |s| s.as_str_name()),
                    first.message
                ),
            )
        } else {
            let packets: u64 = blocking.iter().map(|r| r.pending_packets).sum();
            (
                Outcome::Waiting,
                format!(
                    "waiting: {} mount(s) INTERIM with {packets} queued request(s) the daemon has not read yet",
                    blocking.len()
                ),
            )
        };
        let key: Vec<_> = blocking
            .iter()
            .map(|r| (r.mnt_ns, r.mount_id, r.state, r.pending_packets))
            .collect();
        let done = outcome != Outcome::Waiting;
        if self.last.as_ref() != Some(&key) || done {
            self.last = Some(key);
            self.sequence += 1;
            let response = v1::WaitMigratableResponse {
                dumpable: blocking.is_empty(),
                blocking,
                mounts_checked,
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

/// Sends one stream's ADDED / CHANGED / REMOVED events. Holds no reports of its own: the
/// shared snapshots and their changes say what to send.
struct Watcher {
    filter: Filter,
    out: EventSender,
}

/// The numbered events of one stream.
struct EventSender {
    node: String,
    sequence: u64,
    tx: mpsc::Sender<Result<v1::MountEvent, Status>>,
    ending: Ending,
}

impl Watcher {
    /// Every matching mount of the first snapshot, as ADDED. An error code when the stream
    /// must stop (client gone or stalled).
    async fn send_initial(&mut self, reports: &[v1::MountReport]) -> Result<(), tonic::Code> {
        for report in reports.iter().filter(|r| self.filter.matches(r)) {
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
        let filter = &self.filter;
        for (kind, report) in change.events(reports, |r| filter.matches(r)) {
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
