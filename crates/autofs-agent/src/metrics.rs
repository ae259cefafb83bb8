//! Prometheus metrics: what the node's autofs mounts are doing, how scans go, how the gRPC
//! service is used. The mount and scan metrics observe the inventory ([`ScanMetrics`]);
//! `metrics_endpoint` serves them all as text.
//!
//! The three `*_mounts_total` counters count distinct mounts *entering* a state, keyed by
//! mount namespace + mount id: a mount stuck INTERIM across many scans counts once, and again
//! only after it left the state and re-entered it.

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use autofs_core::{MountReport, MountState};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::snapshot::{ScanError, ScanObserver, Snapshot};

const SCAN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const GRPC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Installs the global recorder with explicit histogram buckets and describes every metric.
///
/// # Errors
///
/// The exporter's `BuildError` when a global recorder is already installed (a second call).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("autofs_scan_duration_seconds".into()),
            SCAN_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("autofs_grpc_request_duration_seconds".into()),
            GRPC_BUCKETS,
        )?
        .install_recorder()?;
    describe_counter!(
        "autofs_catatonic_mounts_total",
        "Distinct autofs mounts seen entering the CATATONIC state (fd=-1: the kernel gave up on the daemon)."
    );
    describe_counter!(
        "autofs_interim_mounts_total",
        "Distinct autofs mounts seen entering the INTERIM state (requests queued in the pipe; CRIU refuses to dump)."
    );
    describe_counter!(
        "autofs_orphaned_mounts_total",
        "Distinct autofs mounts seen entering the ORPHANED state (no master holds the read end; CRIU refuses to dump)."
    );
    describe_gauge!(
        "autofs_mounts",
        "Autofs mounts by state in the latest scan."
    );
    describe_gauge!(
        "autofs_interim_oldest_age_seconds",
        "Age of the longest continuously INTERIM mount, 0 when none is INTERIM."
    );
    describe_histogram!(
        "autofs_scan_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of one full scan of /proc."
    );
    describe_counter!(
        "autofs_scan_errors_total",
        "Scans that failed as a whole (e.g. unreadable proc root)."
    );
    describe_gauge!(
        "autofs_last_scan_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "Unix time of the last successful scan."
    );
    describe_counter!(
        "autofs_grpc_requests_total",
        "gRPC requests of the autofs.v1 API handled, by service, method and status code (health checks and reflection are not counted)."
    );
    describe_histogram!(
        "autofs_grpc_request_duration_seconds",
        metrics::Unit::Seconds,
        "gRPC request latency (for streams: until the stream ended), by service and method."
    );
    describe_gauge!(
        "autofs_connections",
        "Connections open, by listener (grpc, metrics, health), admitted or being admitted."
    );
    describe_counter!(
        "autofs_connections_refused_total",
        "Connections closed before they were served, by listener and reason (handshake_timeout, client_certificate, tls, not_http2, io)."
    );
    describe_counter!(
        "autofs_accept_errors_total",
        "Failed accept() calls by listener (e.g. EMFILE); the listener backs off after each."
    );
    describe_gauge!(
        "autofs_scan_stalled",
        "1 while the running scan has taken longer than --scan-stall-timeout (health is NOT_SERVING then), else 0."
    );
    describe_counter!(
        "autofs_scan_stalls_total",
        "Scans that ran longer than --scan-stall-timeout."
    );
    describe_gauge!(
        "autofs_view_restricted",
        "1 when the agent's view of /proc is restricted (hidepid, missing CAP_SYS_PTRACE, pid 1 hidden): processes may be invisible, verdicts that would rest on an absence are ERROR and mount namespaces may be missing."
    );
    describe_gauge!(
        "autofs_unreadable_processes",
        "Processes some fact of which the last scan could not read (permission denied)."
    );
    describe_gauge!(
        "autofs_build_info",
        "Build information; the value is always 1."
    );
    gauge!("autofs_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    counter!("autofs_scan_errors_total").absolute(0);
    counter!("autofs_scan_stalls_total").absolute(0);
    gauge!("autofs_scan_stalled").set(0.0);
    for name in [
        "autofs_catatonic_mounts_total",
        "autofs_interim_mounts_total",
        "autofs_orphaned_mounts_total",
    ] {
        counter!(name).absolute(0);
    }
    Ok(handle)
}

/// A mount across scans: namespace, mount id, device and mount point, the rule WatchMounts
/// follows ([`crate::changes::same_mount`]): a new mount may get a freed id, and a freed
/// device minor with it.
type MountKey = (u64, u32, u32, u32, Vec<u8>);

/// The metrics of every scan outcome. Subscribed to the inventory with
/// [`crate::snapshot::Inventory::observe`].
#[derive(Debug, Default)]
pub struct ScanMetrics {
    memory: MountMemory,
}

impl ScanObserver for ScanMetrics {
    fn published(&mut self, snapshot: &Snapshot) {
        self.observe(snapshot);
    }

    fn failed(&mut self, _error: &ScanError) {
        counter!("autofs_scan_errors_total").increment(1);
    }
}

impl ScanMetrics {
    /// Records one successful scan.
    fn observe(&mut self, snapshot: &Snapshot) {
        let seen = self.memory.update(&snapshot.scan.reports, snapshot.taken);
        for state in seen.entered {
            match state {
                MountState::Catatonic => counter!("autofs_catatonic_mounts_total").increment(1),
                MountState::Interim => counter!("autofs_interim_mounts_total").increment(1),
                MountState::Orphaned => counter!("autofs_orphaned_mounts_total").increment(1),
                _ => {}
            }
        }
        for state in MountState::ALL {
            let n = seen.by_state.get(&state).copied().unwrap_or(0);
            gauge!("autofs_mounts", "state" => state.as_str()).set(n as f64);
        }
        gauge!("autofs_interim_oldest_age_seconds").set(seen.oldest_interim.as_secs_f64());
        histogram!("autofs_scan_duration_seconds").record(snapshot.duration.as_secs_f64());
        let wall = snapshot
            .taken_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge!("autofs_last_scan_success_timestamp_seconds").set(wall.as_secs_f64());
        gauge!("autofs_view_restricted").set(if snapshot.scan.view.restricted {
            1.0
        } else {
            0.0
        });
        gauge!("autofs_unreadable_processes").set(snapshot.scan.stats.unreadable as f64);
    }
}

/// Each mount's state in the previous scan, and since when each INTERIM mount has been
/// INTERIM.
#[derive(Debug, Default)]
struct MountMemory {
    previous: HashMap<MountKey, MountState>,
    interim_since: HashMap<MountKey, Instant>,
}

/// What one scan showed against the one before.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// The state of each mount that entered it with this scan (a new mount included), in
    /// report order.
    entered: Vec<MountState>,
    /// Mounts per state.
    by_state: HashMap<MountState, u64>,
    /// How long the mount INTERIM the longest has been so, at `taken` (zero when none is).
    oldest_interim: Duration,
}

impl MountMemory {
    /// Remembers the scan of `reports` started at `taken` and says what it showed.
    fn update(&mut self, reports: &[MountReport], taken: Instant) -> Seen {
        let mut seen = Seen::default();
        let mut current = HashMap::with_capacity(reports.len());
        for r in reports {
            let key = (
                r.mnt_ns,
                r.mount_id,
                r.major,
                r.minor,
                r.mount_point_bytes.clone(),
            );
            *seen.by_state.entry(r.state).or_default() += 1;
            if self.previous.get(&key) != Some(&r.state) {
                seen.entered.push(r.state);
            }
            current.insert(key, r.state);
        }
        self.interim_since
            .retain(|key, _| current.get(key) == Some(&MountState::Interim));
        for (key, state) in &current {
            if *state == MountState::Interim {
                self.interim_since.entry(key.clone()).or_insert(taken);
            }
        }
        self.previous = current;
        seen.oldest_interim = self
            .interim_since
            .values()
            .map(|since| taken.saturating_duration_since(*since))
            .max()
            .unwrap_or(Duration::ZERO);
        seen
    }
}

/// A scan has run past the stall bound (`true`), or the stalled scan ended (`false`).
pub fn scan_stalled(stalled: bool) {
    if stalled {
        counter!("autofs_scan_stalls_total").increment(1);
    }
    gauge!("autofs_scan_stalled").set(if stalled { 1.0 } else { 0.0 });
}

/// A connection took a slot of `listener`.
pub fn connection_opened(listener: &'static str) {
    gauge!("autofs_connections", "listener" => listener).increment(1.0);
}

/// A connection freed its slot of `listener`.
pub fn connection_closed(listener: &'static str) {
    gauge!("autofs_connections", "listener" => listener).decrement(1.0);
}

/// A connection was closed before it was served.
pub fn connection_refused(listener: &'static str, reason: &'static str) {
    counter!("autofs_connections_refused_total", "listener" => listener, "reason" => reason)
        .increment(1);
}

/// `listener` started: its failure counters are exported at 0 for every reason it can have,
/// so that `rate()` and alerts see a series before the first failure.
pub fn listener_started(listener: &'static str, reasons: &[&'static str]) {
    counter!("autofs_accept_errors_total", "listener" => listener).absolute(0);
    for &reason in reasons {
        counter!("autofs_connections_refused_total", "listener" => listener, "reason" => reason)
            .absolute(0);
    }
}

/// accept() failed.
pub fn accept_error(listener: &'static str) {
    counter!("autofs_accept_errors_total", "listener" => listener).increment(1);
}

/// Records one finished gRPC call.
pub fn grpc_call(method: &'static str, code: tonic::Code, started: Instant) {
    let service = "autofs.v1.AutofsInspector";
    counter!("autofs_grpc_requests_total", "service" => service, "method" => method, "code" => code_name(code))
        .increment(1);
    histogram!("autofs_grpc_request_duration_seconds", "service" => service, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interim(mount_point: &str) -> MountReport {
        let mut report = crate::synthetic::scan(1, "node").reports.remove(0);
        report.state = MountState::Interim;
        report.mount_point = mount_point.to_owned();
        report.mount_point_bytes = mount_point.as_bytes().to_vec();
        report
    }

    #[test]
    fn a_mount_staying_interim_enters_once_and_ages() {
        let mut memory = MountMemory::default();
        let t0 = Instant::now();
        let first = memory.update(&[interim("/a")], t0);
        assert_eq!(first.entered, [MountState::Interim]);
        assert_eq!(first.by_state.get(&MountState::Interim), Some(&1));
        let later = memory.update(&[interim("/a")], t0 + Duration::from_secs(5));
        assert!(later.entered.is_empty());
        assert_eq!(later.oldest_interim, Duration::from_secs(5));
    }

    #[test]
    fn a_new_mount_under_a_freed_id_and_minor_is_another_mount() {
        // The kernel gives a new mount the lowest free mount id and device minor: unmounted
        // at /a and mounted at /b between two scans, the mount is new, as WatchMounts says.
        let mut memory = MountMemory::default();
        let t0 = Instant::now();
        memory.update(&[interim("/a")], t0);
        let moved = memory.update(&[interim("/b")], t0 + Duration::from_secs(5));
        assert_eq!(moved.entered, [MountState::Interim]);
        assert_eq!(moved.oldest_interim, Duration::ZERO);
    }
}
