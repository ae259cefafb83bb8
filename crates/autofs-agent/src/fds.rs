//! File descriptors as a budget: the soft `RLIMIT_NOFILE` is raised to the hard limit at start
//! (systemd services and containerd ≥ 2.0 containers get a soft limit of 1024), and the limit is
//! split so that connections can never take the descriptors a scan needs. Each listener gets a
//! connection cap; what remains is kept for scans, the mount-table watcher, the pidfds of the
//! change watcher and the runtime.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but connections: the scanner (a few open at a time), the
/// runtime (epoll, eventfds, signal pipe), listeners, stdio, logs.
const RESERVED: u64 = 96;
/// Upper bound on mountinfo files the watcher polls (one per mount namespace; a scan keeps
/// as many open for it while the watcher still holds the previous scan's, so twice that is
/// set aside), and on the pidfds the change watcher holds (masters, then the processes
/// between leaders and owners).
const MAX_WATCHED: u64 = 512;
/// Default cap of concurrent gRPC connections when the descriptor limit allows more.
const DEFAULT_GRPC_CONNECTIONS: u64 = 1024;
/// Cap of the metrics and health listeners (a Prometheus and a kubelet need a few each).
const SMALL_LISTENER_CONNECTIONS: u64 = 16;

/// How the descriptor limit is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft `RLIMIT_NOFILE` in force.
    pub nofile: u64,
    /// Mount namespaces whose mountinfo the watcher may keep open (and a scan, for it).
    pub watched_namespaces: usize,
    /// Processes whose exit the change watcher may follow (one pidfd each): masters first,
    /// then the processes between leaders and their namespaces' owners.
    pub watched_processes: usize,
    /// Concurrent connections on the gRPC listener.
    pub grpc_connections: usize,
    /// Concurrent connections on the metrics listener.
    pub metrics_connections: usize,
    /// Concurrent connections on the health listener.
    pub health_connections: usize,
}

impl FdBudget {
    /// Splits `nofile` descriptors. `grpc_cap` (the `--max-connections` flag) lowers the gRPC
    /// share, never raises it past what the descriptors allow.
    pub fn split(nofile: u64, grpc_cap: Option<usize>) -> FdBudget {
        let watched = (nofile / 8).min(MAX_WATCHED);
        let for_connections = nofile.saturating_sub(RESERVED + 3 * watched).max(3);
        let small = (for_connections / 8).clamp(1, SMALL_LISTENER_CONNECTIONS);
        let grpc_room = for_connections.saturating_sub(2 * small).max(1);
        let grpc = grpc_cap
            .map_or(DEFAULT_GRPC_CONNECTIONS.min(grpc_room), |cap| {
                (cap as u64).min(grpc_room)
            })
            .max(1);
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        FdBudget {
            nofile,
            watched_namespaces: as_usize(watched),
            watched_processes: as_usize(watched),
            grpc_connections: as_usize(grpc),
            metrics_connections: as_usize(small),
            health_connections: as_usize(small),
        }
    }
}

impl FdBudget {
    /// Whether the limit is below what the split sets aside (a limit under a few hundred):
    /// scans may then fail for lack of descriptors (`EMFILE`), and their mounts show as ERROR.
    pub fn is_cramped(&self) -> bool {
        let watched = (2 * self.watched_namespaces + self.watched_processes) as u64;
        let connections =
            (self.grpc_connections + self.metrics_connections + self.health_connections) as u64;
        self.nofile < RESERVED + watched + connections
    }
}

/// Raises the soft descriptor limit to the hard one and returns the limit now in force.
///
/// # Errors
///
/// The `getrlimit` or `setrlimit` error of `RLIMIT_NOFILE`.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        tracing::debug!(from = soft, to = hard, "raised the soft RLIMIT_NOFILE");
        return Ok(hard);
    }
    Ok(soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_1024_limit_keeps_a_reserve_for_scans() {
        let b = FdBudget::split(1024, None);
        let total = b.grpc_connections + b.metrics_connections + b.health_connections;
        let watched = (2 * b.watched_namespaces + b.watched_processes) as u64;
        assert!(total as u64 + RESERVED + watched <= 1024);
        assert!(b.grpc_connections >= 500, "{b:?}");
    }

    #[test]
    fn only_a_limit_below_the_reserve_is_cramped() {
        assert!(!FdBudget::split(1024, None).is_cramped());
        assert!(!FdBudget::split(256, None).is_cramped());
        assert!(FdBudget::split(24, None).is_cramped());
    }

    #[test]
    fn a_large_limit_caps_connections_at_the_default() {
        let b = FdBudget::split(1 << 20, None);
        assert_eq!(b.grpc_connections, 1024);
        assert_eq!(b.metrics_connections, 16);
        assert_eq!(b.watched_namespaces, 512);
    }

    #[test]
    fn the_flag_cannot_exceed_the_descriptors() {
        let b = FdBudget::split(256, Some(100_000));
        assert!(
            b.grpc_connections + b.metrics_connections + b.health_connections
                <= 256 - RESERVED as usize - 2 * b.watched_namespaces - b.watched_processes
        );
        assert_eq!(FdBudget::split(1 << 20, Some(10)).grpc_connections, 10);
    }

    #[test]
    fn a_tiny_limit_still_serves_one_connection_per_listener() {
        let b = FdBudget::split(16, None);
        assert!(b.grpc_connections >= 1 && b.metrics_connections >= 1);
    }
}
