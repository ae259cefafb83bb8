//! Waiting for a deadline that may not be set: a stream without a client deadline, a
//! watchdog with no scan running.

use std::time::Instant;

/// Resolves at `deadline`; never without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
