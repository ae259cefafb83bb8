//! The agent's view of the node: the latest scan as an immutable, shared snapshot, where
//! scans come from (the real /proc, or a synthetic set for benchmarks), and single-flight
//! fresh scans for on-demand RPCs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use autofs_api::v1;
use autofs_core::{NamespaceInfo, Scan, Scanner};
use tokio::sync::{Mutex, watch};

use crate::convert;

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

/// Holds the latest snapshot and runs scans, one at a time.
pub struct Inventory {
    source: Arc<Source>,
    latest: watch::Sender<Arc<Snapshot>>,
    scanning: Mutex<()>,
}

impl Inventory {
    /// An inventory with no scan yet.
    pub fn new(source: Source) -> Self {
        Self {
            source: Arc::new(source),
            latest: watch::Sender::new(Arc::new(Snapshot::empty())),
            scanning: Mutex::new(()),
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
    pub async fn fresh(&self, max_age: Duration) -> Result<Arc<Snapshot>, autofs_core::Error> {
        let latest = self.latest();
        if latest.generation > 0 && latest.taken.elapsed() <= max_age {
            return Ok(latest);
        }
        let _one_at_a_time = self.scanning.lock().await;
        let latest = self.latest();
        if latest.generation > 0 && latest.taken.elapsed() <= max_age {
            return Ok(latest);
        }
        self.scan_now().await
    }

    /// Runs a scan now (on the blocking pool) and publishes it.
    pub async fn rescan(&self) -> Result<Arc<Snapshot>, autofs_core::Error> {
        let _one_at_a_time = self.scanning.lock().await;
        self.scan_now().await
    }

    async fn scan_now(&self) -> Result<Arc<Snapshot>, autofs_core::Error> {
        let source = self.source.clone();
        let started = Instant::now();
        let scan = tokio::task::spawn_blocking(move || match &*source {
            Source::Proc(scanner) => scanner.scan(),
            Source::Synthetic(scan) => Ok(Scan::clone(scan)),
        })
        .await
        .expect("scan task panicked")?;
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
