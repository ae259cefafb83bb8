//! The agent's view of the node: the latest scan as an immutable, shared snapshot, where
//! scans come from (the real /proc, or a synthetic set for benchmarks), and single-flight
//! fresh scans for on-demand RPCs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use autofs_api::v1;
use autofs_core::{NamespaceInfo, Scan, Scanner};
use tokio::sync::{Mutex, watch};

use crate::convert;
use crate::metrics::MountStateMetrics;

/// One completed scan, converted once for every consumer.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per scan (0: no scan yet).
    pub generation: u64,
    /// When the scan finished (monotonic, for freshness).
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
}

impl Snapshot {
    fn empty() -> Self {
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
            },
            reports: Arc::new(Vec::new()),
        }
    }

    /// The namespace with this inode.
    pub fn namespace(&self, mnt_ns: u64) -> Option<&NamespaceInfo> {
        self.scan.namespaces.iter().find(|n| n.mnt_ns == mnt_ns)
    }
}

/// Where scans come from.
pub enum Source {
    /// The real proc root.
    Proc(Scanner),
    /// A fixed, generated report set (benchmarks only: `--synthetic-mounts`).
    Synthetic(Arc<Scan>),
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
}

/// Holds the latest snapshot and runs scans, one at a time. Every published scan also feeds
/// the mount-state metrics, whoever asked for it.
pub struct Inventory {
    source: Arc<Source>,
    latest: watch::Sender<Arc<Snapshot>>,
    scanning: Mutex<()>,
    state_metrics: std::sync::Mutex<MountStateMetrics>,
}

impl Inventory {
    /// An inventory with no scan yet.
    pub fn new(source: Source) -> Self {
        Self {
            source: Arc::new(source),
            latest: watch::Sender::new(Arc::new(Snapshot::empty())),
            scanning: Mutex::new(()),
            state_metrics: std::sync::Mutex::new(MountStateMetrics::default()),
        }
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
    /// Concurrent callers share one scan.
    pub async fn fresh(self: &Arc<Self>, max_age: Duration) -> Result<Arc<Snapshot>, ScanError> {
        let latest = self.latest();
        if is_fresh(&latest, max_age) {
            return Ok(latest);
        }
        self.scan_detached(Some(max_age)).await
    }

    /// Runs a scan now (on the blocking pool) and publishes it.
    pub async fn rescan(self: &Arc<Self>) -> Result<Arc<Snapshot>, ScanError> {
        self.scan_detached(None).await
    }

    /// Scans in a task of its own: a caller that gives up (deadline, disconnect) neither
    /// cancels the scan nor loses its result for the next caller, so impatient clients cannot
    /// pile up abandoned scans.
    async fn scan_detached(
        self: &Arc<Self>,
        reuse_younger_than: Option<Duration>,
    ) -> Result<Arc<Snapshot>, ScanError> {
        let this = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = this.scanning.lock().await;
            if let Some(max_age) = reuse_younger_than {
                let latest = this.latest();
                if is_fresh(&latest, max_age) {
                    return Ok(latest);
                }
            }
            let result = this.scan_now().await;
            if result.is_err() {
                crate::metrics::scan_failed();
            }
            result
        })
        .await
        .map_err(|e| ScanError::Panicked(e.to_string()))?
    }

    async fn scan_now(&self) -> Result<Arc<Snapshot>, ScanError> {
        let source = self.source.clone();
        let started = Instant::now();
        let scan = tokio::task::spawn_blocking(move || match &*source {
            Source::Proc(scanner) => scanner.scan(),
            Source::Synthetic(scan) => Ok(Scan::clone(scan)),
        })
        .await
        .map_err(|e| ScanError::Panicked(e.to_string()))??;
        let reports: Vec<v1::MountReport> = scan.reports.iter().map(convert::report).collect();
        let previous = self.latest();
        let reports = if *previous.reports == reports {
            previous.reports.clone()
        } else {
            Arc::new(reports)
        };
        let snapshot = Arc::new(Snapshot {
            generation: previous.generation + 1,
            taken: Instant::now(),
            taken_wall: SystemTime::now(),
            duration: started.elapsed(),
            scan,
            reports,
        });
        self.state_metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(&snapshot);
        self.latest.send_replace(snapshot.clone());
        Ok(snapshot)
    }

    /// The proc root scans read, when scanning the real one.
    pub fn proc_root(&self) -> Option<&autofs_core::ProcRoot> {
        match &*self.source {
            Source::Proc(scanner) => Some(scanner.proc_root()),
            Source::Synthetic(_) => None,
        }
    }
}

fn is_fresh(snapshot: &Snapshot, max_age: Duration) -> bool {
    snapshot.generation > 0 && snapshot.taken.elapsed() <= max_age
}
