//! Real autofs states for real-kernel tests, built inside private mount + pid namespaces
//! and always cleaned up.
//!
//! A [`Scenario`] starts the `autofs-scenario` binary (this crate's bin), which unshares a
//! new mount and pid namespace, becomes pid 1 there, mounts a private tmpfs on a fresh
//! temp dir ([`Scenario::work_dir`]) and on `/run`, and then builds states on command:
//! fake daemons with raw autofs mounts ([`Scenario::mount`]), requesters that spring a
//! trap ([`Scenario::trigger`]), packet reads, closed pipe ends, dead daemons, delegated
//! read ends and the real `automount` daemon. The host's procfs stays mounted, so tests
//! read `/proc/<pid>/mountinfo` etc. from the host (see [`procfs`]) and compare with the
//! ids a command returned (host pids, fd numbers, pipe inodes, mount ids).
//!
//! Cleanup: dropping a [`Scenario`] kills everything in it and waits for it; the mounts
//! live only in the scenario's mount namespace and vanish with it. If the test process
//! dies instead, `PR_SET_PDEATHSIG(SIGKILL)` kills the scenario's outer process, whose
//! death kills the scenario's pid 1 (same signal), whose death kills its whole pid
//! namespace, which frees the mount namespace. (The parent-death signal follows the
//! *thread* that forked; the library forks from one thread that lives as long as the
//! process, so a scenario may outlive the thread that started it.) A killed test process
//! leaves only an empty directory in the temp dir, removed by the next `start`.
//!
//! Real-kernel tests must fail, not skip, when they cannot run: [`Scenario::start`]
//! returns an error naming the reason (not root, no autofs, binary not found), and
//! [`Scenario::start_or_panic`] panics with it.
//!
//! Never `stat`/`open` a path inside a live autofs mount from the test process: it would
//! trigger (and block on) the mount. Reading `/proc` is always safe.
//!
//! ```no_run
//! use autofs_testkit::{MountSpec, Scenario};
//! let mut sc = Scenario::start_or_panic();
//! let d = sc.mount(MountSpec::indirect().timeout(30)).unwrap();
//! let line = sc.mount_line(d.mount_id).unwrap();
//! assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
//! ```

pub mod agent;
pub mod binaries;
pub mod cgroup;
pub mod child;
pub mod closed_port;
pub mod container;
mod host;
pub mod host_aside;
pub mod http;
mod line_reader;
pub mod mount_ns;
pub mod packet;
pub mod pki;
pub mod proc_fixture;
pub mod procfs;
pub mod proto;
mod reports;
mod scenario;
mod spec;

use std::io;
use std::time::Duration;

/// Hang guard, 60 s, for anything a test awaits that should happen "soon": it only ends a test
/// that would otherwise hang, so it is long enough for a busy 2-core machine and for software
/// emulation (`scripts/vm-run`). No test measures speed with it.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub use host::{SCENARIO_BIN_ENV, build_scenario_binary, preflight, scenario_binary};
pub use packet::Packet;
pub use procfs::{MountInfoLine, wait_until};
use proto::Fields;
pub use reports::{
    Aside, Automount, Daemon, Delegate, NsMember, Requester, RequesterOutcome, WriteEndKeeper,
};
pub use scenario::Scenario;
pub use spec::{Answer, AutomountSpec, Mode, MountSpec};

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn num<T: std::str::FromStr>(f: &Fields, key: &str) -> io::Result<T> {
    f.parse(key).map_err(bad)
}
