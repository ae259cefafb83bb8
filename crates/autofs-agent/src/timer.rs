//! Waiting for a deadline that may not be set: a stream without a client deadline, a
//! watchdog with no scan running.

use std::time::{Duration, Instant};

/// Resolves at `deadline`; never without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// `d` from now, or `None` (never) when that is beyond what an instant can hold: a duration
/// flag given as "as long as possible" (`--scan-interval 18446744073709551615`).
pub(crate) fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Runs `fut` until `deadline`: `None` when the deadline passed first; with no deadline, for
/// as long as it takes.
pub(crate) async fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), fut).await.ok(),
        None => Some(fut.await),
    }
}
