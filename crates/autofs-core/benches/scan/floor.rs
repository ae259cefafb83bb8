//! The floor: the /proc reads the scan performs, with no parsing.

use std::collections::{BTreeSet, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use autofs_core::Scan;
use nix::fcntl::{OFlag, openat};
use nix::libc;
use nix::sys::stat::Mode;

use super::node::ns_inode;
use super::sys::{
    CPath, first_member_of_each_namespace, lap, link_readable, list_pids, open_proc,
    read_record_rel, read_rel, readlink_raw, walk_fds,
};

/// What the scan read beyond `ns/mnt` and the mount tables, taken from one scan's result and
/// a listing of the leaders' fds done once outside the timing, so the floor issues exactly
/// the scan's reads for this node state (the first scan of a fresh `Scanner`: nothing
/// remembered).
pub struct FloorPlan {
    /// Distinct leaders (`pgrp=` of the mounts), whose whole fd table the scan walks: the
    /// size of their fd dir (the number of open fds), then each link read by fd number (the
    /// bench's leaders have dense fd tables).
    leaders: Vec<i32>,
    /// `(pid, fd)` of the leaders' fds on a pipe no mount uses: one `fdinfo` read each (is it
    /// in packet mode, a leftover CRIU's pipe dump refuses?).
    fdinfo: Vec<(i32, i32)>,
    /// `(pid, fd)` whose access mode the scan reads with one `lstat` of the link: the
    /// leaders' fds on a pipe some mount uses.
    modes: Vec<(i32, i32)>,
    /// Members of namespaces with autofs mounts, and their parents outside them: `stat`
    /// (the parents of the namespace's process forest).
    stat: Vec<i32>,
    /// Roots of those forests: `status` (their rank and pid-namespace chain), their `stat`
    /// being among the members'. (A leader's `stat` tells that it exists and its parent.)
    status: Vec<i32>,
    /// Owners of namespaces with autofs mounts: `cgroup`.
    owners: Vec<i32>,
    /// First member of every namespace without autofs mounts: `cgroup` (attribution).
    attributed: Vec<i32>,
    /// Owners in a nested pid namespace (or without an `NSpid:` line) and the masters
    /// translated into it: `ns/pid` (an owner listed in the proc root's own needs none).
    pid_ns: Vec<i32>,
    /// Read ends measured with FIONREAD: open `O_PATH`, fstat, reopen, ioctl.
    probes: Vec<(i32, i32)>,
}

fn pipe_of(target: &std::path::Path) -> Option<u64> {
    target
        .to_str()
        .and_then(|t| t.strip_prefix("pipe:["))
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<u64>().ok())
}

/// Levels of `pid`'s pid namespace below the proc root's (`NSpid:` entries); `None` without
/// such a line.
fn pidns_depth(pid: i32) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|v| v.split_whitespace().count())
        })
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The floor's reads for the node state `scan` saw. Every read end of the bench's mounts is
/// with its leader, so the scan runs no census beyond the leaders (`census_pipes` is 0).
pub fn plan_floor(scan: &Scan) -> FloorPlan {
    let wanted: HashSet<u64> = scan
        .reports
        .iter()
        .map(|r| r.pipe_ino)
        .filter(|&i| i != 0)
        .collect();
    let namespaces: HashSet<u64> = scan.reports.iter().map(|r| r.mnt_ns).collect();
    let leaders: BTreeSet<i32> = scan
        .reports
        .iter()
        .map(|r| r.host_pgrp)
        .filter(|&p| p > 0)
        .collect();
    let mut modes = Vec::new();
    let mut members = Vec::new();
    let mut planned = Vec::new();
    let mut fdinfo = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let name = entry.expect("/proc entry").file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            && ns_inode(link.as_os_str().as_bytes()).is_some_and(|ns| namespaces.contains(&ns))
        {
            members.push(pid);
        }
        if !leaders.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        // Every fd: a pipe some mount uses has its access mode read, any other pipe its
        // fdinfo.
        for fd in fds.flatten() {
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            match std::fs::read_link(fd.path())
                .ok()
                .as_deref()
                .and_then(pipe_of)
            {
                Some(ino) if wanted.contains(&ino) => modes.push((pid, n)),
                Some(_) => fdinfo.push((pid, n)),
                None => {}
            }
        }
        planned.push(pid);
    }
    // The forest: every member's stat; the parents outside the namespace too; the roots' status.
    let member_set: HashSet<i32> = members.iter().copied().collect();
    let mut stat = members.clone();
    let mut roots = Vec::new();
    for &pid in &members {
        match ppid(pid) {
            Some(parent) if !member_set.contains(&parent) => {
                roots.push(pid);
                if parent > 0 && !stat.contains(&parent) {
                    stat.push(parent);
                }
            }
            _ => {}
        }
    }
    let owners: BTreeSet<i32> = scan
        .reports
        .iter()
        .map(|r| r.owner_pid)
        .filter(|&p| p > 0)
        .collect();
    let attributed = scan
        .namespaces
        .iter()
        .filter(|n| n.autofs_mounts == 0 && n.owner_pid > 0)
        .map(|n| n.owner_pid)
        .collect();
    let status: BTreeSet<i32> = roots.iter().copied().collect();
    let mut pid_ns: BTreeSet<i32> = BTreeSet::new();
    for r in &scan.reports {
        if r.read_end_fd >= 0 && r.owner_pid > 0 && pidns_depth(r.owner_pid) != Some(1) {
            pid_ns.extend([r.owner_pid, r.host_pgrp]);
        }
    }
    let probes = scan
        .reports
        .iter()
        .filter(|r| r.read_end_fd >= 0)
        .map(|r| (r.read_end_pid, r.read_end_fd))
        .collect();
    FloorPlan {
        leaders: planned,
        fdinfo,
        modes,
        stat,
        status: status.into_iter().collect(),
        owners: owners.into_iter().collect(),
        attributed,
        pid_ns: pid_ns.into_iter().collect(),
        probes,
    }
}

/// Phases of the floor, for the breakdown printed with `AUTOFS_BENCH_VERBOSE=1`.
pub const FLOOR_PHASES: [&str; 6] = [
    "readdir /proc",
    "ns/mnt + root + mountinfo",
    "leaders' fds",
    "fd modes",
    "stat/status/cgroup/ns",
    "FIONREAD probes",
];

pub fn floor(plan: &FloorPlan, spent: &mut [Duration; 6]) -> Duration {
    let start = Instant::now();
    let mut last = start;
    let mut path = CPath(String::with_capacity(64));
    let mut link = [0u8; 256];
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = open_proc();
    let pids = list_pids(proc.as_fd());
    lap(&mut last, spent, 0);
    // ns/mnt of every process; the first member of each namespace reads its mountinfo.
    let first_of_ns = first_member_of_each_namespace(proc.as_fd(), &pids, &mut path, &mut link);
    for &pid in first_of_ns.values() {
        // The scan checks the reader's root is the namespace root (a complete view).
        readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/root")),
            &mut link,
        );
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/mountinfo")),
            &mut buf,
        );
    }
    lap(&mut last, spent, 1);
    // Each distinct leader's fds, once: the size of its fd dir (how many are open), then the
    // link of every fd by number; the fdinfo of its pipes no mount uses.
    for &pid in &plan.leaders {
        walk_fds(proc.as_fd(), pid, &mut path, &mut link, |_, _| true);
    }
    for &(pid, fd) in &plan.fdinfo {
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/fdinfo/{fd}")),
            &mut buf,
        );
    }
    lap(&mut last, spent, 2);
    // The access mode of the pipes of interest: one lstat of the link.
    for &(pid, fd) in &plan.modes {
        link_readable(proc.as_fd(), path.set(format_args!("{pid}/fd/{fd}")));
    }
    lap(&mut last, spent, 3);
    // stat of the members of namespaces with autofs mounts (and of their parents outside),
    // status of the forests' roots; cgroup of every namespace's owner;
    // ns/pid of owners in nested pid namespaces and of their masters.
    for &pid in &plan.stat {
        read_record_rel(proc.as_fd(), path.set(format_args!("{pid}/stat")), &mut buf);
    }
    for &pid in &plan.status {
        read_record_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/status")),
            &mut buf,
        );
    }
    for &pid in &plan.attributed {
        read_record_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/cgroup")),
            &mut buf,
        );
    }
    for &pid in &plan.owners {
        read_record_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/cgroup")),
            &mut buf,
        );
    }
    for &pid in &plan.pid_ns {
        readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/ns/pid")),
            &mut link,
        );
    }
    lap(&mut last, spent, 4);
    // The queue probe of every read end, as the scan pins it: open the link `O_PATH`, fstat
    // (a FIFO of pipefs with the mount's inode?), reopen the pinned pipe through
    // `/proc/self/fd`, FIONREAD.
    for &(pid, fd) in &plan.probes {
        let Ok(pinned) = openat(
            proc.as_fd(),
            path.set(format_args!("{pid}/fd/{fd}")),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let _ = nix::sys::stat::fstat(pinned.as_fd());
        let Ok(end) = openat(
            proc.as_fd(),
            path.set(format_args!("self/fd/{}", pinned.as_raw_fd())),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through a pointer valid for the call.
        #[allow(unsafe_code)]
        unsafe {
            libc::ioctl(end.as_raw_fd(), libc::FIONREAD, &mut queued);
        }
    }
    lap(&mut last, spent, 5);
    start.elapsed()
}
