//! One census of pipe ends per scan: every fd of every process that is `pipe:[ino]` for an
//! inode some autofs mount uses, with its access mode (from the procfs link's mode bits, or
//! `fdinfo`). Building it costs
//! O(processes + fds); each mount then looks its pipe up in O(1) (CRIU rescans
//! `/proc/<pgrp>/fd` once per mount).
//!
//! Queued bytes are measured with `FIONREAD` on the read end reopened through `/proc`, never
//! with `read()`: reading would steal a kernel request and leave its requester hanging.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::proc_root::{ProcRoot, ReadFailure, parse_pipe_link};

/// `O_ACCMODE` bits of an fdinfo `flags:` value.
const O_ACCMODE: u32 = 0o3;
/// `O_WRONLY`.
const O_WRONLY: u32 = 0o1;

/// One open end of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeEnd {
    /// Host pid holding it.
    pub pid: i32,
    /// Its fd number in that process.
    pub fd: i32,
    /// The open flags as far as CRIU's tests read them: the access mode (`O_ACCMODE` bits)
    /// from the procfs link's mode bits ([`ProcRoot::fd_access_mode`]), or the whole
    /// `flags:` of `fdinfo` (octal in the file) when the link does not tell (`O_PATH`) and on
    /// fixture trees.
    pub flags: u32,
}

impl PipeEnd {
    /// CRIU's test for a read end: `(flags & O_WRONLY) == 0`, so `O_RDWR` counts too.
    pub fn is_read_end(&self) -> bool {
        self.flags & O_WRONLY == 0
    }

    /// CRIU's test for a live write end: `flags & O_WRONLY`.
    pub fn is_write_end(&self) -> bool {
        self.flags & O_ACCMODE == O_WRONLY
    }
}

/// A process whose fds could not be listed or whose fdinfo could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The process.
    pub pid: i32,
    /// What failed, with the path.
    pub message: String,
}

/// Every end of every pipe of interest, by pipe inode.
#[derive(Debug, Default)]
pub struct PipeIndex {
    ends: HashMap<u64, Vec<PipeEnd>>,
    scanned: HashSet<i32>,
    unreadable: Vec<Unreadable>,
    unreadable_by_pid: HashMap<i32, usize>,
    fds_seen: usize,
    /// Per leader listed by [`PipeIndex::scan_leaders`]: its ends in packet mode of pipes no
    /// wanted inode names, or why an end's `fdinfo` could not be read.
    packet_mode: HashMap<i32, Result<Vec<PacketModeEnd>, String>>,
}

impl PipeIndex {
    /// Scans the fds of `pids`, keeping ends of the pipes in `wanted` (a whole-node census
    /// when `pids` is every process).
    pub fn build(root: &ProcRoot, pids: &[i32], wanted: &HashSet<u64>) -> Self {
        let mut index = Self::default();
        index.scan(root, pids, wanted);
        index
    }

    /// Adds the ends that the fds of `pids` hold of the pipes in `wanted`. A pid scanned
    /// before (a leader [`PipeIndex::scan_leaders`] listed included) is skipped: callers scan
    /// first with every pipe of interest (the leaders), then with a subset (the orphan
    /// candidates).
    pub fn scan(&mut self, root: &ProcRoot, pids: &[i32], wanted: &HashSet<u64>) {
        if wanted.is_empty() {
            return;
        }
        let mut hits: Vec<(u64, i32)> = Vec::new();
        for &pid in pids {
            if !self.scanned.insert(pid) {
                continue;
            }
            self.list_table(root, pid, wanted, &mut hits);
        }
    }

    /// Lists the fd table `<pid>/fd` (a process's, or a thread's own) and adds the ends it
    /// holds of the pipes in `wanted` under `pid`; notes what it cannot read.
    fn list_table(
        &mut self,
        root: &ProcRoot,
        pid: i32,
        wanted: &HashSet<u64>,
        hits: &mut Vec<(u64, i32)>,
    ) {
        hits.clear();
        let listed = root.for_each_fd(pid, 0, |fd, target| {
            if let Some(ino) = parse_pipe_link(target).filter(|ino| wanted.contains(ino)) {
                hits.push((ino, fd));
            }
            ControlFlow::Continue(())
        });
        match listed {
            Ok((n, _)) => self.fds_seen += n,
            Err(e) => return self.note_failure(root, pid, "fd", &e),
        }
        for &(ino, fd) in hits.iter() {
            match open_flags(root, pid, fd) {
                Ok(flags) => self.insert(ino, PipeEnd { pid, fd, flags }),
                Err((rel, e)) => self.note_failure(root, pid, &rel, &e),
            }
        }
    }

    /// Adds the ends of the pipes in `wanted` that threads of `pids` hold in fd tables of their
    /// own (`unshare(CLONE_FILES)`), under the thread's id: a process's `fd/` shows its main
    /// thread's table only. Threads that share their process's table are skipped with `kcmp`
    /// where it works (the caller's own pid namespace), and listed otherwise. Nothing on
    /// fixture trees.
    pub fn scan_threads(&mut self, root: &ProcRoot, pids: &[i32], wanted: &HashSet<u64>) {
        if wanted.is_empty() || !root.is_procfs() {
            return;
        }
        // The wanted pipes are in no process's table, so any thread that shows one has a
        // table of its own: `kcmp` only spares listing the threads that share their
        // process's. Without it (another pid namespace, or refused) every thread is listed.
        let mut compare = root.is_own_pid_namespace();
        let mut hits: Vec<(u64, i32)> = Vec::new();
        for &pid in pids {
            // One `fstatat` tells a single-threaded process, which most are.
            if matches!(root.thread_count(pid), Ok(Some(..=1)) | Err(_)) {
                continue;
            }
            let Ok(tids) = root.threads(pid) else {
                continue; // gone, or its tasks are as unreadable as its fds (noted then)
            };
            for tid in tids {
                if compare {
                    match has_own_fd_table(pid, tid) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => continue,
                        Err(_) => compare = false,
                    }
                }
                self.list_table(root, tid, wanted, &mut hits);
            }
        }
    }

    /// Lists the whole fd table of each process-group leader in `leaders` (each with the pipe
    /// inode and `fd=` of every mount it leads), keeping the ends of every pipe in `wanted`, as
    /// [`PipeIndex::scan`] does, and its ends in packet mode (`O_DIRECT` in `fdinfo`) of pipes
    /// not in `wanted` ([`PipeIndex::leader_packet_mode_ends`]): the write end of an autofs
    /// pipe whose mount is gone (unmounted, or catatonic), which CRIU's pipe dump refuses when
    /// no mount shows the pipe (reference §1.4). CRIU's own search stops at the read end; the
    /// rest of the table is read for those ends (one `readlink` per fd, one `fdinfo` per pipe
    /// not in `wanted`).
    pub fn scan_leaders(
        &mut self,
        root: &ProcRoot,
        leaders: &BTreeMap<i32, Vec<(u64, i32)>>,
        wanted: &HashSet<u64>,
    ) {
        if wanted.is_empty() {
            return;
        }
        let o_direct = u32::try_from(nix::libc::O_DIRECT).unwrap_or(0);
        let mut hits: Vec<(u64, i32, FlagsRead)> = Vec::new();
        let mut others: Vec<PacketModeEnd> = Vec::new();
        for &pid in leaders.keys() {
            if !self.scanned.insert(pid) {
                continue;
            }
            hits.clear();
            others.clear();
            let listed = root.for_each_fd(pid, 0, |fd, target| {
                match parse_pipe_link(target) {
                    Some(ino) if wanted.contains(&ino) => {
                        hits.push((ino, fd, open_flags(root, pid, fd)));
                    }
                    Some(ino) => others.push(PacketModeEnd { fd, ino }),
                    None => {}
                }
                ControlFlow::Continue(())
            });
            match listed {
                Ok((n, _)) => self.fds_seen += n,
                Err(e) => {
                    self.note_failure(root, pid, "fd", &e);
                    continue;
                }
            }
            for (ino, fd, flags) in hits.drain(..) {
                match flags {
                    Ok(flags) => self.insert(ino, PipeEnd { pid, fd, flags }),
                    Err((rel, e)) => self.note_failure(root, pid, &rel, &e),
                }
            }
            let mut packet_mode = Ok(Vec::new());
            for &end in &others {
                match read_flags(root, pid, end.fd) {
                    Ok(flags) if flags & o_direct != 0 => {
                        if let Ok(ends) = packet_mode.as_mut() {
                            ends.push(end);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => {}
                    Err(e) => {
                        let path = root.pid_path(pid, &format!("fdinfo/{}", end.fd));
                        packet_mode = Err(format!("cannot read {}: {e}", path.display()));
                        break;
                    }
                }
            }
            self.packet_mode.insert(pid, packet_mode);
        }
    }

    /// The ends in packet mode of pipes no wanted inode names that leader `pid` holds, in
    /// ascending fd order, or why one could not be checked; `None` for a pid
    /// [`PipeIndex::scan_leaders`] did not list (not a leader, or its fds unreadable: see
    /// [`PipeIndex::unreadable`]).
    pub fn leader_packet_mode_ends(&self, pid: i32) -> Option<&Result<Vec<PacketModeEnd>, String>> {
        self.packet_mode.get(&pid)
    }

    /// Re-checks an end found by an earlier scan with one `readlink` and its access mode:
    /// adds it when `<pid>/fd/<fd>` still is pipe `ino`. Returns whether it was added.
    pub fn verify(&mut self, root: &ProcRoot, ino: u64, pid: i32, fd: i32) -> bool {
        let still = root
            .read_link(pid, &format!("fd/{fd}"))
            .is_ok_and(|t| parse_pipe_link(t.as_encoded_bytes()) == Some(ino));
        if !still || self.ends(ino).iter().any(|e| e.pid == pid && e.fd == fd) {
            return still;
        }
        match open_flags(root, pid, fd) {
            Ok(flags) => {
                self.insert(ino, PipeEnd { pid, fd, flags });
                true
            }
            Err(_) => false,
        }
    }

    fn insert(&mut self, ino: u64, end: PipeEnd) {
        let ends = self.ends.entry(ino).or_default();
        if !ends.iter().any(|e| e.pid == end.pid && e.fd == end.fd) {
            ends.push(end);
            ends.sort_unstable_by_key(|e| (e.pid, e.fd));
        }
    }

    fn note_failure(&mut self, root: &ProcRoot, pid: i32, rel: &str, err: &io::Error) {
        if ReadFailure::of(err) != ReadFailure::Vanished {
            self.unreadable_by_pid
                .entry(pid)
                .or_insert(self.unreadable.len());
            self.unreadable.push(Unreadable {
                pid,
                message: format!("cannot read {}: {err}", root.pid_path(pid, rel).display()),
            });
        }
    }

    /// Every end of pipe `ino`, ordered by pid then fd.
    pub fn ends(&self, ino: u64) -> &[PipeEnd] {
        self.ends.get(&ino).map_or(&[], Vec::as_slice)
    }

    /// Processes whose fds could not be read (denied or broken, not vanished).
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// Whether `pid`'s fds could not be read.
    pub fn is_unreadable(&self, pid: i32) -> Option<&Unreadable> {
        self.unreadable_by_pid
            .get(&pid)
            .map(|&i| &self.unreadable[i])
    }

    /// Number of fds listed in the census.
    pub fn fds_seen(&self) -> usize {
        self.fds_seen
    }
}

/// The open flags of a fd, or the path (relative to the pid) whose read failed, with the error.
type FlagsRead = Result<u32, (String, io::Error)>;

/// The open flags of `<pid>/fd/<fd>` as [`PipeEnd::flags`] keeps them: one `lstat` of the
/// link on procfs, the `flags:` of `fdinfo` when that does not tell. The error names the path
/// (relative to the pid) that failed.
fn open_flags(root: &ProcRoot, pid: i32, fd: i32) -> FlagsRead {
    match root.fd_access_mode(pid, fd) {
        Ok(Some(mode)) => Ok(mode),
        Ok(None) => read_flags(root, pid, fd).map_err(|e| (format!("fdinfo/{fd}"), e)),
        Err(e) => Err((format!("fd/{fd}"), e)),
    }
}

/// Reads the `flags:` line of `<pid>/fdinfo/<fd>`.
fn read_flags(root: &ProcRoot, pid: i32, fd: i32) -> io::Result<u32> {
    let text = root.read(pid, &format!("fdinfo/{fd}"))?;
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"flags:"))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no octal flags: line"))
}

/// An end of a pipe in packet mode (`O_DIRECT` in its open flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketModeEnd {
    /// Its fd number.
    pub fd: i32,
    /// The pipe's inode.
    pub ino: u64,
}

/// The ends of pipes in packet mode (`O_DIRECT` in `fdinfo` flags, which the kernel sets on the
/// write end of an autofs mount's pipe and never clears) that `pid` holds, of pipes not in
/// `autofs` (the pipes CRIU's mountinfo parse exempts from its refusal of packet mode,
/// reference §1.4): in ascending fd order. A fd closed meanwhile is skipped.
///
/// # Errors
///
/// The error of listing `<pid>/fd` or of reading a `fdinfo` (other than the fd being gone).
pub fn packet_mode_ends(
    root: &ProcRoot,
    pid: i32,
    autofs: &HashSet<u64>,
) -> io::Result<Vec<PacketModeEnd>> {
    let mut pipes = Vec::new();
    root.for_each_fd(pid, 0, |fd, target| {
        if let Some(ino) = parse_pipe_link(target).filter(|ino| !autofs.contains(ino)) {
            pipes.push(PacketModeEnd { fd, ino });
        }
        ControlFlow::Continue(())
    })?;
    let o_direct = u32::try_from(nix::libc::O_DIRECT).unwrap_or(0);
    let mut ends = Vec::new();
    for end in pipes {
        match read_flags(root, pid, end.fd) {
            Ok(flags) if flags & o_direct != 0 => ends.push(end),
            Ok(_) => {}
            Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ends)
}

/// Measures how many bytes are queued in a pipe without consuming any.
pub trait QueueProbe {
    /// Bytes queued in pipe `ino`, reached through the fd link at `fd_path`.
    ///
    /// # Errors
    ///
    /// The error of reaching the pipe (the link is gone or now points elsewhere, access).
    fn queued_bytes(&self, fd_path: &Path, ino: u64) -> io::Result<u64>;

    /// Whether any process holds a read end of pipe `ino`, reached through the fd link at
    /// `fd_path` (either end), answered by the kernel's own reader count. `None` when this
    /// probe cannot tell (the default, e.g. for fixture trees).
    ///
    /// # Errors
    ///
    /// The error of reaching the pipe.
    fn has_readers(&self, fd_path: &Path, ino: u64) -> io::Result<Option<bool>> {
        let _ = (fd_path, ino);
        Ok(None)
    }

    /// Bytes queued in pipe `ino`, reached through the fd link at `fd_path` (either end),
    /// measured without ever holding a read end: of a pipe nobody reads, a reader of ours,
    /// however brief, would let a lookup's request be written into the pipe (where nobody
    /// answers it) instead of failing and turning the mount catatonic. `None` when this probe
    /// cannot tell (the default, e.g. for fixture trees).
    ///
    /// # Errors
    ///
    /// The error of reaching the pipe.
    fn queued_bytes_unread(&self, fd_path: &Path, ino: u64) -> io::Result<Option<u64>> {
        let _ = (fd_path, ino);
        Ok(None)
    }
}

/// Any `Fn(fd_path, ino) -> io::Result<u64>` is a probe (fixture trees use a table).
impl<F: Fn(&Path, u64) -> io::Result<u64>> QueueProbe for F {
    fn queued_bytes(&self, fd_path: &Path, ino: u64) -> io::Result<u64> {
        self(fd_path, ino)
    }
}

/// Whether thread `tid` has an fd table of its own rather than its process's (`pid`): a thread
/// that called `unshare(CLONE_FILES)`, or was cloned without `CLONE_FILES`. `kcmp(2)` with
/// `KCMP_FILES` compares the two tables (it needs ptrace access to both).
///
/// Only meaningful when the proc root shows the caller's own pid namespace
/// ([`ProcRoot::is_own_pid_namespace`], checked by the caller).
///
/// # Errors
///
/// The `kcmp` error (`ESRCH`: a thread is gone; `EPERM`: no ptrace access).
fn has_own_fd_table(pid: i32, tid: i32) -> io::Result<bool> {
    const KCMP_FILES: nix::libc::c_long = 2;
    // SAFETY: kcmp takes two pids, a type and two indices (unused for KCMP_FILES), each passed
    // as a long, and returns an ordering (0 when equal) or -1; no memory is passed.
    #[allow(unsafe_code)]
    let order = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_kcmp,
            nix::libc::c_long::from(pid),
            nix::libc::c_long::from(tid),
            KCMP_FILES,
            0 as nix::libc::c_long,
            0 as nix::libc::c_long,
        )
    };
    if order < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(order != 0)
}

/// The real probe: reopen the pipe through its `/proc/<pid>/fd/<n>` link with
/// `O_RDONLY|O_NONBLOCK|O_CLOEXEC` and ask `FIONREAD`. Opening a pipe read-only and
/// non-blocking never waits, and the reopened reader is closed before returning.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fionread;

impl QueueProbe for Fionread {
    fn queued_bytes(&self, fd_path: &Path, ino: u64) -> io::Result<u64> {
        fionread(&reopen(fd_path, ino, Reopen::Reader)?)
    }

    fn has_readers(&self, fd_path: &Path, ino: u64) -> io::Result<Option<bool>> {
        // A pipe's write end polls POLLERR exactly when the pipe has no reader (pipe_poll()).
        // Opening a pipe (pipefs) for writing never waits for a partner, the poll has a zero
        // timeout and nothing is written. The extra writer is closed at once; the kernel holds
        // its own write end, so the close ends nobody's stream.
        let writer = reopen(fd_path, ino, Reopen::Writer)?;
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&writer),
            nix::poll::PollFlags::POLLOUT,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)?;
        let events = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
        Ok(Some(!events.contains(nix::poll::PollFlags::POLLERR)))
    }

    fn queued_bytes_unread(&self, fd_path: &Path, ino: u64) -> io::Result<Option<u64>> {
        // FIONREAD counts a pipe's bytes through either end (pipe_ioctl() checks no mode);
        // an extra writer, as in `has_readers`, adds no reader and writes nothing.
        fionread(&reopen(fd_path, ino, Reopen::Writer)?).map(Some)
    }
}

/// Which end of a pipe [`reopen`] opens.
#[derive(Debug, Clone, Copy)]
enum Reopen {
    Reader,
    Writer,
}

/// The pipe behind `fd_path` ([`pin_pipe`]: a pipe of inode `ino`, nothing else), opened anew
/// as `end` through the pinned fd, `O_NONBLOCK | O_NOCTTY` (never waits for a partner). The
/// caller closes it at once.
fn reopen(fd_path: &Path, ino: u64, end: Reopen) -> io::Result<std::fs::File> {
    let pinned = pin_pipe(fd_path, ino)?;
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pinned));
    std::fs::OpenOptions::new()
        .read(matches!(end, Reopen::Reader))
        .write(matches!(end, Reopen::Writer))
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
}

/// Pins the pipe behind `fd_path` with `O_PATH` (no open of the file itself: a magic link
/// is jumped to its file, never walked, and nothing of the file runs), then checks the pinned
/// file is FIFO `ino`, and a pipe: on pipefs, the device every `pipe()` lives on, or else
/// named `pipe:[ino]` by the link itself, as only a fixture tree's symbolic link can be (a
/// procfs fd link names any other file by its path, which begins with `/`). A reused fd number
/// can therefore never make the caller open a tty, a device, a directory on an autofs mount,
/// or a named FIFO (whose blocked writers a reader would wake).
fn pin_pipe(fd_path: &Path, ino: u64) -> io::Result<File> {
    // Not `OpenOptions::custom_flags(O_PATH)`: std masks custom flags with `O_ACCMODE`, which
    // on musl includes `O_PATH` (as `O_SEARCH`), so the static build would open the pipe
    // itself, read-only and blocking: waiting for a writer that may never come, and a reader
    // of an unread pipe meanwhile.
    let pinned = File::from(nix::fcntl::open(
        fd_path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?);
    let st = nix::sys::stat::fstat(&pinned)?;
    let fifo = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
        & nix::sys::stat::SFlag::S_IFMT
        == nix::sys::stat::SFlag::S_IFIFO;
    if !fifo || st.st_ino != ino {
        return Err(stale_link(fd_path, ino));
    }
    if st.st_dev != pipefs_dev()?
        && parse_pipe_link(std::fs::read_link(fd_path)?.as_os_str().as_encoded_bytes()) != Some(ino)
    {
        return Err(stale_link(fd_path, ino));
    }
    Ok(pinned)
}

/// The device of pipefs, the kernel's one internal mount of every `pipe()` (`pipe_mnt`,
/// fs/pipe.c), learnt once from a pipe of the inspector's own.
///
/// # Errors
///
/// The `pipe2`/`fstat` error (tried again on the next call).
fn pipefs_dev() -> io::Result<u64> {
    static DEV: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(&dev) = DEV.get() {
        return Ok(dev);
    }
    let (reader, _writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let dev = nix::sys::stat::fstat(&reader)?.st_dev;
    Ok(*DEV.get_or_init(|| dev))
}

fn stale_link(fd_path: &Path, ino: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} no longer refers to pipe {ino}", fd_path.display()),
    )
}

mod ioctl {
    //! The one ioctl of the core: `FIONREAD` (bytes queued in a pipe).
    #![allow(missing_docs)]
    nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);
}

/// `ioctl(fd, FIONREAD, &n)`.
fn fionread(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call, on
    // an fd that `file` keeps open for the duration of the call.
    #[allow(unsafe_code)]
    unsafe {
        ioctl::fionread(file.as_raw_fd(), &mut queued)?;
    }
    u64::try_from(queued).map_err(|_| io::Error::other("FIONREAD returned a negative count"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn read_and_write_ends_follow_criu_flag_tests() {
        let end = |flags| PipeEnd {
            pid: 1,
            fd: 3,
            flags,
        };
        assert!(end(0o2000000).is_read_end()); // O_RDONLY|O_CLOEXEC
        assert!(end(0o2).is_read_end()); // O_RDWR counts as a read end for CRIU
        assert!(!end(0o40001).is_read_end()); // O_WRONLY|O_DIRECT: the kernel's write end
        assert!(end(0o40001).is_write_end());
        assert!(!end(0o2).is_write_end());
    }

    #[test]
    fn fionread_counts_queued_bytes_without_consuming_them() {
        use std::io::{Read, Write};
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(&[7u8; 304]).unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&reader));
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(Fionread.queued_bytes(Path::new(&path), ino).unwrap(), 304);
        assert_eq!(Fionread.queued_bytes(Path::new(&path), ino).unwrap(), 304);
        drop(writer);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 304, "the probe must not consume anything");
    }

    #[test]
    fn reader_count_is_read_without_writing_or_waiting() {
        use std::io::Read;
        let (reader, writer) = std::io::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&writer));
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(
            Fionread.has_readers(Path::new(&path), ino).unwrap(),
            Some(true)
        );
        let mut reader = reader;
        let mut nothing = [0u8; 1];
        nix::fcntl::fcntl(
            &reader,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        assert!(reader.read(&mut nothing).is_err(), "nothing was written");
        drop(reader);
        assert_eq!(
            Fionread.has_readers(Path::new(&path), ino).unwrap(),
            Some(false)
        );
    }

    #[test]
    fn the_pin_is_a_path_and_never_a_reader_of_the_pipe() {
        // std's `custom_flags` drops `O_PATH` on musl (its `O_ACCMODE` includes it), which
        // made the static build's pin a blocking read-only open of the pipe: a reader of a
        // pipe that had none, or a wait for a writer that never came. Run by scripts/check-image
        // for the musl target too.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&writer));
        let ino = std::fs::metadata(&path).unwrap().ino();
        let pinned = pin_pipe(Path::new(&path), ino).unwrap();
        let flags = nix::fcntl::OFlag::from_bits_retain(
            nix::fcntl::fcntl(&pinned, nix::fcntl::FcntlArg::F_GETFL).unwrap(),
        );
        assert!(flags.contains(nix::fcntl::OFlag::O_PATH), "{flags:?}");
        assert_eq!(
            Fionread.has_readers(Path::new(&path), ino).unwrap(),
            Some(false),
            "the pin is a reader of the pipe"
        );
        drop(pinned);
    }

    #[test]
    fn a_leaders_whole_table_is_listed_and_its_packet_mode_ends_of_other_pipes_kept() {
        use std::os::fd::AsRawFd;
        let ino_of = |fd: &dyn AsRawFd| {
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .unwrap()
                .ino()
        };
        // This process as a leader: its own pipe first, filler, another wanted pipe's ends,
        // a pipe in packet mode (as an autofs pipe whose mount is gone) and a plain one.
        let (own_r, own_w) = std::io::pipe().unwrap();
        let filler: Vec<File> = (0..20).map(|_| File::open("/dev/null").unwrap()).collect();
        let (other_r, other_w) = std::io::pipe().unwrap();
        let (packet_r, packet_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_DIRECT).unwrap();
        let (plain_r, plain_w) = std::io::pipe().unwrap();
        let (own, other, packet) = (ino_of(&own_r), ino_of(&other_r), ino_of(&packet_r));
        let pid = i32::try_from(std::process::id()).unwrap();
        let root = ProcRoot::open("/proc").unwrap();
        let own_w_fd = own_w.as_raw_fd();
        let leaders = BTreeMap::from([(pid, vec![(own, own_w_fd)])]);
        let mut index = PipeIndex::default();
        index.scan_leaders(&root, &leaders, &HashSet::from([own, other]));
        let ends =
            |index: &PipeIndex, ino| -> Vec<i32> { index.ends(ino).iter().map(|e| e.fd).collect() };
        assert_eq!(ends(&index, own), [own_r.as_raw_fd(), own_w_fd]);
        assert_eq!(
            ends(&index, other),
            [other_r.as_raw_fd(), other_w.as_raw_fd()],
            "the listing goes past the read end"
        );
        assert_eq!(
            index.leader_packet_mode_ends(pid),
            Some(&Ok(vec![PacketModeEnd {
                fd: packet_w.as_raw_fd(),
                ino: packet
            }])),
            "the write end of the pipe in packet mode (`pipe2()` sets `O_DIRECT` on it alone), \
             not the plain pipe's"
        );
        assert_eq!(index.leader_packet_mode_ends(1), None, "not a leader");
        drop((filler, packet_r, plain_r, plain_w));
    }

    #[test]
    fn fionread_refuses_a_named_fifo_with_the_pipes_inode_number() {
        // A FIFO in a directory: its inode number, but not on pipefs. The probe must not open
        // it (a reader would wake its blocked writers).
        let dir = std::env::temp_dir().join(format!("autofs-core-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let ino = reader.metadata().unwrap().ino();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&reader));
        let err = Fionread.queued_bytes(Path::new(&path), ino);
        let readers = Fionread.has_readers(Path::new(&path), ino);
        std::fs::remove_dir_all(&dir).unwrap();
        let err = err.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("no longer refers to pipe {ino}")),
            "{err}"
        );
        assert!(readers.is_err(), "{readers:?}");
    }

    #[test]
    fn fionread_measures_a_fixture_trees_fifo_named_as_a_pipe() {
        // A fixture tree stands a FIFO in for a pipe: `1/fd/30` is a symbolic link whose
        // text is `pipe:[ino]`, the name of a hard link to the FIFO beside it. Not on
        // pipefs, but named as a pipe by the link itself: measured.
        let dir = std::env::temp_dir().join(format!("autofs-core-fixfifo-{}", std::process::id()));
        let fd_dir = dir.join("1/fd");
        std::fs::create_dir_all(&fd_dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let ino = std::fs::metadata(&fifo).unwrap().ino();
        std::fs::hard_link(&fifo, fd_dir.join(format!("pipe:[{ino}]"))).unwrap();
        std::os::unix::fs::symlink(format!("pipe:[{ino}]"), fd_dir.join("30")).unwrap();
        // Five bytes queued, held by a reader-writer of our own.
        let mut holder = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        std::io::Write::write_all(&mut holder, b"12345").unwrap();
        let queued = Fionread.queued_bytes(&fd_dir.join("30"), ino);
        let other = Fionread.queued_bytes(&fd_dir.join("30"), ino + 1);
        drop(holder);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(queued.unwrap(), 5);
        assert!(other.is_err(), "another inode number: {other:?}");
    }

    #[test]
    fn fionread_refuses_a_link_that_now_points_elsewhere() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&reader));
        let err = Fionread.queued_bytes(Path::new(&path), 1).unwrap_err();
        assert!(
            err.to_string().contains("no longer refers to pipe 1"),
            "{err}"
        );
    }
}
