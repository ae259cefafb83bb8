//! The controller side of autofs-inspector: find every node agent, ask them all at once, and
//! merge their answers into one cluster report that says plainly which nodes did not answer.
//!
//! A migration controller embeds this library; the `autofs-controller` CLI is a thin layer
//! over it with the same verbs:
//!
//! | CLI | library |
//! | --- | --- |
//! | `--nodes`, `--nodes-file`, `--dns`, `--kube-*` | [`Collector::discover`] with [`discovery::Source`]s: [`discovery::discover`] → [`discovery::Discovered`], then [`Collector::from_discovery`], the sources kept (a wait runs them again to follow its node's agent across a rolling update) |
//! | `collect` | [`Collector::collect`] → [`ClusterReport`] |
//! | `check` | [`Collector::check`] → [`CheckOutcome`] |
//! | `check --wait` | [`Collector::wait_migratable_events`] → [`WaitOutcome`], each [`WaitEvent`] a line |
//! | `watch` | [`Collector::watch`] → [`WatchStream`] of [`WatchItem`]s |
//! | `nodes` | [`Collector::nodes`] → [`NodeStatus`]es |
//!
//! Every node is asked under a shared concurrency limit and within its own deadline, with
//! retries (exponential backoff, jitter) on `UNAVAILABLE` only; the version handshake
//! (`GetNodeInfo`) runs first on every connection and refuses agents of another API major.
//! A node that fails is a [`NodeError`] in the report, never a stall of the whole answer.
//!
//! ```no_run
//! use autofs_controller::{Collector, CollectorConfig, Target, discovery::{self, Source}};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let found = discovery::discover(&[Source::Dns {
//!     name: "autofs-agent.kube-system.svc.cluster.local".into(),
//!     port: 50051,
//!     server: None,
//! }])
//! .await?;
//! let collector = Collector::from_discovery(found, CollectorConfig::default())?;
//!
//! // Before checkpointing pod P on node N: would CRIU's autofs stage pass now?
//! let outcome = collector.check("node-n", Target::PodUid("5f1c…".into())).await?;
//! if !outcome.response.dumpable {
//!     for m in &outcome.response.blocking {
//!         println!("{}: {}", m.mount_point, m.message);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! DNS discovery resolves through hickory-resolver. The `kube` cargo feature adds
//! `discovery::Source::Kube`: the pods of the agent DaemonSet, listed with kube-rs through the
//! embedder's own `kube::Client` or credentials found the way `kubectl` finds them (exec
//! plugins included). Agent pods that are not running, and Nodes that have no agent pod at
//! all, become failed nodes in every report ([`NodeErrorKind::NotReady`]) rather than missing
//! ones; credentials that may not list Nodes leave the report's coverage unverified
//! ([`ClusterReport::coverage_unverified`]).

// Every fallible public function says how it fails (`# Errors`).
#![warn(clippy::missing_errors_doc)]

pub mod backoff;
pub mod client;
pub mod collector;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod follow;
pub mod render;
pub mod report;
pub mod watch;

pub use autofs_api::v1;
pub use backoff::BackoffConfig;
pub use client::TlsOptions;
pub use collector::{
    Collector, CollectorConfig, DEFAULT_MAX_MOUNTS_PER_NODE, DEFAULT_MAX_REPORT_BYTES,
    DEFAULT_REFRESH_INTERVAL, Target, WaitEnd, WaitOutcome, Workload,
};
pub use endpoint::NodeEndpoint;
pub use error::{Cause, DiscoveryError, Error, NodeError, NodeErrorKind};
pub use follow::{AgentMove, WaitEvent};
pub use report::{CheckOutcome, ClusterReport, NodeResult, NodeStatus, ScanAge};
pub use watch::{WatchItem, WatchStream};
