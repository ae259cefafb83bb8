//! The autofs-inspector node agent as a library: the gRPC service over a background-refreshed
//! inventory of the node's autofs mounts, its metrics, and the one-shot `scan` command.
//! `main.rs` only parses flags and calls in here.

pub mod background;
pub mod change_watch;
pub mod changes;
pub mod fds;
pub mod listener;
pub mod metrics;
pub mod metrics_endpoint;
pub mod mount_watch;
pub mod node_info;
pub mod scan_cmd;
pub mod serve;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod synthetic;
pub mod table;
mod timer;
pub mod tls;
