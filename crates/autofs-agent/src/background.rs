//! The background scanner: a scan every `--scan-interval`, and at once when a mount table
//! changes (mountinfo polled for POLLPRI), feeding metrics, health and watchers.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::{Notify, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::snapshot::Inventory;

/// Consecutive failed scans after which health turns NOT_SERVING again.
const FAILURES_BEFORE_NOT_SERVING: u32 = 3;
/// At most this many mountinfo files are polled (one per mount namespace).
const MAX_WATCHED_NAMESPACES: usize = 512;

/// Health service names the agent reports on.
pub const HEALTH_SERVICES: [&str; 2] = ["", "autofs.v1.AutofsInspector"];

/// Scans forever (until `shutdown`), every `interval` or when `changed` is notified.
pub async fn run(
    inventory: Arc<Inventory>,
    interval: Duration,
    health: HealthReporter,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut serving = false;
    let mut restricted = false;
    let mut denied_before = false;
    loop {
        match inventory.rescan().await {
            Ok(snapshot) => {
                failures = 0;
                let started = !serving;
                // Once per episode: access denied although the capabilities should allow it.
                let cause = crate::node_info::access_denied_cause(&inventory);
                if let (Some(cause), false) = (&cause, denied_before) {
                    tracing::warn!(cause = %cause, "scan denied access to processes");
                }
                denied_before = cause.is_some();
                if !serving {
                    set_health(&health, ServingStatus::Serving).await;
                    serving = true;
                    tracing::info!(mounts = snapshot.reports.len(), "first scan done; serving");
                }
                // A restricted view cannot answer for absent processes: the inspector
                // service says so, while "" (liveness) keeps reporting that scans run.
                let view = &snapshot.scan.view;
                if started || view.restricted != restricted {
                    restricted = view.restricted;
                    let status = if restricted {
                        tracing::warn!(problems = ?view.reasons, "the view of /proc is restricted; verdicts that rest on an absence are ERROR");
                        ServingStatus::NotServing
                    } else {
                        ServingStatus::Serving
                    };
                    health.set_service_status(HEALTH_SERVICES[1], status).await;
                }
                tracing::debug!(
                    generation = snapshot.generation,
                    mounts = snapshot.reports.len(),
                    took_ms = snapshot.duration.as_millis() as u64,
                    "scan"
                );
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "scan failed");
                if serving && failures >= FAILURES_BEFORE_NOT_SERVING {
                    set_health(&health, ServingStatus::NotServing).await;
                    serving = false;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = changed.notified() => {
                // Let a burst of mount changes settle into one scan.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}

/// Sets every health service name to `status`.
pub async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Watches the mount tables of every known mount namespace on a dedicated thread and
/// notifies `changed` when one changes. Returns when `shutdown` turns true.
pub fn watch_mount_tables(
    inventory: Arc<Inventory>,
    proc_root: PathBuf,
    changed: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let mut watched_generation = u64::MAX;
    let mut files: Vec<std::fs::File> = Vec::new();
    while !*shutdown.borrow() {
        let snapshot = inventory.latest();
        if snapshot.generation != watched_generation {
            watched_generation = snapshot.generation;
            // One member of each namespace; the set is refreshed after every scan.
            files = snapshot
                .scan
                .namespaces
                .iter()
                .take(MAX_WATCHED_NAMESPACES)
                .filter_map(|ns| {
                    std::fs::File::open(proc_root.join(ns.pids[0].to_string()).join("mountinfo"))
                        .ok()
                })
                .collect();
        }
        if files.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let mut fds: Vec<PollFd<'_>> = files
            .iter()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLPRI))
            .collect();
        match poll(&mut fds, PollTimeout::from(500u16)) {
            Ok(n) if n > 0 => {
                let fired = fds.iter().any(|fd| {
                    fd.revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR))
                });
                if fired {
                    changed.notify_one();
                    // Wait for the rescan so the same change is not seen twice.
                    let until = std::time::Instant::now() + Duration::from_secs(2);
                    while inventory.latest().generation == watched_generation
                        && std::time::Instant::now() < until
                        && !*shutdown.borrow()
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "poll on mountinfo failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
