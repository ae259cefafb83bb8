//! Thin wrappers around the raw syscalls the scenario init needs and that neither std
//! nor nix wrap safely (fork, fd renumbering, autofs ioctls, statx, `_exit`).
//!
//! Why `unsafe` is acceptable here: the init is single-threaded, so `fork` cannot leave
//! another thread's lock held in the child; every other call only passes pointers to
//! live locals or plain integers. Each block states its own invariant.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `AUTOFS_IOC_READY`.
pub const AUTOFS_IOC_READY: libc::c_ulong = 0x9360;
/// `AUTOFS_IOC_FAIL`.
pub const AUTOFS_IOC_FAIL: libc::c_ulong = 0x9361;
/// `AUTOFS_IOC_SETTIMEOUT` (64-bit `unsigned long` in/out).
pub const AUTOFS_IOC_SETTIMEOUT: libc::c_ulong = 0xC008_9364;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Result of [`fork`].
pub enum Fork {
    /// In the parent, with the child's pid (in the parent's pid namespace).
    Parent(i32),
    /// In the child.
    Child,
}

/// `fork(2)`.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the scenario init (and every process it forks) is single-threaded, so the
    // child cannot inherit a lock held by another thread; the child only runs our own code.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// `_exit(2)`: leaves without running exit handlers or flushing the parent's stdio copies.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// `dup2(old, new)` on raw fd numbers.
pub fn dup2(old: i32, new: i32) -> io::Result<()> {
    // SAFETY: plain integers; the caller owns both fd numbers (it is renumbering its own fds).
    check(unsafe { libc::dup2(old, new) }).map(drop)
}

/// `close(fd)` on a raw fd number the caller owns and no Rust object owns.
pub fn close(fd: i32) -> io::Result<()> {
    // SAFETY: plain integer; the callers only close fds that no `OwnedFd` refers to.
    check(unsafe { libc::close(fd) }).map(drop)
}

/// Closes every fd `>= first` (`close_range(2)`).
pub fn close_from(first: u32) {
    // SAFETY: plain integers. Used right after fork in a child whose Rust objects that
    // own fds in that range are never used again (the child ends with `exit_now`), or first
    // thing in `main` of pid 1, where no Rust object owns an fd yet.
    unsafe {
        libc::close_range(first, u32::MAX, 0);
    }
}

/// Points fds 0 and 1 at `/dev/null`, so a child never writes on the protocol stdout.
pub fn stdio_to_devnull() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    dup2(null.as_raw_fd(), 0)?;
    dup2(null.as_raw_fd(), 1)?;
    Ok(())
}

/// Sets SIGPIPE to `SIG_IGN`.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN has no handler code to be unsafe about.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Restores the default SIGPIPE disposition (Rust binaries start with it ignored, and an
/// ignored signal stays ignored across exec).
pub fn default_sigpipe() {
    // SAFETY: installing SIG_DFL has no handler code to be unsafe about.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `AUTOFS_IOC_SETTIMEOUT` on `fd` (an autofs root): sets `secs`, returns the old value.
pub fn autofs_set_timeout(fd: i32, secs: u64) -> io::Result<u64> {
    let mut v: libc::c_ulong = secs as libc::c_ulong;
    // SAFETY: the ioctl reads and writes one `unsigned long` through a pointer to a live local.
    check(unsafe { libc::ioctl(fd, AUTOFS_IOC_SETTIMEOUT, &mut v as *mut libc::c_ulong) })?;
    Ok(v as u64)
}

/// `AUTOFS_IOC_READY`/`AUTOFS_IOC_FAIL` (`cmd`) with `token` on `fd` (an autofs root).
pub fn autofs_answer(fd: i32, cmd: libc::c_ulong, token: u32) -> io::Result<()> {
    // SAFETY: the argument is passed by value (an integer token), no memory is touched.
    check(unsafe { libc::ioctl(fd, cmd, token as libc::c_ulong) }).map(drop)
}

/// `statx(AT_FDCWD, path, 0, STATX_BASIC_STATS)` without `AT_NO_AUTOMOUNT`, so it springs
/// automount traps. Returns the errno on failure.
pub fn statx_triggering(path: &Path) -> Result<(), i32> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let mut buf = std::mem::MaybeUninit::<libc::statx>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `buf` is a writable statx buffer
    // that lives across the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// `pause(2)` forever (until a signal kills the process).
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: `pause` has no arguments.
        unsafe {
            libc::pause();
        }
    }
}

/// Closes every fd `>= 3` except those in `keep`.
pub fn close_all_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&f| f >= 3)
        .map(|&f| f as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next = 3u32;
    for k in keep {
        if k > next {
            // SAFETY: plain integers; see `close_from` for why closing these is fine.
            unsafe {
                libc::close_range(next, k - 1, 0);
            }
        }
        next = k + 1;
    }
    close_from(next);
}

/// Waits until `fd` is readable or `timeout_ms` passes; returns whether it is readable.
pub fn poll_readable(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack, count 1.
    let n = check(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(n > 0)
}

/// `read(2)` into `buf` from a raw fd.
pub fn read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
