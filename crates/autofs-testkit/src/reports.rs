//! What a [`Scenario`](crate::Scenario) reports about the processes and mounts it made:
//! host and namespace pids, fds, pipe inodes and mount ids, to compare with what /proc shows.

use std::path::PathBuf;

#[cfg(doc)]
use crate::Scenario;
use crate::spec::Mode;

/// A process in a mount namespace of its own and its child ([`Scenario::ns_member`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsMember {
    /// Host pid of the namespace's owner (its parent is outside the namespace).
    pub owner_host_pid: i32,
    /// Host pid of its child, in the same mount namespace.
    pub child_host_pid: i32,
    /// The mount namespace inode.
    pub mnt_ns: u64,
}

/// The processes above a daemon mounted aside ([`MountSpec::aside`](crate::MountSpec::aside)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aside {
    /// Host pid of the process that made the mount namespace (a child of the scenario's pid 1,
    /// which owns the namespace for CRIU).
    pub owner_host_pid: i32,
    /// Host pid of the middle process: the owner's child and the daemon's parent. Its name
    /// for [`Scenario::kill`] is `<daemon name>.middle`.
    pub middle_host_pid: i32,
    /// The mount namespace inode (not the scenario's).
    pub mnt_ns: u64,
}

/// A fake daemon and the autofs mount it made, as reported right after mounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Name (also the last component of the mount point).
    pub name: String,
    /// Mount type.
    pub mode: Mode,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:` (host first; three levels for a nested daemon).
    pub nspid: Vec<i32>,
    /// Process group in the host pid namespace (what host mountinfo shows as `pgrp=`).
    pub host_pgrp: i32,
    /// Process group in the scenario's pid namespace.
    pub vpgrp: i32,
    /// Process group in the daemon's own pid namespace (the `pgrp=` it mounted with).
    pub ns_pgrp: i32,
    /// Fd number of the read end in the daemon.
    pub read_fd: i32,
    /// Fd number of the write end at mount time (the `fd=` value).
    pub write_fd: i32,
    /// Whether the daemon closed its write end right after mounting.
    pub write_closed: bool,
    /// Absolute mount point (same path on the host, in another mount namespace).
    pub mount_point: PathBuf,
    /// Mount id (first mountinfo field).
    pub mount_id: u32,
    /// Inode of the pipe (`pipe_ino=`).
    pub pipe_ino: u64,
    /// Whether the daemon lives in a nested pid namespace.
    pub nested_pidns: bool,
    /// The processes above a daemon mounted aside; `None` for one of the scenario's own
    /// mount namespace.
    pub aside: Option<Aside>,
}

/// A process blocked (or finished) in a lookup started by [`Scenario::trigger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Scenario-local id for [`Scenario::wait_requester`].
    pub id: u32,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Host tid of the task that looks the path up: `host_pid`, or another thread's
    /// ([`Scenario::trigger_from_thread`]).
    pub host_tid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:` (host first).
    pub nspid: Vec<i32>,
    /// The path it looked up.
    pub path: PathBuf,
}

/// How a requester's lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequesterOutcome {
    /// Still blocked (or running) when the wait gave up.
    Running,
    /// The lookup succeeded.
    Succeeded,
    /// The lookup failed with this errno (e.g. `libc::ENOENT`).
    Failed(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// The child that holds a read end after [`Scenario::delegate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    /// Name usable with [`Scenario::kill`] (`<daemon>.delegate`).
    pub name: String,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:`.
    pub nspid: Vec<i32>,
    /// Its own process group (host numbering) — not the mount's pgrp.
    pub host_pgrp: i32,
    /// Fd number of the read end it kept.
    pub read_fd: i32,
}

/// The child that holds the write end after [`Scenario::hand_write_end`], in the daemon's
/// process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteEndKeeper {
    /// Name usable with [`Scenario::kill`] (`<daemon>.delegate`).
    pub name: String,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// The daemon's process group (host numbering), the mount's `pgrp=`, whose leader is gone.
    pub host_pgrp: i32,
    /// Fd number of the write end it kept.
    pub write_fd: i32,
}

/// A running real `automount` daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automount {
    /// Name usable with [`Scenario::kill`] and [`Scenario::trigger`].
    pub name: String,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace (from its pid file).
    pub vpid: i32,
    /// Process group (host numbering); automount is its own session and pgrp leader.
    pub host_pgrp: i32,
    /// Process group in the scenario's pid namespace.
    pub vpgrp: i32,
    /// Its indirect mount point.
    pub mount_point: PathBuf,
    /// Mount id of its autofs mount.
    pub mount_id: u32,
    /// Its stdout/stderr log (inside the scenario's tmpfs; read it with
    /// [`Scenario::read_file`]).
    pub log: PathBuf,
}
