//! The fan-out: every operation runs on every node under a shared concurrency limit, retrying
//! only `UNAVAILABLE` with backoff and jitter, and every node must answer within the deadline
//! (`timeout` after the fan-out starts — time spent queued behind the concurrency limit
//! counts, so the whole answer is bounded by the deadline however many nodes hang). A node
//! that fails becomes a [`NodeError`] in the result; it never delays the others.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use autofs_api::v1;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffConfig};
use crate::client::{self, Client, Connector, TlsOptions, deadline_after};
use crate::discovery::{self, Discovered, Source};
use crate::endpoint::{self, NodeEndpoint};
use crate::error::{Error, NodeError, NodeErrorKind};
use crate::follow::{AgentMove, WaitEvent, is_lost};
use crate::report::{CheckOutcome, ClusterReport, NodeResult, NodeStatus, ScanAge};

pub use v1::check_migratable_request::Target;

/// A workload to check: its target, and the mount points CRIU will be told are external
/// (`external_mounts` of `CheckMigratableRequest`: `--external mnt[PATH]`, as runc and crun
/// pass every bind mount of a container, so every hostPath or bind volume's container path;
/// none for a bare `criu dump`). A [`Target`] alone is a workload without external mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The pid, container or pod.
    pub target: Target,
    /// Absolute mount points as seen in the workload's own mount namespace.
    pub external_mounts: Vec<String>,
}

impl From<Target> for Workload {
    fn from(target: Target) -> Self {
        Self {
            target,
            external_mounts: Vec::new(),
        }
    }
}

/// How the collector talks to agents.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Nodes asked at the same time.
    pub concurrency: usize,
    /// Deadline of every node, counted from the start of the fan-out (queueing and retries
    /// included): the whole answer arrives within it.
    pub timeout: Duration,
    /// TCP (+ TLS) connect timeout of one attempt.
    pub connect_timeout: Duration,
    /// Attempts per node (retries happen only on `UNAVAILABLE`).
    pub max_attempts: u32,
    /// Backoff between attempts (and between watch reconnects).
    pub backoff: BackoffConfig,
    /// TLS; plaintext when `None`.
    pub tls: Option<TlsOptions>,
    /// Refuse a second endpoint that answers as an already-seen node (on by default; turn it
    /// off only when several endpoints front one agent on purpose, e.g. benchmarks).
    pub unique_nodes: bool,
    /// A node that streams more mount reports than this fails ("sent more than N mounts").
    pub max_mounts_per_node: usize,
    /// Memory all nodes' reports of one `collect` may take together (decoded size); the node
    /// whose report crosses it fails, the others keep theirs.
    pub max_report_bytes: usize,
    /// How often a watch over discovery sources that can change runs discovery again
    /// ([`Collector::watch`]); sooner, with backoff, after a node's stream breaks. Like
    /// Prometheus's service discovery `refresh_interval`. At least a second.
    pub refresh_interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            concurrency: 64,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 4,
            backoff: BackoffConfig::default(),
            tls: None,
            unique_nodes: true,
            max_mounts_per_node: DEFAULT_MAX_MOUNTS_PER_NODE,
            max_report_bytes: DEFAULT_MAX_REPORT_BYTES,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// Default of [`CollectorConfig::max_mounts_per_node`]: far more autofs mounts than a node has.
pub const DEFAULT_MAX_MOUNTS_PER_NODE: usize = 100_000;
/// Default of [`CollectorConfig::max_report_bytes`]: 512 MiB.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 512 << 20;
/// Default of [`CollectorConfig::refresh_interval`]: 30 s, as Prometheus's DNS service
/// discovery.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Memory the reports of one `collect` hold, across nodes.
struct ReportBudget {
    limit: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl ReportBudget {
    /// Takes `bytes` for a node already holding `held`; or, when that would cross the limit,
    /// gives back the node's `held` in the same step — so the node that crosses the bound is
    /// the only one that fails: another node never sees memory a failed node still holds.
    fn take(&self, bytes: usize, held: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let fits = |used: usize| used.checked_add(bytes).is_some_and(|t| t <= self.limit);
        let before = self
            .used
            .fetch_update(Relaxed, Relaxed, |used| {
                Some(if fits(used) {
                    used + bytes
                } else {
                    used.saturating_sub(held)
                })
            })
            .unwrap_or_else(|used| used);
        fits(before)
    }

    fn give_back(&self, bytes: usize) {
        self.used
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What one decoded report holds in memory (approximately: its encoding plus the struct).
fn report_size(m: &v1::MountReport) -> usize {
    use prost::Message;
    m.encoded_len() + std::mem::size_of::<v1::MountReport>()
}

pub(crate) struct Inner {
    pub config: CollectorConfig,
    pub connector: Connector,
    pub endpoints: Vec<NodeEndpoint>,
    /// Discovery's gaps ([`Discovered::coverage_unverified`]), copied into every report.
    pub coverage_unverified: Vec<String>,
    pub limit: Arc<Semaphore>,
    /// Where `endpoints` came from, when discovery may be run again ([`Collector::discover`]);
    /// empty for a fixed list ([`Collector::new`]).
    pub sources: Vec<Source>,
}

/// Asks every discovered agent; cheap to clone.
///
/// ```no_run
/// use autofs_controller::{Collector, CollectorConfig, discovery::{self, Source}};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let found = discovery::discover(&[Source::Static(vec![
///     "10.0.0.1:50051".into(),
///     "10.0.0.2:50051".into(),
/// ])])
/// .await?;
/// let collector = Collector::from_discovery(found, CollectorConfig::default())?;
/// let report = collector.collect(Default::default()).await;
/// for m in report.mounts() {
///     println!("{} {} dumpable={}", m.node, m.mount_point, m.dumpable);
/// }
/// for e in report.failed() {
///     eprintln!("{e}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Collector {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("endpoints", &self.inner.endpoints.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Collector {
    /// A collector for `endpoints`, taken as covering the whole cluster: refuses an empty or
    /// duplicated list, out-of-range settings and unreadable TLS files. Nothing is connected
    /// yet. [`Collector::from_discovery`] keeps what discovery could not verify.
    ///
    /// # Errors
    ///
    /// - [`Error::Discovery`] with [`DiscoveryError::Empty`](crate::DiscoveryError::Empty) or
    ///   [`DiscoveryError::Duplicate`](crate::DiscoveryError::Duplicate) for the endpoint list.
    /// - [`Error::Config`] when `concurrency` or `max_attempts` is 0, `timeout` is zero, or
    ///   `refresh_interval` is under a second.
    /// - [`Error::TlsFile`] / [`Error::Tls`] from [`TlsOptions::load`] when `config.tls` is set.
    pub fn new(endpoints: Vec<NodeEndpoint>, config: CollectorConfig) -> Result<Collector, Error> {
        Collector::from_discovery(endpoints.into(), config)
    }

    /// A collector for what [`crate::discovery::discover`] found: as [`Collector::new`], and
    /// every [`ClusterReport`] carries discovery's
    /// [`Discovered::coverage_unverified`] (and is then not complete).
    ///
    /// # Errors
    ///
    /// As [`Collector::new`].
    pub fn from_discovery(
        discovered: Discovered,
        config: CollectorConfig,
    ) -> Result<Collector, Error> {
        Collector::with_sources(discovered, config, Vec::new())
    }

    /// [`Collector::from_discovery`], remembering the `sources` the endpoints came from.
    fn with_sources(
        discovered: Discovered,
        config: CollectorConfig,
        sources: Vec<Source>,
    ) -> Result<Collector, Error> {
        let Discovered {
            endpoints,
            coverage_unverified,
        } = discovered;
        endpoint::validate(&endpoints)?;
        if config.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if config.timeout.is_zero() {
            return Err(Error::Config(
                "the per-node timeout must be positive".into(),
            ));
        }
        if config.max_attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".into()));
        }
        if config.refresh_interval < crate::watch::MIN_REFRESH_INTERVAL {
            return Err(Error::Config(format!(
                "the discovery refresh interval must be at least {:?}",
                crate::watch::MIN_REFRESH_INTERVAL
            )));
        }
        let tls = config.tls.as_ref().map(TlsOptions::load).transpose()?;
        let connector = Connector {
            tls,
            connect_timeout: config.connect_timeout.min(config.timeout),
        };
        Ok(Collector {
            inner: Arc::new(Inner {
                // More slots than a semaphore holds are as good as that many: no fan-out has
                // more nodes.
                limit: Arc::new(Semaphore::new(
                    config.concurrency.min(Semaphore::MAX_PERMITS),
                )),
                config,
                connector,
                endpoints,
                coverage_unverified,
                sources,
            }),
        })
    }

    /// Runs discovery over `sources` ([`discovery::discover`]) and makes a collector for what
    /// it found, as [`Collector::from_discovery`] does, that remembers the sources: a wait
    /// ([`Collector::wait_migratable_events`]) whose node's agent cannot be reached any more
    /// runs them again to find where that agent went (a DaemonSet rolling update gives the
    /// new agent pod a new IP). A collector of only [`Source::Static`] lists never runs
    /// discovery again (such a list cannot change).
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when discovery fails (see [`discovery::discover`]), and every
    /// error of [`Collector::new`].
    pub async fn discover(
        sources: Vec<Source>,
        config: CollectorConfig,
    ) -> Result<Collector, Error> {
        let discovered = discovery::discover(&sources).await?;
        Collector::with_sources(discovered, config, sources)
    }

    /// Whether discovery can be run again ([`Collector::rediscover`]): the collector was made
    /// by [`Collector::discover`] with a source other than [`Source::Static`].
    pub fn rediscovers(&self) -> bool {
        self.inner
            .sources
            .iter()
            .any(|s| !matches!(s, Source::Static(_)))
    }

    /// [`Error::NotInCluster`] when this collector's discovery names every node of the
    /// cluster ([`Source::names_every_node`] for each source, and nothing left unverified)
    /// and none is `node`; `None` when `node` is named or discovery cannot tell.
    pub(crate) fn absent_from_cluster(&self, node: &str) -> Option<Error> {
        let sources = &self.inner.sources;
        let authoritative = !sources.is_empty()
            && sources.iter().all(Source::names_every_node)
            && self.inner.coverage_unverified.is_empty();
        let names = || {
            self.inner
                .endpoints
                .iter()
                .filter_map(|e| e.expected_node.as_deref())
        };
        if !authoritative || names().any(|n| n == node) {
            return None;
        }
        Some(Error::NotInCluster {
            name: node.to_owned(),
            nodes: names().collect::<std::collections::HashSet<_>>().len(),
        })
    }

    /// The sources discovery runs again ([`Collector::discover`]); empty for a fixed list.
    pub fn sources(&self) -> &[Source] {
        &self.inner.sources
    }

    /// A collector for what discovery finds now: the same sources, configuration, TLS
    /// settings and concurrency limit (shared with this one), the endpoints found again.
    ///
    /// # Errors
    ///
    /// [`Error::Discovery`] when discovery fails now, or finds nothing or a duplicate;
    /// [`Error::Config`] when this collector has no sources to run again
    /// ([`Collector::rediscovers`] is false).
    pub async fn rediscover(&self) -> Result<Collector, Error> {
        if !self.rediscovers() {
            return Err(Error::Config(
                "no discovery source that can change (a --nodes list is fixed)".into(),
            ));
        }
        let Discovered {
            endpoints,
            coverage_unverified,
        } = discovery::discover(&self.inner.sources).await?;
        Ok(Collector {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                connector: self.inner.connector.clone(),
                endpoints,
                coverage_unverified,
                limit: self.inner.limit.clone(),
                sources: self.inner.sources.clone(),
            }),
        })
    }

    /// The endpoints this collector asks.
    pub fn endpoints(&self) -> &[NodeEndpoint] {
        &self.inner.endpoints
    }

    /// The configuration.
    pub fn config(&self) -> &CollectorConfig {
        &self.inner.config
    }

    /// Every mount of every node (`filter` as in `ListMounts`).
    pub async fn collect(&self, filter: v1::ListMountsRequest) -> ClusterReport {
        let started = Instant::now();
        let filter = Arc::new(filter);
        let budget = Arc::new(ReportBudget {
            limit: self.inner.config.max_report_bytes,
            used: Default::default(),
        });
        let per_node = self.inner.config.max_mounts_per_node;
        let mut nodes: Vec<NodeResult<Vec<v1::MountReport>>> = self
            .fan_out(move |mut c, info, deadline| {
                let filter = filter.clone();
                let budget = budget.clone();
                async move {
                    let limits = Limits {
                        per_node,
                        budget: &budget,
                    };
                    list_mounts(&mut c, &info.node, (*filter).clone(), deadline, limits).await
                }
            })
            .await
            .into_iter()
            .map(|n| {
                let scan = n.result.as_ref().ok().and_then(|(_, scan)| *scan);
                NodeResult {
                    endpoint: n.endpoint,
                    info: n.info,
                    result: n.result.map(|(mounts, _)| mounts),
                    attempts: n.attempts,
                    elapsed: n.elapsed,
                    scan,
                }
            })
            .collect();
        if self.inner.config.unique_nodes {
            mark_duplicates(&mut nodes);
        }
        ClusterReport {
            nodes,
            elapsed: started.elapsed(),
            coverage_unverified: self.inner.coverage_unverified.clone(),
        }
    }

    /// The handshake of every node: version, kernel, capabilities, reachability.
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        let within = self.inner.config.timeout;
        self.nodes_until(deadline_after(within), within).await
    }

    /// The handshakes, by `deadline`, which is `within` after the caller's start (what a node
    /// that misses it is said to have had).
    async fn nodes_until(&self, deadline: Instant, within: Duration) -> Vec<NodeStatus> {
        let mut nodes = self
            .fan_out_until(deadline, within, |_, _, _| async {
                Ok::<(), NodeErrorKind>(())
            })
            .await;
        if self.inner.config.unique_nodes {
            mark_duplicates(&mut nodes);
        }
        nodes
    }

    /// Whether `target` on node `node` could be checkpointed now. `node` is a node name (or
    /// an endpoint address); without discovery-provided names every agent is asked for its
    /// name first.
    ///
    /// # Errors
    ///
    /// - [`Error::UnknownNode`] when no agent is that node (listing, in `unreachable`, the
    ///   agents that did not answer).
    /// - [`Error::Node`] when the node could not be asked: [`NodeErrorKind::Unavailable`]
    ///   (unreachable, shutting down, or its current scan has stalled) is asked again with
    ///   backoff up to `max_attempts` times, and ends as that error or as
    ///   [`NodeErrorKind::DeadlineExceeded`] at the configured timeout; or when the node
    ///   speaks another API major ([`NodeErrorKind::VersionMismatch`]) or answered against
    ///   the API contract ([`NodeErrorKind::Malformed`]), or refused the
    ///   request with [`NodeErrorKind::Rpc`]:
    ///   - `NotFound`: no such pid, container or pod on the node;
    ///   - `InvalidArgument`: an empty target, an invalid pid, an ambiguous container prefix;
    ///   - `PermissionDenied`: processes of the workload exist that the agent is not allowed
    ///     to read (a confining profile, a user namespace), so no verdict would be true;
    ///   - `Internal`: processes of the workload, or processes it cannot attribute, could not
    ///     be read for another reason (the message names the first failed read).
    pub async fn check(
        &self,
        node: &str,
        workload: impl Into<Workload>,
    ) -> Result<CheckOutcome, Error> {
        let Workload {
            target,
            external_mounts,
        } = workload.into();
        // One deadline for finding the node and asking it: `--timeout` bounds the answer.
        let within = self.inner.config.timeout;
        let deadline = deadline_after(within);
        let ep = self.find_node(node, deadline, within).await?;
        let request = v1::CheckMigratableRequest {
            target: Some(target),
            external_mounts,
        };
        let done = run_node(
            &self.inner,
            &ep,
            deadline,
            within,
            self.inner.config.max_attempts,
            move |mut c, info, deadline| {
                let request = request.clone();
                async move {
                    let r = c
                        .check_migratable(client::request(request, deadline))
                        .await
                        .map_err(|s| client::status_kind(&s))?
                        .into_inner();
                    check_response(&r, &info.node)?;
                    Ok(r)
                }
            },
        )
        .await;
        let response = done.result?;
        Ok(CheckOutcome {
            endpoint: ep,
            response,
        })
    }

    /// Waits until `target` on node `node` could be checkpointed, calling `progress` with the
    /// agent's verdict at the start and each time the set of blocking mounts changes
    /// (`WaitMigratable`). Ends with [`WaitEnd::Dumpable`] as soon as nothing blocks, with
    /// [`WaitEnd::WillNotClear`] at once when a blocker cannot clear by itself, and with
    /// [`WaitEnd::StillBlocked`] when `wait` has passed. Finding the node is bounded by the
    /// configured timeout as well (by `wait` alone when discovery runs again: see
    /// [`Collector::wait_migratable_events`], which this is with only the verdicts reported).
    /// A node that gives no verdict in time is [`NodeErrorKind::DeadlineExceeded`] naming
    /// `wait`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] and [`Error::Node`] as [`Collector::check`] gives them for the
    /// same target, with two differences: a wait the agent ends with `UNAVAILABLE` (it shuts
    /// down, or its scan stalls while the gate waits: the gate says nothing then), or an agent
    /// that cannot be reached, is asked again with backoff until `wait` has passed, whatever
    /// `max_attempts` says (an agent restarting under a wait takes as long as its pod does);
    /// and [`NodeErrorKind::Rpc`] with
    /// `ResourceExhausted` when the agent's stream limits are used up. A stream that ends
    /// without a final verdict is [`NodeErrorKind::Malformed`].
    pub async fn wait_migratable(
        &self,
        node: &str,
        workload: impl Into<Workload>,
        wait: Duration,
        progress: impl Fn(&v1::WaitMigratableResponse) + Send + Sync + 'static,
    ) -> Result<WaitOutcome, Error> {
        self.wait_migratable_events(node, workload, wait, move |event| {
            if let WaitEvent::Verdict(m) = event {
                progress(m);
            }
        })
        .await
    }

    /// [`Collector::wait_migratable`], reporting to `on_event` what happens during the wait:
    /// every verdict of the agent ([`WaitEvent::Verdict`]) and, when the collector runs
    /// discovery again ([`Collector::rediscovers`]: made by [`Collector::discover`] with a
    /// DNS, file or Kubernetes source), how it follows the node's agent across a rolling
    /// update.
    ///
    /// Following the node: when `node` names a node (not an endpoint address) and its agent
    /// cannot be asked where it was — unreachable after `max_attempts` attempts, its pod not
    /// ready, or another node's agent answering at its address — the wait reports
    /// [`WaitEvent::Lost`] and runs discovery again, with backoff
    /// ([`CollectorConfig::backoff`]), until an agent that says it is `node` (its
    /// `GetNodeInfo` node name) answers; an agent that has just failed is taken again only
    /// when no other agent answers as `node` (a new `agent_instance` is preferred). It then
    /// reports [`WaitEvent::Found`] (the move from the old address to the new, with both
    /// agent instances) and asks that agent the same question with what is left of `wait`.
    /// A discovery round that fails or does not find the node is a
    /// [`WaitEvent::NotFound`], never the end of the wait: only `wait` passing ends it. The
    /// node lookup before the wait searches the same way, bounded by `wait` instead of the
    /// configured timeout. Only an agent that names itself `node` is ever asked for `node`'s
    /// verdict. Without such sources, or for an endpoint address, the endpoint found first
    /// is asked again until `wait` has passed (a restart in place, at the same address).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use autofs_controller::{Collector, CollectorConfig, Target, WaitEnd, render};
    /// use autofs_controller::discovery::Source;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let sources = vec![Source::dns("autofs-agent.autofs-inspector.svc:50051", None)?];
    /// let collector = Collector::discover(sources, CollectorConfig::default()).await?;
    /// let outcome = collector
    ///     .wait_migratable_events(
    ///         "worker-3",
    ///         Target::PodUid("5f1c…".into()),
    ///         Duration::from_secs(60),
    ///         |event| print!("{}", render::wait_event("the pod", event)),
    ///     )
    ///     .await?;
    /// if outcome.end == WaitEnd::Dumpable {
    ///     // criu dump …
    /// }
    /// for m in &outcome.moves {
    ///     println!("followed worker-3's agent from {} to {}", m.from, m.to);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Collector::wait_migratable`]. When discovery runs again, a node not found by
    /// the time `wait` has passed is [`Error::UnknownNode`] (the last round's) if it was
    /// never found, and [`NodeErrorKind::DeadlineExceeded`] naming `wait` and the last
    /// round's error if it was lost during the wait; [`Error::NotInCluster`] at once when a
    /// round's discovery names every node of the cluster and none is `node`.
    pub async fn wait_migratable_events(
        &self,
        node: &str,
        workload: impl Into<Workload>,
        wait: Duration,
        on_event: impl Fn(&WaitEvent<'_>) + Send + Sync + 'static,
    ) -> Result<WaitOutcome, Error> {
        use v1::wait_migratable_request::Target as WaitTarget;
        let Workload {
            target,
            external_mounts,
        } = workload.into();
        let deadline = deadline_after(wait);
        let on_event = Arc::new(on_event);
        let by_address = self.inner.endpoints.iter().any(|e| e.address == node);
        let follow = self.rediscovers() && !by_address;
        let mut moves = Vec::new();
        let mut ep = if follow {
            let found = self
                .search_node(node, deadline, wait, None, &*on_event)
                .await
                .map_err(|e| e.into_error(node))?;
            if found.searched {
                on_event(&WaitEvent::Found {
                    node,
                    from: None,
                    to: &found.endpoint.address,
                    previous_instance: None,
                    instance: found.instance.as_deref(),
                });
            }
            found.endpoint
        } else {
            // A node that does not answer in time is said to have had the wait (or the
            // timeout, when that is shorter for finding it), never a bound it was not given.
            let find_within = wait.min(self.inner.config.timeout);
            let find_by = deadline.min(deadline_after(self.inner.config.timeout));
            self.find_node(node, find_by, find_within).await?
        };
        if !by_address && ep.expected_node.is_none() {
            // Found by its name: whoever answers at this address later must still be it.
            ep = ep.expecting(node);
        }
        let request = v1::WaitMigratableRequest {
            target: Some(match target {
                Target::Pid(pid) => WaitTarget::Pid(pid),
                Target::ContainerId(id) => WaitTarget::ContainerId(id),
                Target::PodUid(uid) => WaitTarget::PodUid(uid),
            }),
            external_mounts,
        };
        // The agent ends the wait at `deadline` with DEADLINE_EXCEEDED; the node's own bound
        // is a little later, so that ending arrives instead of a timer racing it.
        let grace = deadline.checked_add(WAIT_GRACE).unwrap_or(deadline);
        // An agent that restarts under a wait (a rolling update: "agent shutting down; wait
        // again", then refused connections for as long as its pod takes) is asked again until
        // the wait's deadline, not only --max-attempts times: the gate is still wanted. When
        // discovery can say where it went, it is asked after --max-attempts.
        let attempts = if follow {
            self.inner.config.max_attempts
        } else {
            u32::MAX
        };
        let events = on_event.clone();
        let op = move |mut c: Client, info: v1::GetNodeInfoResponse, _| {
            let (request, events) = (request.clone(), events.clone());
            async move {
                let mut stream = c
                    .wait_migratable(client::request(request, deadline))
                    .await
                    .map_err(|s| client::status_kind(&s))?
                    .into_inner();
                let mut last: Option<v1::WaitMigratableResponse> = None;
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            check_wait_message(&message, &info.node)?;
                            events(&WaitEvent::Verdict(&message));
                            last = Some(message);
                        }
                        Ok(None) => {
                            let last = last.ok_or_else(|| {
                                NodeErrorKind::Malformed(
                                    "WaitMigratable ended without a verdict".into(),
                                )
                            })?;
                            return match wait_end(&last) {
                                Some(end) => Ok((end, last)),
                                None => Err(NodeErrorKind::Malformed(
                                    "WaitMigratable ended while its last message said to wait"
                                        .into(),
                                )),
                            };
                        }
                        // The wait's deadline, whichever side noticed it first.
                        Err(status)
                            if matches!(
                                status.code(),
                                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                            ) && last.is_some()
                                && Instant::now() + Duration::from_millis(100) >= deadline =>
                        {
                            return Ok((WaitEnd::StillBlocked, last.unwrap_or_default()));
                        }
                        Err(status) => return Err(client::status_kind(&status)),
                    }
                }
            }
        };
        loop {
            let done = run_node(&self.inner, &ep, grace, wait, attempts, op.clone()).await;
            let error = match done.result {
                Ok((end, last)) => {
                    return Ok(WaitOutcome {
                        endpoint: ep,
                        end,
                        last,
                        moves,
                    });
                }
                Err(error) if follow && is_lost(&error.kind) && Instant::now() < deadline => error,
                Err(error) => return Err(error.into()),
            };
            on_event(&WaitEvent::Lost {
                node,
                error: &error,
            });
            let lost = done.info.map(|i| i.agent_instance);
            let found = self
                .search_node(
                    node,
                    deadline,
                    wait,
                    Some((&ep, lost.as_deref())),
                    &*on_event,
                )
                .await
                .map_err(|e| e.into_lost_error(&ep, node, wait))?;
            on_event(&WaitEvent::Found {
                node,
                from: Some(&ep.address),
                to: &found.endpoint.address,
                previous_instance: lost.as_deref(),
                instance: found.instance.as_deref(),
            });
            moves.push(AgentMove {
                from: ep.address.clone(),
                to: found.endpoint.address.clone(),
                previous_instance: lost,
                instance: found.instance,
            });
            ep = found.endpoint;
            if ep.expected_node.is_none() {
                ep = ep.expecting(node);
            }
        }
    }

    async fn find_node(
        &self,
        node: &str,
        deadline: Instant,
        within: Duration,
    ) -> Result<NodeEndpoint, Error> {
        let eps = &self.inner.endpoints;
        if let Some(ep) = eps
            .iter()
            .find(|e| e.expected_node.as_deref() == Some(node) || e.address == node)
        {
            return Ok(ep.clone());
        }
        let statuses = self.nodes_until(deadline, within).await;
        let mut unreachable = Vec::new();
        let mut known = 0;
        for s in statuses {
            match s.result {
                Ok(()) if s.node_name() == Some(node) => return Ok(s.endpoint),
                Ok(()) => known += 1,
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        Err(Error::UnknownNode {
            name: node.to_owned(),
            known,
            unreachable,
        })
    }

    /// Runs `op` (after a successful handshake) on every node, `concurrency` at a time.
    pub(crate) async fn fan_out<T, F, Fut>(&self, op: F) -> Vec<NodeResult<T>>
    where
        T: Send + 'static,
        F: Fn(Client, v1::GetNodeInfoResponse, Instant) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, NodeErrorKind>> + Send,
    {
        let within = self.inner.config.timeout;
        self.fan_out_until(deadline_after(within), within, op).await
    }

    /// [`Self::fan_out`] with an explicit deadline shared with the caller's other steps.
    pub(crate) async fn fan_out_until<T, F, Fut>(
        &self,
        deadline: Instant,
        within: Duration,
        op: F,
    ) -> Vec<NodeResult<T>>
    where
        T: Send + 'static,
        F: Fn(Client, v1::GetNodeInfoResponse, Instant) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T, NodeErrorKind>> + Send,
    {
        let mut set = JoinSet::new();
        let started = Instant::now();
        for (i, ep) in self.inner.endpoints.iter().enumerate() {
            let inner = self.inner.clone();
            let ep = ep.clone();
            let op = op.clone();
            set.spawn(async move {
                // Waiting for a permit counts against the deadline: a node still queued when
                // it passes is reported as never asked. A permit handed over at the deadline
                // (the node before it gave up exactly then) is no chance to ask either.
                let permit =
                    tokio::time::timeout_at(deadline, inner.limit.clone().acquire_owned()).await;
                let result = match permit {
                    Ok(_permit) if Instant::now() < deadline => {
                        let attempts = inner.config.max_attempts;
                        run_node(&inner, &ep, deadline, within, attempts, op).await
                    }
                    _ => queued_too_long(&inner, &ep, started, within),
                };
                (i, result)
            });
        }
        let mut out: Vec<Option<NodeResult<T>>> =
            (0..self.inner.endpoints.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => out[i] = Some(r),
                // A panicking task is a bug; its slot is filled below with an error.
                Err(e) => tracing::error!(error = %e, "node task failed"),
            }
        }
        out.into_iter()
            .zip(&self.inner.endpoints)
            .map(|(r, ep)| {
                r.unwrap_or_else(|| NodeResult {
                    endpoint: ep.clone(),
                    info: None,
                    result: Err(NodeError::new(
                        &ep.address,
                        ep.expected_node.as_deref(),
                        NodeErrorKind::Malformed("internal error: the node task died".into()),
                    )),
                    attempts: 0,
                    elapsed: Duration::ZERO,
                    scan: None,
                })
            })
            .collect()
    }
}

/// Connect, handshake, `op`; retried on `UNAVAILABLE` with backoff, all before `deadline`,
/// which is `within` after the operation started (the bound a node that misses it is said to
/// have had: the configured timeout, or a wait's own); at most `max_attempts` attempts.
///
/// The cause of a failure is classified once, from what happened: whatever timer noticed it
/// (the outer deadline, the connect timeout cut to it, the `grpc-timeout` the agent or tonic
/// enforces), running out of time is "no answer within D", with the last real error.
pub(crate) async fn run_node<T, F, Fut>(
    inner: &Inner,
    ep: &NodeEndpoint,
    deadline: Instant,
    within: Duration,
    max_attempts: u32,
    op: F,
) -> NodeResult<T>
where
    F: Fn(Client, v1::GetNodeInfoResponse, Instant) -> Fut,
    Fut: Future<Output = Result<T, NodeErrorKind>>,
{
    let config = &inner.config;
    let started = Instant::now();
    if let Some(why) = &ep.not_ready {
        return NodeResult {
            endpoint: ep.clone(),
            info: None,
            result: Err(NodeError::new(
                &ep.address,
                ep.expected_node.as_deref(),
                NodeErrorKind::NotReady(why.clone()),
            )),
            attempts: 0,
            elapsed: started.elapsed(),
            scan: None,
        };
    }
    let mut attempts = 0;
    let mut last: Option<NodeErrorKind> = None;
    let mut info: Option<v1::GetNodeInfoResponse> = None;
    let mut said_name: Option<String> = None;
    let mut backoff = Backoff::new(config.backoff);
    let out_of_time = || NodeErrorKind::DeadlineExceeded {
        timeout: Duration::ZERO,
        last: None,
    };
    let attempts_loop = async {
        loop {
            attempts += 1;
            let attempt = async {
                let channel = inner
                    .connector
                    .connect(ep, deadline)
                    .await
                    .map_err(|e| e.unwrap_or_else(out_of_time))?;
                let mut c = Client::new(channel);
                let i = client::node_info(&mut c, deadline)
                    .await
                    .map_err(|kind| inner.connector.explain_handshake(kind))?;
                // Name errors after the node even when its handshake is refused.
                if !i.node.trim().is_empty() && ep.expected_node.is_none() {
                    said_name = Some(i.node.clone());
                }
                client::check_node_info(&i, ep)?;
                info = Some(i.clone());
                op(c, i, deadline).await
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(kind @ NodeErrorKind::Unavailable(_)) if attempts < max_attempts => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay >= deadline {
                        return Err(kind);
                    }
                    tracing::debug!(endpoint = %ep.address, error = %kind, ?delay, "retrying");
                    last = Some(kind);
                    tokio::time::sleep(delay).await;
                }
                Err(kind) => return Err(kind),
            }
        }
    };
    let result = tokio::time::timeout_at(deadline, attempts_loop)
        .await
        .unwrap_or_else(|_| Err(out_of_time()))
        .map_err(|kind| match kind {
            NodeErrorKind::DeadlineExceeded { .. } => NodeErrorKind::DeadlineExceeded {
                timeout: within,
                last: last.as_ref().map(ToString::to_string),
            },
            kind => kind,
        });
    let name = info
        .as_ref()
        .map(|i| i.node.as_str())
        .or(ep.expected_node.as_deref())
        .or(said_name.as_deref());
    NodeResult {
        result: result.map_err(|kind| NodeError::new(&ep.address, name, kind)),
        endpoint: ep.clone(),
        info,
        attempts,
        elapsed: started.elapsed(),
        scan: None,
    }
}

/// The result of a node that never got a permit before the deadline (or got it only then).
fn queued_too_long<T>(
    inner: &Inner,
    ep: &NodeEndpoint,
    started: Instant,
    within: Duration,
) -> NodeResult<T> {
    NodeResult {
        endpoint: ep.clone(),
        info: None,
        result: Err(NodeError::new(
            &ep.address,
            ep.expected_node.as_deref(),
            NodeErrorKind::NeverAsked {
                timeout: within,
                concurrency: inner.config.concurrency,
            },
        )),
        attempts: 0,
        elapsed: started.elapsed(),
        scan: None,
    }
}

/// Bounds on what one node's list may take.
struct Limits<'a> {
    per_node: usize,
    budget: &'a ReportBudget,
}

async fn list_mounts(
    c: &mut Client,
    node: &str,
    filter: v1::ListMountsRequest,
    deadline: Instant,
    limits: Limits<'_>,
) -> Result<(Vec<v1::MountReport>, Option<ScanAge>), NodeErrorKind> {
    let mut held = 0;
    let result = async {
        let response = c
            .list_mounts(client::request(filter, deadline))
            .await
            .map_err(|s| client::status_kind(&s))?;
        let scan = ScanAge::from_metadata(response.metadata());
        let mut stream = response.into_inner();
        let mut mounts = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| client::status_kind(&s))?
        {
            if mounts.len() == limits.per_node {
                return Err(NodeErrorKind::TooManyMounts {
                    limit: limits.per_node,
                });
            }
            let size = report_size(&m);
            if !limits.budget.take(size, held) {
                held = 0; // given back by `take`
                return Err(NodeErrorKind::ReportMemory {
                    limit_bytes: limits.budget.limit,
                });
            }
            held += size;
            client::check_report(&m, node)?;
            mounts.push(m);
        }
        Ok((mounts, scan))
    }
    .await;
    if result.is_err() {
        // The node's reports are dropped with the error; the memory goes back to the others.
        limits.budget.give_back(held);
    }
    result
}

fn check_response(r: &v1::CheckMigratableResponse, node: &str) -> Result<(), NodeErrorKind> {
    if r.node != node {
        return Err(NodeErrorKind::Malformed(format!(
            "CheckMigratable answered for node `{}`",
            r.node
        )));
    }
    if r.dumpable != (r.blocking.is_empty() && r.blocking_tasks.is_empty()) {
        return Err(NodeErrorKind::Malformed(format!(
            "CheckMigratable says dumpable={} with {} blocking mounts and {} blocking tasks",
            r.dumpable,
            r.blocking.len(),
            r.blocking_tasks.len()
        )));
    }
    for m in r.blocking.iter().chain(&r.external) {
        client::check_report(m, node)?;
    }
    check_tasks(&r.blocking_tasks, "CheckMigratable")
}

/// A blocking task whose reason this build does not know (or none) says nothing a gate may
/// act on.
fn check_tasks(tasks: &[v1::TaskBlocker], method: &str) -> Result<(), NodeErrorKind> {
    for t in tasks {
        match v1::TaskReason::try_from(t.reason) {
            Ok(v1::TaskReason::Unspecified) | Err(_) => {
                return Err(NodeErrorKind::Malformed(format!(
                    "{method} names blocking task {} with reason {}, which is not a reason",
                    t.pid,
                    autofs_api::json::name::<v1::TaskReason>(t.reason)
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// A node name answered by two endpoints: the later one is an error naming the first —
/// unless both reached the same agent process (the same `agent_instance`: a dual-stack pod's
/// IPv4 and IPv6 addresses), when the later one is left out of the result: it is the same
/// node's answer again, not a second agent claiming the name. An endpoint that failed after
/// its handshake named an agent that answered at another endpoint is left out as well: that
/// node's answer is there, only one path to it failed (logged).
fn mark_duplicates<T>(nodes: &mut Vec<NodeResult<T>>) {
    let instance_of = |n: &NodeResult<T>| {
        n.info
            .as_ref()
            .map(|i| i.agent_instance.clone())
            .unwrap_or_default()
    };
    let answered: std::collections::HashSet<String> = nodes
        .iter()
        .filter(|n| n.result.is_ok())
        .map(instance_of)
        .filter(|instance| !instance.is_empty())
        .collect();
    // Node name → (first endpoint, its agent instance).
    let mut first: HashMap<String, (String, String)> = HashMap::new();
    let mut aliases = vec![false; nodes.len()];
    for (i, n) in nodes.iter_mut().enumerate() {
        if let Err(e) = &n.result {
            let instance = instance_of(n);
            if answered.contains(&instance) {
                tracing::warn!(
                    endpoint = %n.endpoint.address,
                    error = %e,
                    "an agent that answered at another endpoint failed at this one; its answer is kept"
                );
                aliases[i] = true;
            }
            continue;
        }
        let Some(name) = n.node_name().map(str::to_owned) else {
            continue;
        };
        let instance = instance_of(n);
        match first.get(&name) {
            Some((first_endpoint, first_instance))
                if !instance.is_empty() && *first_instance == instance =>
            {
                tracing::info!(
                    node = %name,
                    endpoint = %n.endpoint.address,
                    first = %first_endpoint,
                    "the same agent answered at two endpoints; keeping the first"
                );
                aliases[i] = true;
            }
            Some((first_endpoint, _)) => {
                n.result = Err(NodeError::new(
                    &n.endpoint.address,
                    Some(&name),
                    NodeErrorKind::DuplicateNode {
                        first_endpoint: first_endpoint.clone(),
                    },
                ));
            }
            None => {
                first.insert(name, (n.endpoint.address.clone(), instance));
            }
        }
    }
    let mut alias = aliases.into_iter();
    nodes.retain(|_| !alias.next().unwrap_or(false));
}

/// How long after a wait's deadline the node may still take to say that it was reached.
const WAIT_GRACE: Duration = Duration::from_secs(2);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// Nothing blocks: checkpoint now.
    Dumpable,
    /// A blocker cannot clear by itself (ORPHANED, UNSUPPORTED, ERROR).
    WillNotClear,
    /// The deadline came while INTERIM mounts still blocked.
    StillBlocked,
}

/// The result of [`Collector::wait_migratable`].
#[derive(Debug, Clone)]
pub struct WaitOutcome {
    /// The endpoint asked.
    pub endpoint: NodeEndpoint,
    /// How the wait ended.
    pub end: WaitEnd,
    /// The agent's last verdict (the blockers at the end).
    pub last: v1::WaitMigratableResponse,
    /// Every time the wait followed the node's agent to where discovery found it again
    /// (oldest first; empty when the first agent asked gave the verdict).
    pub moves: Vec<AgentMove>,
}

fn wait_end(m: &v1::WaitMigratableResponse) -> Option<WaitEnd> {
    use v1::wait_migratable_response::Outcome;
    match Outcome::try_from(m.outcome).ok()? {
        Outcome::Dumpable => Some(WaitEnd::Dumpable),
        Outcome::WillNotClear => Some(WaitEnd::WillNotClear),
        Outcome::Waiting | Outcome::Unspecified => None,
    }
}

/// A wait message must name the node, carry a known outcome, and agree with itself: the
/// outcome is DUMPABLE exactly when `dumpable` is set, which is exactly when nothing blocks (a
/// gate opens on the outcome, so an outcome that contradicts the blockers must not open it).
fn check_wait_message(m: &v1::WaitMigratableResponse, node: &str) -> Result<(), NodeErrorKind> {
    use v1::wait_migratable_response::Outcome;
    if m.node != node {
        return Err(NodeErrorKind::Malformed(format!(
            "WaitMigratable answered for node `{}`",
            m.node
        )));
    }
    let outcome = match Outcome::try_from(m.outcome) {
        Ok(Outcome::Unspecified) | Err(_) => {
            return Err(NodeErrorKind::Malformed(format!(
                "WaitMigratable message {} has unknown outcome {}, which is not a verdict",
                m.sequence, m.outcome
            )));
        }
        Ok(outcome) => outcome,
    };
    if m.dumpable != (m.blocking.is_empty() && m.blocking_tasks.is_empty()) {
        return Err(NodeErrorKind::Malformed(format!(
            "WaitMigratable says dumpable={} with {} blocking mounts and {} blocking tasks",
            m.dumpable,
            m.blocking.len(),
            m.blocking_tasks.len()
        )));
    }
    if m.dumpable != (outcome == Outcome::Dumpable) {
        return Err(NodeErrorKind::Malformed(format!(
            "WaitMigratable says outcome {} with dumpable={} and {} blocking mounts",
            autofs_api::json::name::<Outcome>(m.outcome),
            m.dumpable,
            m.blocking.len()
        )));
    }
    for r in m.blocking.iter().chain(&m.external) {
        client::check_report(r, node)?;
    }
    check_tasks(&m.blocking_tasks, "WaitMigratable")
}
