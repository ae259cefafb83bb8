//! Raw /proc access without allocation or parsing, shared by the reference measurements.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::libc;
use nix::sys::stat::Mode;

/// A reusable NUL-terminated path buffer.
pub struct CPath(pub String);

impl CPath {
    /// The path formatted from `args`, NUL-terminated.
    pub fn set(&mut self, args: std::fmt::Arguments<'_>) -> &CStr {
        self.0.clear();
        let _ = self.0.write_fmt(args);
        self.0.push('\0');
        CStr::from_bytes_with_nul(self.0.as_bytes()).expect("no interior NUL")
    }
}

/// `readlinkat` into a caller's buffer (no allocation).
pub fn readlink_raw(dir: BorrowedFd<'_>, path: &CStr, buf: &mut [u8]) -> isize {
    // SAFETY: `path` is NUL-terminated and `buf` is valid for `buf.len()` bytes.
    #[allow(unsafe_code)]
    unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    }
}

/// Reads the links of `<pid>/fd` by fd number, `0, 1, 2, …`, as the scan walks a fd table,
/// until it has read as many as the table holds (the size procfs gives `<pid>/fd`) or `visit`
/// returns false. The bench's fd tables are dense: no listing of a sparse tail; a run of 64
/// absent numbers (a process that exited meanwhile) ends the walk. Panics on a kernel that
/// gives no count (before Linux 6.2), whose figures would otherwise omit the walk.
pub fn walk_fds(
    proc: BorrowedFd<'_>,
    pid: i32,
    path: &mut CPath,
    link: &mut [u8],
    mut visit: impl FnMut(i32, &[u8]) -> bool,
) {
    let Ok(dir) = openat(
        proc,
        path.set(format_args!("{pid}/fd")),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let open = nix::sys::stat::fstat(dir.as_fd()).map_or(0, |st| st.st_size);
    assert!(
        open > 0,
        "/proc/{pid}/fd reports no open fds: this kernel does not count them (Linux < 6.2)"
    );
    let (mut seen, mut fd, mut misses) = (0, 0, 0);
    while seen < open && misses < 64 {
        if let Ok(n) = usize::try_from(readlink_raw(
            dir.as_fd(),
            path.set(format_args!("{fd}")),
            link,
        )) {
            seen += 1;
            misses = 0;
            if !visit(fd, &link[..n]) {
                return;
            }
        } else {
            misses += 1;
        }
        fd += 1;
    }
}

/// Whether the fd link `path` (relative to `dir`) is open for reading: one `lstat`, whose mode
/// procfs gives `S_IRUSR` for a file opened for reading.
pub fn link_readable(dir: BorrowedFd<'_>, path: &CStr) -> bool {
    nix::sys::stat::fstatat(dir, path, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & 0o400 != 0)
}

/// Reads `path` (relative to `dir`) whole into `buf`: `openat`, `read` until EOF, `close` —
/// no `statx`/`lseek` size probe (proc files report size 0) and no allocation once `buf` is
/// large enough.
pub fn read_rel(dir: BorrowedFd<'_>, path: &CStr, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Ok(fd) = open_rel(dir, path) else {
        return false;
    };
    read_to_eof(fd.as_fd(), buf)
}

/// `openat(dir, path)` for reading, not following a final symlink.
fn open_rel(dir: BorrowedFd<'_>, path: &CStr) -> nix::Result<std::os::fd::OwnedFd> {
    openat(
        dir,
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
}

/// Appends what `fd` still has to `buf`, reading until a `read` returns 0.
fn read_to_eof(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> bool {
    loop {
        let len = buf.len();
        buf.resize(len + 16384, 0);
        match nix::unistd::read(fd, &mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return true;
            }
            Ok(n) => buf.truncate(len + n),
            Err(Errno::EINTR) => buf.truncate(len),
            Err(_) => {
                buf.truncate(len);
                return false;
            }
        }
    }
}

/// Reads a file procfs renders as one record (`stat`, `status`, `cgroup`) into `buf` as the
/// scan does (`ProcRoot::read_record`): one `read` when it comes back shorter than the page
/// offered, else on to EOF as [`read_rel`] does.
pub fn read_record_rel(dir: BorrowedFd<'_>, path: &CStr, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Ok(fd) = open_rel(dir, path) else {
        return false;
    };
    buf.resize(4096, 0);
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf[..]) {
            Ok(n) if n < 4096 => {
                buf.truncate(n);
                return true;
            }
            Ok(_) => return read_to_eof(fd.as_fd(), buf),
            Err(Errno::EINTR) => {}
            Err(_) => {
                buf.clear();
                return false;
            }
        }
    }
}

pub fn unsafe_borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: callers pass fds that stay open for as long as the borrow is used (the readiness
    // pipe in a child, or a `Dir`'s fd while the `Dir` is alive).
    #[allow(unsafe_code)]
    unsafe {
        BorrowedFd::borrow_raw(fd)
    }
}

/// The first pid (in `pids` order) of each mount namespace, keyed by its `ns/mnt` link text:
/// one `readlink` of every process, as the scan and CRIU's lookup both must.
pub fn first_member_of_each_namespace(
    proc: BorrowedFd<'_>,
    pids: &[i32],
    path: &mut CPath,
    link: &mut [u8],
) -> std::collections::HashMap<Vec<u8>, i32> {
    let mut first_of_ns = std::collections::HashMap::new();
    for &pid in pids {
        let n = readlink_raw(proc, path.set(format_args!("{pid}/ns/mnt")), link);
        if let Ok(n) = usize::try_from(n)
            && !first_of_ns.contains_key(&link[..n])
        {
            first_of_ns.insert(link[..n].to_vec(), pid);
        }
    }
    first_of_ns
}

/// Reopens a pipe's read end (`path` below `dir`) non-blocking and polls it for queued data
/// without waiting, as CRIU's §3.5 check does; nothing is read. The number of ready fds
/// (0 or 1), `None` when the end could not be reopened.
pub fn poll_read_end(dir: BorrowedFd<'_>, path: &CStr) -> Option<i32> {
    let end = openat(
        dir,
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut pfd = libc::pollfd {
        fd: end.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    Some(ready)
}

/// `/proc` opened as a directory, for `openat`/`readlinkat` relative to it.
pub fn open_proc() -> OwnedFd {
    nix::fcntl::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("/proc")
}

/// The pids listed in `/proc` (readdir of a fresh open: `/proc` is listed anew each time).
pub fn list_pids(proc: BorrowedFd<'_>) -> Vec<i32> {
    let mut pids = Vec::with_capacity(8192);
    let mut root = Dir::openat(
        proc,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("/proc");
    for entry in root.iter().flatten() {
        let name = entry.file_name().to_bytes();
        if name.first().is_some_and(u8::is_ascii_digit) {
            pids.push(name.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')));
        }
    }
    pids
}

/// Adds the time since `last` to `spent[phase]` and moves `last` to now: the floors' per-phase
/// breakdowns.
pub fn lap<const N: usize>(last: &mut Instant, spent: &mut [Duration; N], phase: usize) {
    let now = Instant::now();
    spent[phase] += now - *last;
    *last = now;
}
