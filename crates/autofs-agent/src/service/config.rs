//! The service's settings.

use std::time::Duration;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Node name in responses.
    pub node_name: String,
    /// On-demand RPCs reuse a scan younger than this, else they scan.
    pub max_scan_age: Duration,
    /// Background scan interval (reported by GetNodeInfo).
    pub scan_interval: Duration,
    /// The FIONREAD pass over the known read ends: a queue draining is seen within this long
    /// (with `max_scan_age`, the retry hint for a workload only INTERIM mounts block).
    pub queue_poll_interval: Duration,
    /// Concurrent ListMounts streams across all clients.
    pub max_streams: usize,
    /// Concurrent WatchMounts streams across all clients (and as many WaitMigratable).
    pub max_watches: usize,
    /// Concurrent streams of each kind per client (certificate identity, else IP address).
    pub max_streams_per_client: usize,
}
