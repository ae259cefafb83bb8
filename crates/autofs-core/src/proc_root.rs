//! The seam between the inspector and the kernel: every /proc read goes through a [`ProcRoot`],
//! so the same code runs on the live `/proc`, on `/host/proc` in a container, and on fixture trees.
//!
//! Reads are relative to an open directory fd (`openat`/`readlinkat`), which keeps path
//! resolution off the hot path of the fd census.

use std::ffi::{CStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::NixPath;
use nix::dir::Dir;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::fd_table;

/// A proc filesystem (or a fixture tree shaped like one).
#[derive(Debug)]
pub struct ProcRoot {
    path: PathBuf,
    dir: OwnedFd,
    procfs: bool,
    /// `(st_dev, st_ino)` of the directory opened: what the path must still name.
    identity: (u64, u64),
}

/// A relative path such as `<pid>/<rel>` or `<fd>`, NUL-terminated in a stack buffer: the
/// per-process and per-fd reads of a scan name their files without allocating.
pub(crate) struct PidPath {
    buf: [u8; 96],
}

impl PidPath {
    /// `<pid>/<rel>`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when the path does not fit or `rel` holds a zero byte (no caller's does).
    fn new(pid: i32, rel: &str) -> io::Result<Self> {
        Self::join(&[
            itoa::Buffer::new().format(pid).as_bytes(),
            b"/",
            rel.as_bytes(),
        ])
    }

    /// `<pid>/fd/<fd>`.
    ///
    /// # Errors
    ///
    /// As [`Self::new`].
    fn fd(pid: i32, fd: i32) -> io::Result<Self> {
        Self::join(&[
            itoa::Buffer::new().format(pid).as_bytes(),
            b"/fd/",
            itoa::Buffer::new().format(fd).as_bytes(),
        ])
    }

    /// `<fd>` alone, below an open `<pid>/fd`.
    ///
    /// # Errors
    ///
    /// As [`Self::new`] (never: a number fits).
    pub(crate) fn fd_name(fd: i32) -> io::Result<Self> {
        Self::join(&[itoa::Buffer::new().format(fd).as_bytes()])
    }

    fn join(parts: &[&[u8]]) -> io::Result<Self> {
        let mut buf = [0u8; 96];
        let mut at = 0;
        for part in parts {
            // A zero byte must remain after the path: the buffer is zero-filled.
            let end = at + part.len();
            if end >= buf.len() || part.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "/proc path {} is too long or holds a zero byte",
                        crate::escape::escape(&parts.concat())
                    ),
                ));
            }
            buf[at..end].copy_from_slice(part);
            at = end;
        }
        Ok(Self { buf })
    }

    pub(crate) fn as_c_str(&self) -> &CStr {
        // `new` leaves a zero byte after the path; without one this names the empty path,
        // which every call refuses (ENOENT).
        CStr::from_bytes_until_nul(&self.buf).unwrap_or_default()
    }
}

/// What became of a per-process read that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFailure {
    /// The process (or fd) is gone: normal churn, never fatal.
    Vanished,
    /// It exists but we may not read it (hidepid, missing capabilities).
    Denied,
    /// Anything else (I/O error, malformed fixture).
    Other,
}

impl ReadFailure {
    /// Classifies an I/O error from a per-process read.
    pub fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc_errno::ENOENT | libc_errno::ESRCH) => Self::Vanished,
            Some(libc_errno::EACCES | libc_errno::EPERM) => Self::Denied,
            _ => Self::Other,
        }
    }
}

/// `(st_dev, st_ino)` of an open directory.
fn dir_identity(dir: &impl AsFd) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(dir.as_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// errno values used for classification (kept local to avoid a libc dependency).
mod libc_errno {
    pub const EPERM: i32 = nix::errno::Errno::EPERM as i32;
    pub const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
    pub const ESRCH: i32 = nix::errno::Errno::ESRCH as i32;
    pub const EACCES: i32 = nix::errno::Errno::EACCES as i32;
}

impl ProcRoot {
    /// Opens a proc root.
    ///
    /// # Errors
    ///
    /// [`Error::ProcRoot`] with the path when the root is missing or unreadable.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let dir = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Error::ProcRoot {
            path: path.clone(),
            source: errno.into(),
        })?;
        let procfs = nix::sys::statfs::fstatfs(&dir)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        let identity = dir_identity(&dir).map_err(|source| Error::ProcRoot {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            dir,
            procfs,
            identity,
        })
    }

    /// Whether the root is a real proc filesystem (`statfs` magic `PROC_SUPER_MAGIC`), not a
    /// fixture tree. Only procfs lists `<pid>/fd` in ascending fd order and gives each
    /// process directory an inode number of its own (see [`ProcRoot::pid_entries`]).
    pub fn is_procfs(&self) -> bool {
        self.procfs
    }

    /// The path this root was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this root shows the caller's own pid namespace (`<root>/self` names the
    /// caller's pid): only then do its pids name the processes the caller can signal or open
    /// pidfds for. False for fixture trees and for a proc of another pid namespace.
    pub fn is_own_pid_namespace(&self) -> bool {
        self.read_link_file("self")
            .is_ok_and(|t| t.as_bytes() == std::process::id().to_string().as_bytes())
    }

    /// Reads the target of the symlink `<rel>` below the root itself (e.g. `self`,
    /// `self/ns/pid`), as [`Self::read_file`] reads files there.
    ///
    /// # Errors
    ///
    /// The `readlinkat` error.
    pub fn read_link_file(&self, rel: &str) -> io::Result<OsString> {
        Ok(readlinkat(self.dir.as_fd(), rel)?)
    }

    /// The id of the mount the root directory lies on, as the first field of `mountinfo`
    /// names it (`statx(2)` with `STATX_MNT_ID`, Linux 5.8): tells the proc mount apart from
    /// other mounts at the same path, or at a path that resolves elsewhere.
    ///
    /// # Errors
    ///
    /// The `statx` error, or `Unsupported` when the kernel does not report a mount id.
    pub fn mount_id(&self) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        // SAFETY: an all-zero statx is a valid value of this plain C struct.
        #[allow(unsafe_code)]
        let mut stx: nix::libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: statx reads the NUL-terminated empty path and writes one struct statx through
        // the pointer, both valid for the call, on a fd `self.dir` keeps open.
        #[allow(unsafe_code)]
        let rc = unsafe {
            nix::libc::statx(
                self.dir.as_raw_fd(),
                c"".as_ptr(),
                nix::libc::AT_EMPTY_PATH,
                nix::libc::STATX_MNT_ID,
                &raw mut stx,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if stx.stx_mask & nix::libc::STATX_MNT_ID == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel reports no mount id (STATX_MNT_ID needs Linux 5.8)",
            ));
        }
        Ok(stx.stx_mnt_id)
    }

    /// How many threads process `pid` has, from one `fstatat` of `<pid>/task` (procfs gives
    /// that directory 2 + the thread count as its link count); `None` where that does not
    /// hold (a fixture tree).
    ///
    /// # Errors
    ///
    /// The `fstatat` error (ENOENT when the process is gone).
    pub fn thread_count(&self, pid: i32) -> io::Result<Option<u64>> {
        if !self.procfs {
            return Ok(None);
        }
        let st = nix::sys::stat::fstatat(
            self.dir.as_fd(),
            PidPath::new(pid, "task")?.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(Some(st.st_nlink.saturating_sub(2)))
    }

    /// The thread ids of process `pid` other than `pid` itself (`<pid>/task`), ascending.
    ///
    /// # Errors
    ///
    /// The error of opening or listing `<pid>/task` (ENOENT when the process is gone).
    pub fn threads(&self, pid: i32) -> io::Result<Vec<i32>> {
        let mut tids = Vec::new();
        for entry in Dir::from_fd(self.open_dir(pid, "task")?)?.iter() {
            if let Some(tid) = parse_decimal::<i32>(entry?.file_name().to_bytes())
                && tid != pid
            {
                tids.push(tid);
            }
        }
        tids.sort_unstable();
        Ok(tids)
    }

    /// The children of process `pid` in the order CRIU's `parse_children()` reads them: the
    /// `task/<tid>/children` file of each of its threads, in the listing order of `<pid>/task`
    /// (the thread-group leader first), each in the kernel's order (the order they became
    /// children of that thread). A thread that exits meanwhile is skipped.
    ///
    /// # Errors
    ///
    /// The error of listing `<pid>/task` (ENOENT when the process is gone) or of reading a
    /// `children` file other than its thread being gone; `InvalidData` for a malformed one;
    /// `Unsupported` when a thread that is still there has no `children` file (a kernel
    /// without `CONFIG_PROC_CHILDREN`).
    pub fn children(&self, pid: i32) -> io::Result<Vec<i32>> {
        let mut children = Vec::new();
        for entry in Dir::from_fd(self.open_dir(pid, "task")?)?.iter() {
            let Some(tid) = parse_decimal::<i32>(entry?.file_name().to_bytes()) else {
                continue;
            };
            let rel = format!("task/{tid}/children");
            let text = match self.read(pid, &rel) {
                Ok(text) => text,
                // Gone with its thread; a thread still there without the file is a kernel
                // built without `CONFIG_PROC_CHILDREN` (which CRIU needs as well): its
                // children are unknown, never none.
                Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => {
                    if self.read_record(pid, &format!("task/{tid}/stat")).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "{} is missing while its thread runs: this kernel lists no children (CONFIG_PROC_CHILDREN)",
                                self.pid_path(pid, &rel).display()
                            ),
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for word in text
                .split(u8::is_ascii_whitespace)
                .filter(|w| !w.is_empty())
            {
                children.push(parse_decimal(word).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: not a pid list",
                            self.pid_path(pid, &format!("task/{tid}/children"))
                                .display()
                        ),
                    )
                })?);
            }
        }
        Ok(children)
    }

    /// Absolute path of `<root>/<pid>/<rel>`, for messages and reopening.
    pub fn pid_path(&self, pid: i32, rel: &str) -> PathBuf {
        self.path.join(pid.to_string()).join(rel)
    }

    /// Every numeric entry of the root: the visible processes (thread-group leaders).
    ///
    /// # Errors
    ///
    /// [`Error::ProcRoot`] when the root cannot be listed.
    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self
            .pid_entries()?
            .into_iter()
            .map(|(pid, _)| pid)
            .collect())
    }

    /// Every numeric entry of the root with the inode number its directory entry reports
    /// (`d_ino`), by ascending pid.
    ///
    /// On procfs that number tells one process from a later one that reused its pid: procfs
    /// gives a `/proc/<pid>` directory an inode number from the kernel's node-wide
    /// `get_next_ino()` counter when it instantiates it, keeps it while the process lives
    /// (unless memory pressure evicts the entry, which yields a new number), and drops the
    /// entry when the process is reaped (`proc_flush_pid()`), so a later holder of the pid gets
    /// a new number. The same number on the same pid is the same process, unless the 32-bit
    /// counter wrapped in between and landed on it again. On other trees the number is the
    /// file system's and says nothing about processes.
    ///
    /// # Errors
    ///
    /// [`Error::ProcRoot`] when the root cannot be listed.
    pub fn pid_entries(&self) -> Result<Vec<(i32, u64)>> {
        let fatal = |source: io::Error| Error::ProcRoot {
            path: self.path.clone(),
            source,
        };
        // Reopened by path on every scan: a proc root that went away (an unmounted
        // /host/proc) must fail the scan, not look like a machine without processes; and the
        // path must still name the directory every `<pid>/…` is read through, or listing and
        // reads would see two different machines (another proc mounted over the path) or the
        // listing an empty directory (a lazily unmounted one).
        let mut dir = Dir::open(
            &self.path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fatal(e.into()))?;
        if dir_identity(&dir).map_err(fatal)? != self.identity {
            return Err(fatal(io::Error::other(
                "the path no longer names the directory the inspector opened (something was mounted over it, or it was unmounted or replaced); restart the inspector to read what is there now",
            )));
        }
        let mut pids = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| fatal(e.into()))?;
            if let Some(pid) = parse_decimal::<i32>(entry.file_name().to_bytes()) {
                pids.push((pid, entry.ino()));
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Reads `<pid>/<rel>` whole, as bytes (proc files are generated on read; one read loop
    /// each). /proc text is bytes: paths, process names and cgroup paths need not be UTF-8.
    ///
    /// # Errors
    ///
    /// The `openat`/`read` error; [`ReadFailure::of`] tells a vanished process from a denied
    /// read.
    pub fn read(&self, pid: i32, rel: &str) -> io::Result<Vec<u8>> {
        self.read_whole(PidPath::new(pid, rel)?.as_c_str(), OFlag::O_NOFOLLOW)
    }

    /// Reads `<pid>/<rel>` whole, as [`Self::read`] does, for a file procfs generates as one
    /// record (`stat`, `status`, `cgroup`: `single_open()` files): `seq_read_iter()` renders
    /// such a record whole and copies as much of it as the reader's buffer takes, so a read
    /// that returns less than its buffer returned all of it, and the read returning 0 that
    /// would confirm the end is skipped. A longer record is read on to the end. Not for
    /// `mountinfo` or the id maps, which are rendered line by line and can come back short
    /// before their end.
    ///
    /// # Errors
    ///
    /// As [`Self::read`].
    pub fn read_record(&self, pid: i32, rel: &str) -> io::Result<Vec<u8>> {
        let mut file = self.open_file(PidPath::new(pid, rel)?.as_c_str(), OFlag::O_NOFOLLOW)?;
        let mut text = vec![0; RECORD_BUFFER];
        let n = loop {
            match file.read(&mut text) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => break read?,
            }
        };
        text.truncate(n);
        if n == RECORD_BUFFER {
            (&mut file).take(u64::MAX).read_to_end(&mut text)?;
        }
        Ok(text)
    }

    /// Reads `<rel>` below the root itself (e.g. `self/mountinfo`, `self/status`).
    ///
    /// # Errors
    ///
    /// The `openat`/`read` error.
    pub fn read_file(&self, rel: &str) -> io::Result<Vec<u8>> {
        self.read_whole(rel, OFlag::empty())
    }

    /// Opens `rel` below the root with `extra` flags and reads it to the end.
    fn read_whole<P: ?Sized + NixPath>(&self, rel: &P, extra: OFlag) -> io::Result<Vec<u8>> {
        let (text, _) = self.read_open(rel, extra)?;
        Ok(text)
    }

    /// Opens `rel` below the root with `extra` flags, reads it to the end, and returns the
    /// text with the file, still open.
    fn read_open<P: ?Sized + NixPath>(
        &self,
        rel: &P,
        extra: OFlag,
    ) -> io::Result<(Vec<u8>, OwnedFd)> {
        let mut file = self.open_file(rel, extra)?;
        // `Take` hides the file's size hint: proc files report size 0, so std's statx+lseek
        // probe would only cost two syscalls per read. One page takes a `stat`, `status` or
        // `cgroup` whole in one read (a seq_file fills the reader's buffer): with less, std
        // would add a probing read and a refill.
        let mut text = Vec::with_capacity(4096);
        (&mut file).take(u64::MAX).read_to_end(&mut text)?;
        Ok((text, file.into()))
    }

    /// Opens `rel` below the root for reading, with `extra` flags.
    fn open_file<P: ?Sized + NixPath>(&self, rel: &P, extra: OFlag) -> io::Result<File> {
        Ok(File::from(openat(
            self.dir.as_fd(),
            rel,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | extra,
            Mode::empty(),
        )?))
    }

    /// Reads `<pid>/<rel>` as [`Self::read`] does and keeps the file open: an open
    /// `mountinfo` reports, when polled, every change of the mount table since it was opened
    /// (`mounts_poll`, fs/proc_namespace.c), so a watch that adopts it misses nothing made
    /// after this read.
    ///
    /// # Errors
    ///
    /// The `openat`/`read` error; [`ReadFailure::of`] tells a vanished process from a denied
    /// one.
    pub fn read_keeping_open(&self, pid: i32, rel: &str) -> io::Result<(Vec<u8>, OwnedFd)> {
        self.read_open(PidPath::new(pid, rel)?.as_c_str(), OFlag::O_NOFOLLOW)
    }

    /// Reads the target of the symlink `<pid>/<rel>` (e.g. `ns/mnt` → `mnt:[4026531841]`).
    ///
    /// # Errors
    ///
    /// The `readlinkat` error.
    pub fn read_link(&self, pid: i32, rel: &str) -> io::Result<OsString> {
        Ok(readlinkat(
            self.dir.as_fd(),
            PidPath::new(pid, rel)?.as_c_str(),
        )?)
    }

    /// The `lstat` of `<pid>/root/<path>` (`None` when it does not exist), looked up without
    /// following a final symlink and without triggering an automount on the last component
    /// (`AT_NO_AUTOMOUNT`). Every directory on the way is still walked: callers must know that
    /// none of them is an autofs mount (a walk onto an autofs trap would send the daemon a
    /// request).
    ///
    /// # Errors
    ///
    /// The `fstatat` error other than ENOENT (which is `Ok(None)`).
    pub fn lstat_in_root(
        &self,
        pid: i32,
        path: &str,
    ) -> io::Result<Option<nix::sys::stat::FileStat>> {
        let rel = format!("{pid}/root/{}", path.trim_start_matches('/'));
        match nix::sys::stat::fstatat(
            self.dir.as_fd(),
            rel.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW | nix::fcntl::AtFlags::AT_NO_AUTOMOUNT,
        ) {
            Ok(st) => Ok(Some(st)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Inode of the mount namespace of `pid` (`<pid>/ns/mnt`). Reads the link into stack
    /// buffers: it runs once per process per scan.
    ///
    /// # Errors
    ///
    /// The `readlinkat` error, or `InvalidData` when the link is not a mount namespace link.
    pub fn mount_namespace(&self, pid: i32) -> io::Result<u64> {
        let path = PidPath::new(pid, "ns/mnt")?;
        let mut target = [0u8; 64];
        let n = readlink_into(&self.dir, path.as_c_str(), &mut target)?;
        parse_ns_link(&target[..n], "mnt").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a mount namespace link",
                    self.pid_path(pid, "ns/mnt").display()
                ),
            )
        })
    }

    /// Reads the link of every fd of `pid` numbered `from` or above, calling
    /// `visit(fd, target)` for each in ascending fd order on procfs (listing order on a
    /// fixture tree), until `visit` breaks; see [`fd_table::walk`] for how. A fd closed
    /// meanwhile is skipped. Returns how many links were read and whether the walk reached
    /// the end of the table.
    ///
    /// # Errors
    ///
    /// The error of opening `<pid>/fd`, or of walking it ([`fd_table::walk`]).
    pub fn for_each_fd(
        &self,
        pid: i32,
        from: i32,
        visit: impl FnMut(i32, &[u8]) -> ControlFlow<()>,
    ) -> io::Result<(usize, bool)> {
        let walked = fd_table::walk(self.open_dir(pid, "fd")?, self.procfs, from, visit)?;
        Ok((walked.links, walked.complete))
    }

    /// Opens the directory `<pid>/<rel>` relative to the root.
    fn open_dir(&self, pid: i32, rel: &str) -> io::Result<OwnedFd> {
        Ok(openat(
            self.dir.as_fd(),
            PidPath::new(pid, rel)?.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// The access mode (`O_ACCMODE` bits) of `<pid>/fd/<fd>` from one `lstat` of the link
    /// ([`fd_table::access_mode_of_link`]); `None` on a fixture tree and for a fd whose mode
    /// the link does not tell (`O_PATH`): read `fdinfo` then.
    ///
    /// # Errors
    ///
    /// The `fstatat` error (ENOENT when the fd or the process is gone).
    pub fn fd_access_mode(&self, pid: i32, fd: i32) -> io::Result<Option<u32>> {
        if !self.procfs {
            return Ok(None);
        }
        let st = nix::sys::stat::fstatat(
            self.dir.as_fd(),
            PidPath::fd(pid, fd)?.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(fd_table::access_mode_of_link(st.st_mode))
    }
}

/// The first read of [`ProcRoot::read_record`]: a page takes a `stat`, `status` or `cgroup`
/// whole.
const RECORD_BUFFER: usize = 4096;

/// `readlinkat(dir, path)` into `buf`, without allocating (nix's `readlinkat` returns an
/// `OsString`): the target's length, truncated to `buf`'s.
///
/// # Errors
///
/// The `readlinkat` error.
pub(crate) fn readlink_into(
    dir: &impl std::os::fd::AsRawFd,
    path: &CStr,
    buf: &mut [u8],
) -> std::result::Result<usize, nix::errno::Errno> {
    // SAFETY: `path` is NUL-terminated and `buf` is valid for writes of its length.
    #[allow(unsafe_code)]
    let n = unsafe {
        nix::libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).map_err(|_| nix::errno::Errno::last())
}

/// Parses a non-negative decimal of type `T` (digits only: no sign, no space); `None` for
/// anything else, overflow included.
pub(crate) fn parse_decimal<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses a namespace link target such as `mnt:[4026531841]` into its inode.
pub(crate) fn parse_ns_link(target: &[u8], kind: &str) -> Option<u64> {
    let rest = target.strip_prefix(kind.as_bytes())?.strip_prefix(b":[")?;
    let digits = rest.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parses an fd link target `pipe:[12345]` into the pipe inode.
pub(crate) fn parse_pipe_link(target: &[u8]) -> Option<u64> {
    parse_ns_link(target, "pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_paths_are_nul_terminated_and_refuse_what_does_not_fit() {
        let path = PidPath::fd(2147483647, 2147483647).unwrap();
        assert_eq!(path.as_c_str().to_bytes(), b"2147483647/fd/2147483647");
        let name = PidPath::fd_name(i32::MIN).unwrap();
        assert_eq!(name.as_c_str().to_bytes(), b"-2147483648");
        assert_eq!(
            PidPath::new(-1, "ns/mnt").unwrap().as_c_str().to_bytes(),
            b"-1/ns/mnt"
        );
        let long = "x".repeat(93); // 1 + 1 + 93 = 95 bytes, with room for the NUL
        assert_eq!(
            PidPath::new(1, &long).unwrap().as_c_str().to_bytes().len(),
            95
        );
        let err = PidPath::new(1, &"x".repeat(94)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = PidPath::new(1, "st\0at").err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn namespace_and_pipe_links_parse_only_when_well_formed() {
        assert_eq!(parse_ns_link(b"mnt:[4026531841]", "mnt"), Some(4026531841));
        assert_eq!(parse_ns_link(b"pid:[1]", "mnt"), None);
        assert_eq!(parse_pipe_link(b"pipe:[77]"), Some(77));
        assert_eq!(parse_pipe_link(b"pipe:[77"), None);
        assert_eq!(parse_pipe_link(b"socket:[77]"), None);
        assert_eq!(parse_pipe_link(b"pipe:[x]"), None);
    }

    #[test]
    fn decimal_names_reject_everything_but_digits() {
        assert_eq!(parse_decimal::<i32>(b"123"), Some(123));
        assert_eq!(parse_decimal::<i32>(b"self"), None);
        assert_eq!(parse_decimal::<i32>(b""), None);
        assert_eq!(parse_decimal::<i32>(b"99999999999"), None);
        assert_eq!(parse_decimal::<u32>(b"-1"), None);
    }

    #[test]
    fn missing_proc_root_is_fatal_with_the_path() {
        let err = ProcRoot::open("/nonexistent/proc-root").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/proc-root"), "{err}");
    }

    #[test]
    fn a_record_is_read_whole_whatever_its_length() {
        let dir = std::env::temp_dir().join(format!("autofs-core-record-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("7")).unwrap();
        let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(dir.join("7/stat"), &long).unwrap();
        std::fs::write(dir.join("7/cgroup"), b"0::/\n").unwrap();
        let fixture = ProcRoot::open(&dir).unwrap();
        let (stat, cgroup) = (
            fixture.read_record(7, "stat"),
            fixture.read_record(7, "cgroup"),
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stat.unwrap(), long);
        assert_eq!(cgroup.unwrap(), b"0::/\n");
        // procfs: one read gives what a read to the end gives.
        let proc = ProcRoot::open("/proc").unwrap();
        let own = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            proc.read_record(own, "cgroup").unwrap(),
            proc.read(own, "cgroup").unwrap()
        );
        let err = proc.read_record(i32::MAX, "stat").unwrap_err();
        assert_eq!(ReadFailure::of(&err), ReadFailure::Vanished, "{err}");
    }
}
