//! CRIU's side: its per-mount algorithm (reference §3.2, §3.4, §3.5, §3.7) reimplemented for
//! the M × F matrix, in the node's namespace (`criu`) and over every mount namespace of the
//! machine (`criu_node`), and, for the busy node, the floor of its lookup (each mount namespace's
//! `mountinfo` once, each master's fds once) and the part of that floor that must touch every
//! process (the readlink of each `ns/mnt`).

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::Pid;

use super::sys::{
    CPath, first_member_of_each_namespace, lap, link_readable, list_pids, open_proc, poll_read_end,
    read_rel, readlink_raw, unsafe_borrow, walk_fds,
};

/// `flags:` of `<pid>/fdinfo/<fd>` (octal), as CRIU's `parse_fdinfo_pid` reads it.
pub fn fdinfo_flags(
    proc: BorrowedFd<'_>,
    path: &mut CPath,
    buf: &mut Vec<u8>,
    pid: i32,
    fd: i32,
) -> u32 {
    if !read_rel(proc, path.set(format_args!("{pid}/fdinfo/{fd}")), buf) {
        return u32::MAX;
    }
    std::str::from_utf8(buf)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("flags:")))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(u32::MAX)
}

/// CRIU's per-mount algorithm on the node's mount namespace, the one it is told to dump:
/// the time it takes.
pub fn criu(builder: Pid, m: usize) -> Duration {
    let start = Instant::now();
    let mut path = CPath(String::with_capacity(64));
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = open_proc();
    let found = criu_in(proc.as_fd(), builder.as_raw(), &mut path, &mut buf, true);
    let elapsed = start.elapsed();
    assert!(
        found >= m,
        "CRIU's algorithm found {found} live masters, expected at least {m}"
    );
    elapsed
}

/// CRIU's per-mount algorithm over every mount namespace of the machine, the ground a scan
/// covers: readdir `/proc` and the readlink of every process's `ns/mnt` to find the
/// namespaces (what the busy node's lookup floor does too), then [`criu`]'s work in each
/// through its first member. The time it takes.
pub fn criu_node(builder: Pid, m: usize) -> Duration {
    // The node's own namespace, whose pipes must be idle (not timed: CRIU has no such check).
    let node_ns = std::fs::read_link(format!("/proc/{builder}/ns/mnt"))
        .ok()
        .map(|l| l.into_os_string().into_encoded_bytes());
    let start = Instant::now();
    let mut path = CPath(String::with_capacity(64));
    let mut link = [0u8; 64];
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = open_proc();
    let pids = list_pids(proc.as_fd());
    let first_of_ns = first_member_of_each_namespace(proc.as_fd(), &pids, &mut path, &mut link);
    let found: usize = first_of_ns
        .iter()
        .map(|(ns, &pid)| {
            let own = node_ns.as_ref() == Some(ns);
            criu_in(proc.as_fd(), pid, &mut path, &mut buf, own)
        })
        .sum();
    let elapsed = start.elapsed();
    assert!(
        found >= m,
        "CRIU's algorithm over every namespace found {found} live masters, expected at least {m}"
    );
    elapsed
}

/// CRIU's per-mount algorithm on the mount namespace of `reader`: the number of mounts whose
/// master holds both ends.
/// CRIU's per-mount algorithm in the mount namespace of `reader`; the live masters found.
/// `own`: the namespace is the bench node's, whose pipes must be idle (other namespaces of
/// the machine may hold anything: busy pipes, mount points that are not UTF-8).
fn criu_in(
    proc: BorrowedFd<'_>,
    reader: i32,
    path: &mut CPath,
    buf: &mut Vec<u8>,
    own: bool,
) -> usize {
    const O_WRONLY: u32 = 0o1;
    // §3.1/3.2: the options of every autofs mount, from mountinfo read once.
    let mut mountinfo = Vec::new();
    read_rel(
        proc,
        path.set(format_args!("{reader}/mountinfo")),
        &mut mountinfo,
    );
    // The options are ASCII; a mount point that is not UTF-8 does not matter here.
    let text = String::from_utf8_lossy(&mountinfo);
    let mut mounts: Vec<(i32, i32, u64)> = Vec::new(); // (fd, pgrp, pipe_ino)
    for line in text.lines() {
        let Some((_, tail)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = tail.split(' ');
        if tail.next() != Some("autofs") {
            continue;
        }
        let options = tail.nth(1).unwrap_or_default();
        let (mut fd, mut pgrp, mut ino) = (None, None, None);
        for token in options.split(',') {
            if let Some(v) = token.strip_prefix("fd=") {
                fd = v.parse().ok();
            } else if let Some(v) = token.strip_prefix("pgrp=") {
                pgrp = v.parse().ok();
            } else if let Some(v) = token.strip_prefix("pipe_ino=") {
                ino = v.parse().ok();
            }
        }
        if let (Some(fd), Some(pgrp), Some(ino)) = (fd, pgrp, ino) {
            mounts.push((fd, pgrp, ino));
        }
    }
    let mut found = 0;
    for &(write_fd, pgrp, ino) in &mounts {
        // §3.4: rescan the leader's fds until the first read end of this pipe.
        let Ok(mut dir) = Dir::openat(
            proc,
            path.set(format_args!("{pgrp}/fd")),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let dir_fd = unsafe_borrow(dir.as_raw_fd());
        let mut read_fd = -1;
        for entry in dir.iter().flatten() {
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let Ok(st) = nix::sys::stat::fstatat(dir_fd, name, nix::fcntl::AtFlags::empty()) else {
                break;
            };
            let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok()) else {
                break;
            };
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
                && st.st_ino == ino
                && fdinfo_flags(proc, path, buf, pgrp, fd) & O_WRONLY == 0
            {
                read_fd = fd;
                break;
            }
        }
        drop(dir);
        if read_fd < 0 {
            continue;
        }
        // §3.5: reopen the read end and poll it for queued data.
        // Polled in every namespace (CRIU's work); only the node's own pipes must be idle.
        if let Some(ready) = poll_read_end(proc, path.set(format_args!("{pgrp}/fd/{read_fd}")))
            && own
        {
            assert_eq!(ready, 0, "an idle bench pipe has no data");
        }
        // §3.7: is the write end fd= still held?
        let p = format!("/proc/{pgrp}/fd/{write_fd}");
        let alive = nix::sys::stat::stat(p.as_str()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
                && st.st_ino == ino
                && fdinfo_flags(proc, path, buf, pgrp, write_fd) & 0o3 == O_WRONLY
        });
        if alive {
            found += 1;
        }
    }
    found
}

/// Phases of the lookup floor, for the breakdown printed with `AUTOFS_BENCH_VERBOSE=1`.
pub const LOOKUP_PHASES: [&str; 4] = [
    "readdir /proc + ns/mnt",
    "mountinfo",
    "masters' fds + fdinfo",
    "reopen + poll",
];

/// The readdir of `/proc` and the readlink of every process's `ns/mnt`: what finding the
/// mount namespaces costs, the part of any lookup that touches every process. Returns the
/// time and the processes seen.
pub fn ns_walk() -> (Duration, usize) {
    let start = Instant::now();
    let mut path = CPath(String::with_capacity(64));
    let mut link = [0u8; 64];
    let proc = open_proc();
    let pids = list_pids(proc.as_fd());
    for &pid in &pids {
        readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/ns/mnt")),
            &mut link,
        );
    }
    (start.elapsed(), pids.len())
}

/// The floor of CRIU's lookup on a whole node, written with the scan floor's care (raw
/// syscalls relative to a `/proc` dir fd, reused buffers, only the parsing the lookup needs):
/// readdir `/proc` and readlink every `ns/mnt` (to find the namespaces), each namespace's
/// `mountinfo` once through its first member (the `pgrp=` and `pipe_ino=` of its autofs lines),
/// then each distinct master's fd table once, walked by number as the scan walks it (readlink
/// of every fd; the access mode of the fds on a mount's pipe from one `lstat` of the link:
/// read or write end?), and, as CRIU does per mount (§3.5), the read end reopened
/// and polled. Returns the time; panics unless it found `m` read ends.
pub fn lookup_floor(m: usize, spent: &mut [Duration; 4]) -> Duration {
    let start = Instant::now();
    let mut last = start;
    let mut path = CPath(String::with_capacity(64));
    let mut link = [0u8; 256];
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = open_proc();
    let pids = list_pids(proc.as_fd());
    let first_of_ns = first_member_of_each_namespace(proc.as_fd(), &pids, &mut path, &mut link);
    lap(&mut last, spent, 0);
    // (pgrp, pipe_ino) of every autofs mount of every namespace.
    let mut mounts: Vec<(i32, u64)> = Vec::new();
    for &pid in first_of_ns.values() {
        if !read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/mountinfo")),
            &mut buf,
        ) {
            continue;
        }
        for line in buf.split(|&b| b == b'\n') {
            let Some(at) = find(line, b" - autofs ") else {
                continue;
            };
            let tail = &line[at..];
            if let (Some(pgrp), Some(ino)) = (option(tail, b"pgrp="), option(tail, b"pipe_ino="))
                && let Ok(pgrp) = i32::try_from(pgrp)
            {
                mounts.push((pgrp, ino));
            }
        }
    }
    lap(&mut last, spent, 1);
    let mut masters: Vec<i32> = mounts.iter().map(|&(p, _)| p).collect();
    masters.sort_unstable();
    masters.dedup();
    let wanted: HashSet<u64> = mounts.iter().map(|&(_, i)| i).collect();
    let mut read_ends: Vec<(i32, i32)> = Vec::new();
    let mut pipes: Vec<i32> = Vec::new();
    let mut mode_path = CPath(String::with_capacity(64));
    for &pgrp in &masters {
        pipes.clear();
        walk_fds(proc.as_fd(), pgrp, &mut path, &mut link, |fd, target| {
            let ino = target
                .strip_prefix(b"pipe:[")
                .and_then(|t| t.strip_suffix(b"]"))
                .map(digits);
            if ino.is_some_and(|ino| wanted.contains(&ino)) {
                pipes.push(fd);
            }
            true
        });
        for &fd in &pipes {
            if link_readable(proc.as_fd(), mode_path.set(format_args!("{pgrp}/fd/{fd}"))) {
                read_ends.push((pgrp, fd));
            }
        }
    }
    lap(&mut last, spent, 2);
    for &(pgrp, fd) in &read_ends {
        // Not checked: the machine's other autofs mounts (other tests, other users) may have
        // queued data.
        let _ = poll_read_end(proc.as_fd(), path.set(format_args!("{pgrp}/fd/{fd}")));
    }
    lap(&mut last, spent, 3);
    let elapsed = start.elapsed();
    assert!(
        read_ends.len() >= m,
        "the lookup floor found {} read ends, expected at least {m}",
        read_ends.len()
    );
    elapsed
}

/// The decimal number at the start of `s` (0 when there is none).
fn digits(s: &[u8]) -> u64 {
    s.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, d| n * 10 + u64::from(d - b'0'))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The number after `key` in a mountinfo line's option list, when `key` starts an option.
fn option(tail: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(tail, key)?;
    (at > 0 && matches!(tail[at - 1], b',' | b' ')).then(|| digits(&tail[at + key.len()..]))
}
