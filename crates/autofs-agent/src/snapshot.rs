//! The agent's view of the node: the latest scan as an immutable, shared snapshot, converted
//! to the wire once, published to subscribers (streams, watches, metrics, health), and
//! single-flight fresh scans for on-demand RPCs. Where scans come from is a
//! [`ScanSource`].
//!
//! Scans run on a dedicated thread, never on the runtime's blocking pool: a /proc read that
//! never returns (mountinfo behind a hung unmount) blocks that thread only, the runtime can
//! still shut down (it never waits for it), and callers wait for a scan no longer than the
//! stall bound — past it they get the last good scan, marked with its age, or UNAVAILABLE.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use autofs_api::v1;
use autofs_core::host::HostFacts;
use autofs_core::{NamespaceInfo, OpenTables, ProcRoot, Scan, View};
use tokio::sync::{Mutex, oneshot, watch};

use crate::changes::Change;
use crate::source::ScanSource;

/// One completed scan, converted once for every consumer.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per scan (0: no scan yet).
    pub generation: u64,
    /// When the scan started (monotonic, for freshness): its facts are no older than this,
    /// and a change made before it may be missing from them only if the scan started first.
    /// Ages and "newer than a request" are measured from here, never from the scan's end.
    pub taken: Instant,
    /// When the scan finished (wall clock, for metrics).
    pub taken_wall: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// The core reports.
    pub scan: Scan,
    /// The same reports as API messages, in the same order. Shared with the previous
    /// snapshot when a scan changed nothing, so streams still sending older reports to slow
    /// clients do not pin one copy per scan.
    pub reports: Arc<Vec<v1::MountReport>>,
    /// What changed since the previous snapshot (computed once, for every watcher).
    pub change: Change,
    /// The processes the mount tables kept for the mount-table watch were read through: an
    /// open table holds its namespace and mounts alive, so when one of them exits a scan
    /// follows (the change watcher), and drops the table of a namespace that has died.
    pub table_readers: Vec<i32>,
    /// What the handshake tells of the node and the agent, read on the scan thread right
    /// after the scan (so a /proc read that hangs holds up that thread, never an RPC); before
    /// the first scan, read once when the inventory was made (the agent's own capabilities and
    /// label, the kernel's `pipe_ino` support); `None` from a source without a live proc root.
    pub host: Option<HostFacts>,
}

impl Snapshot {
    /// Before the first scan: no reports, and `host` as read at start.
    fn empty(host: Option<HostFacts>) -> Self {
        Self {
            generation: 0,
            taken: Instant::now(),
            taken_wall: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            scan: Scan {
                reports: Vec::new(),
                namespaces: Vec::new(),
                view: Default::default(),
                stats: Default::default(),
                tree_paths: Vec::new(),
                gone_leaders: Vec::new(),
                unknown_processes: Vec::new(),
            },
            reports: Arc::new(Vec::new()),
            change: Change::default(),
            table_readers: Vec::new(),
            host,
        }
    }

    /// The API reports at these indices of the core reports (a core check's answer).
    pub fn api_reports(&self, indices: &[usize]) -> Vec<v1::MountReport> {
        indices
            .iter()
            .filter_map(|&i| self.reports.get(i).cloned())
            .collect()
    }

    /// The namespace with this inode.
    pub fn namespace(&self, mnt_ns: u64) -> Option<&NamespaceInfo> {
        self.scan.namespaces.iter().find(|n| n.mnt_ns == mnt_ns)
    }

    /// The view the scan judged; before the first scan a restricted one, since nothing has
    /// been judged yet: "not restricted" would be a claim about a view never looked at (and
    /// a pid not found then may be there, unseen).
    pub fn view(&self) -> Cow<'_, View> {
        if self.generation > 0 {
            return Cow::Borrowed(&self.scan.view);
        }
        let mut view = self.scan.view.clone();
        view.restricted = true;
        view.reasons
            .push("no scan has completed yet: what the agent can see of /proc is not known".into());
        Cow::Owned(view)
    }
}

/// Told of every scan outcome as it happens, in order (e.g. the mount-state metrics). Runs
/// on the task that finished the scan: it must be quick and must not block.
pub trait ScanObserver: Send {
    /// A scan succeeded; `snapshot` is about to be published.
    fn published(&mut self, snapshot: &Snapshot);
    /// A scan failed.
    fn failed(&mut self, error: &ScanError);
}

/// Why a scan produced no snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The core could not scan (e.g. the proc root is gone).
    #[error(transparent)]
    Scan(#[from] autofs_core::Error),
    /// The scan panicked; the agent keeps running and reports it as a failed scan.
    #[error("scan panicked: {0}")]
    Panicked(String),
    /// The scan thread is gone (it cannot be restarted: the agent is shutting down).
    #[error("the scan thread is gone")]
    WorkerGone,
    /// A scan has run past the stall bound and the last good scan is too old to answer from.
    #[error("the current scan has been running for {}s (a /proc read hangs?) and the last good scan is {}", running.as_secs(), last_good.map_or("missing".to_owned(), |age| format!("{}s old", age.as_secs())))]
    Stalled {
        /// How long the current scan has been running.
        running: Duration,
        /// Age of the last good scan, if there is one.
        last_good: Option<Duration>,
    },
}

/// How long scans may run, and how old an answer may be when they hang.
#[derive(Debug, Clone, Copy)]
pub struct StallPolicy {
    /// A scan running longer than this is stalled: health turns NOT_SERVING and callers stop
    /// waiting for it.
    pub stall_timeout: Duration,
    /// While a scan is stalled, callers get the last good scan if it is at most this old.
    pub max_stale_age: Duration,
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy {
            stall_timeout: Duration::from_secs(30),
            max_stale_age: Duration::from_secs(300),
        }
    }
}

/// A snapshot for an on-demand RPC, and whether it is the last good one of a stalled scan.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The snapshot to answer from.
    pub snapshot: Arc<Snapshot>,
    /// True when the current scan is stalled and this is the last good one.
    pub stale: bool,
}

impl Answer {
    /// Age of the scan behind the answer.
    pub fn age(&self) -> Duration {
        self.snapshot.taken.elapsed()
    }
}

/// What the scan thread hands back: the scan, its kept tables, and the host facts read after it.
type Scanned = (Scan, OpenTables, Option<HostFacts>);

type Job = oneshot::Sender<Result<Scanned, ScanError>>;

/// `uname -r`; empty when it cannot be read.
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Counts scan events (a scan started, ended, or its failure was counted), so that the
/// watchdog wakes for them rather than on a timer.
type Activity = Arc<watch::Sender<u64>>;

fn bump(activity: &Activity) {
    activity.send_modify(|n| *n = n.wrapping_add(1));
}

/// The thread scans run on, and when its current scan started.
struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
    running_since: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Worker {
    fn spawn(
        source: Arc<dyn ScanSource>,
        keep_tables: Arc<AtomicUsize>,
        activity: Activity,
    ) -> std::io::Result<Worker> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let release = kernel_release();
        let running_since = Arc::new(std::sync::Mutex::new(None));
        let since = running_since.clone();
        // Detached on purpose: nobody ever joins it, so a scan stuck in the kernel cannot hold
        // up shutdown. It ends when the inventory (the job sender) is dropped.
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(move || {
                for reply in rx {
                    set(&since, Some(Instant::now()));
                    bump(&activity);
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let (scan, tables) = source
                            .scan(keep_tables.load(Ordering::Relaxed))
                            .map_err(ScanError::from)?;
                        let host = source
                            .proc_root()
                            .map(|root| HostFacts::read(root, &scan, &release));
                        Ok((scan, tables, host))
                    }))
                    .unwrap_or_else(|panic| Err(ScanError::Panicked(panic_text(&panic))));
                    set(&since, None);
                    bump(&activity);
                    let _ = reply.send(result);
                }
            })?;
        Ok(Worker {
            jobs,
            running_since,
        })
    }

    async fn scan(&self) -> Result<Scanned, ScanError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(tx).map_err(|_| ScanError::WorkerGone)?;
        rx.await.map_err(|_| ScanError::WorkerGone)?
    }

    fn running_for(&self) -> Option<Duration> {
        self.running_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|since| since.elapsed())
    }
}

fn set(slot: &std::sync::Mutex<Option<Instant>>, value: Option<Instant>) {
    *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Holds the latest snapshot and runs scans, one at a time. Every scan outcome, whoever asked
/// for the scan, is told to the observers before the snapshot is published.
pub struct Inventory {
    worker: Worker,
    source: Arc<dyn ScanSource>,
    policy: StallPolicy,
    latest: watch::Sender<Arc<Snapshot>>,
    scanning: Mutex<()>,
    failures: AtomicU32,
    observers: std::sync::Mutex<Vec<Box<dyn ScanObserver>>>,
    stalled: watch::Sender<bool>,
    activity: Activity,
    /// How many mount tables each scan keeps open for the mount-table watcher.
    keep_tables: Arc<AtomicUsize>,
    /// Those of the latest scan, until the watcher takes them.
    open_tables: std::sync::Mutex<Option<OpenTables>>,
}

impl Inventory {
    /// An inventory of the scans of `source`, with no scan yet; starts the scan thread.
    ///
    /// # Errors
    ///
    /// The error of spawning the scan thread.
    pub fn new(source: impl ScanSource, policy: StallPolicy) -> std::io::Result<Self> {
        let source: Arc<dyn ScanSource> = Arc::new(source);
        let activity: Activity = Arc::new(watch::Sender::new(0));
        let keep_tables = Arc::new(AtomicUsize::new(0));
        // The facts a handshake before the first scan can already be told, read here once.
        let empty = Snapshot::empty(None);
        let host = source
            .proc_root()
            .map(|root| HostFacts::read(root, &empty.scan, &kernel_release()));
        Ok(Self {
            worker: Worker::spawn(source.clone(), keep_tables.clone(), activity.clone())?,
            source,
            policy,
            latest: watch::Sender::new(Arc::new(Snapshot { host, ..empty })),
            scanning: Mutex::new(()),
            failures: AtomicU32::new(0),
            observers: std::sync::Mutex::new(Vec::new()),
            stalled: watch::Sender::new(false),
            activity,
            keep_tables,
            open_tables: std::sync::Mutex::new(None),
        })
    }

    /// From the next scan on, keeps open the mount tables each scan read, of up to `budget`
    /// mount namespaces, for [`Self::take_open_tables`] (the mount-table watcher).
    pub fn keep_open_tables(&self, budget: usize) {
        self.keep_tables.store(budget, Ordering::Relaxed);
    }

    /// The mount tables the latest scan kept open, once: stored before its snapshot is
    /// published, and closed when the next scan starts if nobody took them (the watcher's
    /// older tables report every change since, so nothing goes unseen).
    pub fn take_open_tables(&self) -> Option<OpenTables> {
        self.open_tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Adds an observer of every later scan outcome.
    pub fn observe(&self, observer: Box<dyn ScanObserver>) {
        self.observers().push(observer);
    }

    fn observers(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn ScanObserver>>> {
        self.observers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stall policy.
    pub fn policy(&self) -> StallPolicy {
        self.policy
    }

    /// How long the scan in progress has been running, if one is.
    pub fn scan_running_for(&self) -> Option<Duration> {
        self.worker.running_for()
    }

    /// Whether the scan in progress has run past the stall bound.
    pub fn is_stalled(&self) -> bool {
        self.scan_running_for()
            .is_some_and(|running| running > self.policy.stall_timeout)
    }

    /// Records the watchdog's word on the scan in progress: stalled (`true`) or not. Waiters
    /// that follow new scans learn from [`Self::stalls`] that none is coming.
    pub fn declare_stalled(&self, stalled: bool) {
        self.stalled
            .send_if_modified(|was| std::mem::replace(was, stalled) != stalled);
    }

    /// A receiver of the watchdog's word (see [`Self::declare_stalled`]).
    pub fn stalls(&self) -> watch::Receiver<bool> {
        self.stalled.subscribe()
    }

    /// A receiver that sees each scan start, each scan end, and each update of
    /// [`Self::consecutive_failures`]: what the watchdog wakes for besides new snapshots.
    pub fn activity(&self) -> watch::Receiver<u64> {
        self.activity.subscribe()
    }

    /// Scans that failed in a row (0 after a successful one).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The latest snapshot (generation 0 before the first scan).
    pub fn latest(&self) -> Arc<Snapshot> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.latest.subscribe()
    }

    /// A snapshot no older than `max_age`: the latest if fresh enough, else a new scan.
    /// Concurrent callers share one scan. Never waits past the stall bound of the scan in
    /// progress: then the last good scan answers (`stale`), or [`ScanError::Stalled`].
    ///
    /// # Errors
    ///
    /// When a new scan was needed: [`ScanError::Scan`] when the source could not scan (the proc
    /// root cannot be listed), [`ScanError::Panicked`] when the scan panicked,
    /// [`ScanError::WorkerGone`] when the scan thread is gone, and [`ScanError::Stalled`] when the
    /// scan ran past the stall bound and the last good scan is missing or older than
    /// [`StallPolicy::max_stale_age`].
    pub async fn fresh(self: &Arc<Self>, max_age: Duration) -> Result<Answer, ScanError> {
        self.reuse_or_scan(Reuse::YoungerThan(max_age)).await
    }

    /// A snapshot of a scan that started at or after `since`: the latest if it did, else a
    /// new scan. Concurrent callers share one scan (waiters asking at the same moment, one
    /// scan for all); bounded like [`Self::fresh`].
    ///
    /// # Errors
    ///
    /// As [`Self::fresh`].
    pub async fn fresh_since(self: &Arc<Self>, since: Instant) -> Result<Answer, ScanError> {
        self.reuse_or_scan(Reuse::StartedSince(since)).await
    }

    async fn reuse_or_scan(self: &Arc<Self>, reuse: Reuse) -> Result<Answer, ScanError> {
        let latest = self.latest();
        if reuse.admits(&latest) {
            return Ok(Answer {
                snapshot: latest,
                stale: false,
            });
        }
        self.bounded(self.scan_detached(Some(reuse))).await
    }

    /// Runs a scan now and publishes it; bounded like [`Self::fresh`].
    ///
    /// # Errors
    ///
    /// As [`Self::fresh`] when it scans.
    pub async fn rescan_bounded(self: &Arc<Self>) -> Result<Answer, ScanError> {
        self.bounded(self.scan_detached(None)).await
    }

    /// Runs a scan now and publishes it, however long it takes (the background scanner).
    ///
    /// # Errors
    ///
    /// [`ScanError::Scan`] when the source could not scan, [`ScanError::Panicked`] when the scan
    /// panicked, [`ScanError::WorkerGone`] when the scan thread is gone; never
    /// [`ScanError::Stalled`] (it does not give up on a slow scan).
    pub async fn rescan(self: &Arc<Self>) -> Result<Arc<Snapshot>, ScanError> {
        self.scan_detached(None).await
    }

    async fn bounded(
        &self,
        scan: impl std::future::Future<Output = Result<Arc<Snapshot>, ScanError>>,
    ) -> Result<Answer, ScanError> {
        // Wait until the scan in progress (or the one about to start) reaches the bound.
        let running = self.scan_running_for().unwrap_or_default();
        let wait = self.policy.stall_timeout.saturating_sub(running);
        match tokio::time::timeout(wait, scan).await {
            Ok(result) => result.map(|snapshot| Answer {
                snapshot,
                stale: false,
            }),
            Err(_) => self.last_good(),
        }
    }

    /// The last good scan while the current one hangs, if it is recent enough.
    fn last_good(&self) -> Result<Answer, ScanError> {
        let latest = self.latest();
        let age = (latest.generation > 0).then(|| latest.taken.elapsed());
        match age {
            Some(age) if age <= self.policy.max_stale_age => Ok(Answer {
                snapshot: latest,
                stale: true,
            }),
            _ => Err(ScanError::Stalled {
                running: self.scan_running_for().unwrap_or_default(),
                last_good: age,
            }),
        }
    }

    /// Scans in a task of its own: a caller that gives up (deadline, disconnect) neither
    /// cancels the scan nor loses its result for the next caller, so impatient clients cannot
    /// pile up abandoned scans.
    async fn scan_detached(
        self: &Arc<Self>,
        reuse: Option<Reuse>,
    ) -> Result<Arc<Snapshot>, ScanError> {
        let this = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = this.scanning.lock().await;
            if let Some(reuse) = reuse {
                let latest = this.latest();
                if reuse.admits(&latest) {
                    return Ok(latest);
                }
            }
            let result = this.scan_now().await;
            if let Err(e) = &result {
                this.failures.fetch_add(1, Ordering::Relaxed);
                for observer in this.observers().iter_mut() {
                    observer.failed(e);
                }
            } else {
                this.failures.store(0, Ordering::Relaxed);
            }
            // The count changed after the scan thread's end of scan (and, on success, after
            // the publication): the watchdog must look again.
            bump(&this.activity);
            result
        })
        .await
        .map_err(|e| ScanError::Panicked(e.to_string()))?
    }

    async fn scan_now(&self) -> Result<Arc<Snapshot>, ScanError> {
        let started = Instant::now();
        // Tables of an earlier scan the watcher has not taken are closed before this scan
        // opens its own: the watcher's current ones report every change since, and at most
        // two scans' tables (the watcher's and this scan's) are open at a time.
        drop(self.take_open_tables());
        let (scan, tables, host) = self.worker.scan().await?;
        let table_readers = tables.tables.iter().map(|t| t.reader).collect();
        if self.keep_tables.load(Ordering::Relaxed) > 0 {
            *self
                .open_tables
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tables);
        }
        let reports: Vec<v1::MountReport> =
            scan.reports.iter().map(v1::MountReport::from).collect();
        let previous = self.latest();
        let (reports, change) = if *previous.reports == reports {
            (previous.reports.clone(), Change::default())
        } else {
            let change = Change::between(&previous.reports, &reports);
            (Arc::new(reports), change)
        };
        let snapshot = Arc::new(Snapshot {
            generation: previous.generation + 1,
            taken: started,
            taken_wall: SystemTime::now(),
            duration: started.elapsed(),
            scan,
            reports,
            change,
            table_readers,
            host,
        });
        for observer in self.observers().iter_mut() {
            observer.published(&snapshot);
        }
        self.latest.send_replace(snapshot.clone());
        Ok(snapshot)
    }

    /// The live proc root the scans read, if they read one (see [`ScanSource::proc_root`]).
    pub fn proc_root(&self) -> Option<&ProcRoot> {
        self.source.proc_root()
    }
}

/// Which published scan an on-demand request takes instead of scanning.
#[derive(Debug, Clone, Copy)]
enum Reuse {
    /// One at most this old.
    YoungerThan(Duration),
    /// One that started at or after this instant.
    StartedSince(Instant),
}

impl Reuse {
    fn admits(self, snapshot: &Snapshot) -> bool {
        snapshot.generation > 0
            && match self {
                Reuse::YoungerThan(max_age) => snapshot.taken.elapsed() <= max_age,
                Reuse::StartedSince(since) => snapshot.taken >= since,
            }
    }
}
