//! autofs-core inspects every autofs mount in every mount namespace of a Linux node exactly as
//! CRIU's autofs dump stage would — same checks, same messages, the same `autofs_entry`,
//! byte-compatible image files — and reports what CRIU cannot see: who holds the pipe, how
//! many requests are queued, which container owns the mount.
//!
//! It never opens or stats a mount point and never reads from an autofs pipe: everything comes
//! from `/proc` (through a configurable [`ProcRoot`]), and queued bytes are counted with
//! `FIONREAD`.
//!
//! ```no_run
//! let scan = autofs_core::Scanner::new("/proc", "node-1")?.scan()?;
//! for mount in &scan.reports {
//!     println!("{} {} {}", mount.mount_point, mount.state, mount.message);
//! }
//! # Ok::<(), autofs_core::Error>(())
//! ```

// Every fallible public function says how it fails (`# Errors`).
#![warn(clippy::missing_errors_doc)]

pub mod attribution;
pub mod changes;
pub mod criu_image;
pub mod dumped_from;
pub mod error;
pub mod escape;
pub mod external;
pub mod fd_table;
pub mod holders;
pub mod host;
pub mod id_map;
pub mod mount_namespaces;
pub mod mount_watch;
pub mod mountinfo;
pub mod ns_order;
pub mod options;
pub mod pipes;
pub mod proc_root;
pub mod process;
pub mod report;
pub mod revisit;
pub mod scan;
pub mod security;
pub mod selector;
pub mod tasks;
pub mod tree;
pub mod verdict;
pub mod view;

pub use error::{Error, Result};
pub use pipes::{Fionread, QueueProbe};
pub use proc_root::ProcRoot;
pub use report::{AutofsEntry, MountReport, MountState, Reason};
pub use scan::{KeptTable, NamespaceInfo, OpenTables, Scan, ScanStats, Scanner};
pub use selector::{SelectError, Selector, Target, Workload};
pub use view::View;
