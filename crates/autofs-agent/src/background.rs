//! The background scanner: a scan every `--scan-interval`, at once when something says a
//! verdict may have changed (`mount_watch`, `change_watch`), and soon after a failed one,
//! feeding metrics, health and watchers; and the watchdog that keeps health in line with
//! scanning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::snapshot::Inventory;

/// How long a burst of changes may settle before the scan they ask for.
const SETTLE: Duration = Duration::from_millis(50);

/// Scans asked for by changes take at most this share of the time: after a scan that took
/// `d`, the next such scan waits until `d * (1 / share - 1)` after it ended. An isolated
/// change is scanned after [`SETTLE`]; only changes that never stop (a process mounting and
/// unmounting in a loop, which any user may do in a namespace of their own) are slowed down,
/// to about a tenth of one core however large the node.
const CHANGE_SCAN_SHARE: u32 = 10; // percent

/// Consecutive failed scans after which health turns NOT_SERVING again.
const FAILURES_BEFORE_NOT_SERVING: u32 = 3;

/// Delay before the first retry of a failed scan; it doubles with each failure in a row, up
/// to [`MAX_RETRY`] (or the scan interval, if shorter).
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Longest delay between retries of failed scans: the end of a failure is seen within this
/// long (a failed scan costs one listing of the proc root; the bound keeps its warnings to a
/// few a minute).
const MAX_RETRY: Duration = Duration::from_secs(8);

/// Health service names the agent reports on.
pub const HEALTH_SERVICES: [&str; 2] = ["", "autofs.v1.AutofsInspector"];

/// Scans forever (until `shutdown`): every `interval`, when `changed` is notified, and after
/// a failed scan (this loop's or an on-demand one) again after [`retry_delay`], so that a
/// failure that lasts turns health NOT_SERVING within seconds and its end is seen within 8 s,
/// whatever the interval. While scans fail, changes wait for the next retry. A scan that
/// hangs holds up only this loop; [`supervise`] notices it.
pub async fn run(
    inventory: Arc<Inventory>,
    interval: Duration,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut denied_before = false;
    let mut activity = inventory.activity();
    loop {
        let started = Instant::now();
        let scanned = tokio::select! {
            scanned = inventory.rescan() => scanned,
            () = stop(&mut shutdown) => return,
        };
        let next_for_changes = Instant::now() + change_gap(started.elapsed());
        match scanned {
            Ok(snapshot) => {
                // Once per episode: access denied although the capabilities should allow it.
                let cause = crate::node_info::access_denied_cause(&inventory);
                if let (Some(cause), false) = (&cause, denied_before) {
                    tracing::warn!(cause = %cause, "scan denied access to processes");
                }
                denied_before = cause.is_some();
                tracing::debug!(
                    generation = snapshot.generation,
                    mounts = snapshot.reports.len(),
                    took_ms = snapshot.duration.as_millis() as u64,
                    "scan"
                );
            }
            Err(e) => tracing::warn!(
                error = %e,
                failures = inventory.consecutive_failures(),
                retry_in_ms = retry_delay(interval, inventory.consecutive_failures()).as_millis() as u64,
                "scan failed"
            ),
        }
        // This scan's own activity is accounted for; later activity is on-demand scans'.
        activity.borrow_and_update();
        let mut due = crate::timer::after(retry_delay(interval, inventory.consecutive_failures()));
        loop {
            tokio::select! {
                () = crate::timer::sleep_until(due) => break,
                () = changed.notified() => {
                    // While scans fail, a change waits for the next retry: it would fail
                    // too, and three quick failures would flap health.
                    if inventory.consecutive_failures() > 0 {
                        continue;
                    }
                    // Let a burst of mount changes settle into one scan, and keep the scans
                    // that changes ask for to their share of the time.
                    let at = (Instant::now() + SETTLE).max(next_for_changes);
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = stop(&mut shutdown) => return,
                    }
                    break;
                }
                seen = activity.changed() => {
                    if seen.is_err() {
                        return;
                    }
                    // An on-demand scan failed: retry as after a failure of this loop's own.
                    let retry = crate::timer::after(retry_delay(interval, inventory.consecutive_failures()));
                    due = match (due, retry) {
                        (Some(due), Some(retry)) => Some(due.min(retry)),
                        (due, retry) => due.or(retry),
                    };
                }
                () = stop(&mut shutdown) => return,
            }
        }
    }
}

/// How long after a scan that took `took` the next scan asked for by a change may start:
/// [`CHANGE_SCAN_SHARE`] of the time at most.
fn change_gap(took: Duration) -> Duration {
    took.saturating_mul(100 / CHANGE_SCAN_SHARE - 1)
}

/// How long the background scanner waits after a scan that left `failures` failed scans in a
/// row: `interval` after a success; after a failure `FIRST_RETRY` (1 s), doubling with each
/// further failure up to `MAX_RETRY` (8 s), never more than `interval`. Three failures in a
/// row (NOT_SERVING) take about 3 s from the first; a failure's end is seen within 8 s.
pub fn retry_delay(interval: Duration, failures: u32) -> Duration {
    match failures {
        0 => interval,
        n => FIRST_RETRY
            .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
            .min(MAX_RETRY)
            .min(interval),
    }
}

async fn stop(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The scan watchdog and health: both services are SERVING only after a first good scan, while
/// scans do not fail in a row, and while no scan has run past the stall bound
/// (`autofs_scan_stalled` says when one has). A restricted view of /proc cannot answer for
/// absent processes: then the inspector service is NOT_SERVING while `""` (liveness) keeps
/// saying that scans run. Runs until `shutdown`.
///
/// Wakes only for events: a scan starting, ending or failing ([`Inventory::activity`]), a
/// snapshot published, and the stall bound of the scan in progress. An idle agent's watchdog
/// sleeps until the next scan.
pub async fn supervise(
    inventory: Arc<Inventory>,
    health: HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serving: Option<(bool, bool)> = None;
    let mut stalled = false;
    let mut restricted = false;
    let mut ever_served = false;
    let mut published = inventory.subscribe();
    let mut activity = inventory.activity();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            // Just after the scan in progress would pass its stall bound; a stalled scan's
            // end, like any scan's, is an activity event.
            let stall_in = match inventory.scan_running_for() {
                Some(running) if !stalled => Some(
                    (inventory
                        .policy()
                        .stall_timeout
                        .saturating_add(Duration::from_millis(1)))
                    .saturating_sub(running),
                ),
                _ => None,
            };
            tokio::select! {
                biased;
                () = stop(&mut shutdown) => return,
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                changed = activity.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = crate::timer::sleep_until(stall_in.and_then(crate::timer::after)) => {}
            }
        }
        let now_stalled = inventory.is_stalled();
        if now_stalled != stalled {
            stalled = now_stalled;
            inventory.declare_stalled(stalled);
            crate::metrics::scan_stalled(stalled);
            if stalled {
                tracing::warn!(
                    running_s = inventory.scan_running_for().unwrap_or_default().as_secs(),
                    bound = ?inventory.policy().stall_timeout,
                    "a scan has stalled (a /proc read does not return): NOT_SERVING; answers come from the last good scan"
                );
            } else {
                tracing::info!("the stalled scan ended");
            }
        }
        let latest = inventory.latest();
        let view = &latest.scan.view;
        if latest.generation > 0 && view.restricted != restricted {
            restricted = view.restricted;
            if restricted {
                tracing::warn!(problems = ?view.reasons, "the view of /proc is restricted; verdicts that rest on an absence are ERROR");
            }
        }
        let scans_run = latest.generation > 0
            && inventory.consecutive_failures() < FAILURES_BEFORE_NOT_SERVING
            && !stalled;
        let wanted = (scans_run, scans_run && !restricted);
        if serving != Some(wanted) {
            serving = Some(wanted);
            let status = |ok: bool| {
                if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                }
            };
            health
                .set_service_status(HEALTH_SERVICES[0], status(wanted.0))
                .await;
            health
                .set_service_status(HEALTH_SERVICES[1], status(wanted.1))
                .await;
            if scans_run && !ever_served {
                ever_served = true;
                tracing::info!(mounts = latest.reports.len(), "first scan done; serving");
            }
        }
    }
}

/// Sets every health service name to `status`.
pub async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_asked_for_by_changes_take_a_tenth_of_the_time_at_most() {
        assert_eq!(
            change_gap(Duration::from_millis(20)),
            Duration::from_millis(180)
        );
        assert_eq!(change_gap(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn failed_scans_are_retried_after_doubling_delays_up_to_8_s_or_the_interval() {
        let interval = Duration::from_secs(30);
        let delays: Vec<u64> = (0..8)
            .map(|failures| retry_delay(interval, failures).as_secs())
            .collect();
        assert_eq!(delays, [30, 1, 2, 4, 8, 8, 8, 8]);
        // No overflow however long the failures last; never longer than the interval.
        assert_eq!(retry_delay(interval, u32::MAX), MAX_RETRY);
        assert_eq!(retry_delay(interval, 40), MAX_RETRY);
        // An interval shorter than a retry delay bounds it too.
        let short = Duration::from_millis(200);
        assert_eq!(retry_delay(short, 1), short);
        assert_eq!(
            retry_delay(Duration::from_secs(5), 5),
            Duration::from_secs(5)
        );
    }
}
