//! Small host-side `/proc` readers used by tests to check what a scenario built.
//!
//! Everything here only reads `/proc`; nothing resolves a path inside an autofs
//! mount, so nothing can trigger or block on one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoLine {
    /// Field 1: mount id.
    pub mount_id: u32,
    /// Field 2: parent mount id.
    pub parent_id: u32,
    /// Field 3: `major:minor` of the superblock.
    pub dev: String,
    /// Field 4: root of the mount within its filesystem.
    pub root: String,
    /// Field 5: mount point (octal escapes such as `\040` decoded).
    pub mount_point: PathBuf,
    /// Field 6: per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type after the `-` separator (`autofs`).
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Superblock options (`rw,fd=5,pgrp=812,timeout=0,...`).
    pub super_options: String,
    /// The unparsed line.
    pub raw: String,
}

impl MountInfoLine {
    /// Parses one mountinfo line.
    pub fn parse(line: &str) -> Option<MountInfoLine> {
        Self::parse_bytes(line.as_bytes())
    }

    /// Parses one mountinfo line given as bytes: the mount point keeps its exact bytes (paths
    /// need not be UTF-8); the other fields are read lossily.
    pub fn parse_bytes(bytes: &[u8]) -> Option<MountInfoLine> {
        use std::os::unix::ffi::OsStringExt;
        let point = bytes.split(|&b| b == b' ').nth(4)?;
        let mount_point = PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(point)));
        let line = String::from_utf8_lossy(bytes);
        let line = line.as_ref();
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if sep < 6 || fields.len() < sep + 4 {
            return None;
        }
        Some(MountInfoLine {
            mount_id: fields[0].parse().ok()?,
            parent_id: fields[1].parse().ok()?,
            dev: fields[2].to_string(),
            root: unescape(fields[3]),
            mount_point,
            mount_options: fields[5].to_string(),
            fstype: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
            super_options: fields[sep + 3].to_string(),
            raw: line.to_string(),
        })
    }

    /// The value of superblock option `key` (`fd`, `pgrp`, `pipe_ino`, ...).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.super_options
            .split(',')
            .find_map(|o| o.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// Whether the superblock options contain the bare flag `flag` (`direct`, `strictexpire`).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.super_options.split(',').any(|o| o == flag)
    }

    /// `option(key)` parsed as an integer (`-1` allowed).
    pub fn int_option(&self, key: &str) -> Option<i64> {
        self.option(key)?.parse().ok()
    }
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s.as_bytes())).into_owned()
}

fn unescape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Reads and parses `/proc/self/mountinfo` of the calling process.
///
/// # Errors
///
/// The error of reading the file. Lines that do not parse are skipped, not errors.
pub fn read_mountinfo_self() -> io::Result<Vec<MountInfoLine>> {
    parse_table(&fs::read("/proc/self/mountinfo")?)
}

/// Reads and parses `/proc/<pid>/mountinfo` (the mount table of `pid`'s mount namespace).
///
/// # Errors
///
/// The error of reading the file (`NotFound` when `pid` is gone). Lines that do not parse are
/// skipped, not errors.
pub fn read_mountinfo(pid: i32) -> io::Result<Vec<MountInfoLine>> {
    parse_table(&fs::read(format!("/proc/{pid}/mountinfo"))?)
}

/// Parses a whole mount table given as bytes.
///
/// # Errors
///
/// Never: lines that do not parse are skipped.
pub fn parse_table(text: &[u8]) -> io::Result<Vec<MountInfoLine>> {
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(MountInfoLine::parse_bytes)
        .collect())
}

/// The `NSpid:` values of the calling process (via the host's `/proc/self`).
///
/// # Errors
///
/// The error of reading `/proc/self/status`, or an error when it has no `NSpid:` line (a kernel
/// older than 4.1).
pub fn nspid_self() -> io::Result<Vec<i32>> {
    nspid_of("self")
}

/// The `NSpid:` values of `pid` (outermost first; the first is the host pid).
///
/// # Errors
///
/// The error of reading `/proc/<pid>/status` (`NotFound` when `pid` is gone), or an error naming
/// `pid` when it has no `NSpid:` line (a kernel older than 4.1).
pub fn nspid(pid: i32) -> io::Result<Vec<i32>> {
    nspid_of(pid)
}

/// The `NSpid:` values of one task, named as `/proc` names it (`"thread-self"`, or
/// `"<pid>/task/<tid>"`), outermost first.
///
/// # Errors
///
/// As [`nspid`].
pub fn nspid_of_task(task: &str) -> io::Result<Vec<i32>> {
    nspid_of(task)
}

fn nspid_of(pid: impl std::fmt::Display) -> io::Result<Vec<i32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .ok_or_else(|| io::Error::other(format!("no NSpid line for pid {pid}")))
}

/// A `kB` line of `/proc/<pid>/status` in KiB, e.g. `VmRSS` or `VmHWM`.
///
/// # Errors
///
/// The process is gone, or has no such line (a kernel thread has no `Vm*` lines).
pub fn status_kib(pid: i32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no `{key}: N kB` line for pid {pid}")))
}

/// Fields of `/proc/<pid>/stat` after the command name: index 0 is the state.
fn stat_fields(pid: i32) -> io::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let close = stat
        .rfind(')')
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    Ok(stat[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The one-letter state of `pid` (`R`, `S`, `D`, `Z`, ...), or `None` if it does not exist.
pub fn process_state(pid: i32) -> Option<char> {
    stat_fields(pid).ok()?.first()?.chars().next()
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Process group of `pid` as seen from the host pid namespace.
///
/// # Errors
///
/// The error of reading `/proc/<pid>/stat` (`NotFound` when `pid` is gone), or a `malformed stat`
/// error when it has no closing `)` or no number in the pgrp field.
pub fn host_pgrp(pid: i32) -> io::Result<i32> {
    stat_fields(pid)?
        .get(2)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("malformed stat"))
}

/// The kernel function `pid` sleeps in (`/proc/<pid>/wchan`), e.g. `autofs_wait`.
///
/// # Errors
///
/// The error of reading the file (`NotFound` when `pid` is gone).
pub fn wchan(pid: i32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/wchan"))
}

/// The inode of namespace `kind` (`mnt`, `pid`, ...) of `pid`, from
/// `readlink /proc/<pid>/ns/<kind>`.
///
/// # Errors
///
/// The `readlink` error (`NotFound` when `pid` is gone or the kernel has no such namespace,
/// `PermissionDenied` for another user's process without privilege), or an error quoting the link
/// when it is not `<kind>:[<inode>]`.
pub fn ns_inode(pid: impl std::fmt::Display, kind: &str) -> io::Result<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}"))?;
    let s = link.to_string_lossy();
    s.rsplit_once('[')
        .and_then(|(_, r)| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected namespace link `{s}`")))
}

/// All host pids (`/proc/<pid>` directories).
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Host pids of every process whose namespace `kind` has inode `ino`.
pub fn pids_in_ns(kind: &str, ino: u64) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| ns_inode(p, kind).ok() == Some(ino))
        .collect()
}

/// Parent pid of `pid` (`PPid:`, host numbering).
pub fn ppid(pid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Host pids of every descendant of `root` (children found by scanning `PPid:`, since
/// this kernel has no `/proc/<pid>/task/<tid>/children`). `root` itself is not included.
pub fn descendants(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && p != root && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Whether `pid` sleeps in `autofs_wait`, i.e. waits for a daemon's answer.
pub fn blocked_in_autofs(pid: i32) -> bool {
    wchan(pid)
        .map(|w| w.trim() == "autofs_wait")
        .unwrap_or(false)
}

/// Which end of a pipe an fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// Opened `O_RDONLY`.
    Read,
    /// Opened `O_WRONLY`.
    Write,
    /// Opened `O_RDWR` (a FIFO reopened that way).
    ReadWrite,
}

/// The fds of `pid` that refer to pipe inode `ino`, with the end each one is.
///
/// # Errors
///
/// The error of listing `/proc/<pid>/fd` (`NotFound` when `pid` is gone), or of reading the
/// `fdinfo` of a matching fd (e.g. closed meanwhile). An fd whose link cannot be read is skipped.
pub fn pipe_fds(pid: i32, ino: u64) -> io::Result<Vec<(i32, PipeEnd)>> {
    let want = format!("pipe:[{ino}]");
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if fs::read_link(e.path())
            .ok()
            .map(|l| l.to_string_lossy() == want)
            != Some(true)
        {
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        let end = match flags & 3 {
            0 => PipeEnd::Read,
            1 => PipeEnd::Write,
            _ => PipeEnd::ReadWrite,
        };
        out.push((fd, end));
    }
    out.sort_unstable_by_key(|(fd, _)| *fd);
    Ok(out)
}

/// Bytes queued in the pipe held as `fd` by `pid`, via `FIONREAD`.
///
/// Reopens `/proc/<pid>/fd/<fd>` `O_RDONLY|O_NONBLOCK|O_CLOEXEC` and never reads from it,
/// so the queue is left intact. (While the probe fd is open the pipe has one more reader.)
///
/// # Errors
///
/// The error of reopening `/proc/<pid>/fd/<fd>` (`NotFound` when the process or the fd is gone), or
/// the `FIONREAD` error.
pub fn queued_bytes(pid: i32, fd: i32) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/{fd}"))?;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live
    // local; the fd is owned by `f` and stays open for the duration of the call.
    #[allow(unsafe_code)] // FIONREAD has no safe wrapper in std or nix.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// Polls `pred` every 10 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the autofs filesystem is available (`/proc/filesystems` lists it).
pub fn autofs_available() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("autofs"))
        })
        .unwrap_or(false)
}

/// The last (topmost) mountinfo line of `pid` whose mount point is `path`.
///
/// # Errors
///
/// Those of [`read_mountinfo`]. No line at `path` is `Ok(None)`.
pub fn mount_at(pid: i32, path: &Path) -> io::Result<Option<MountInfoLine>> {
    Ok(read_mountinfo(pid)?
        .into_iter()
        .rev()
        .find(|l| l.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_autofs_mountinfo_line() {
        let l = MountInfoLine::parse(
            "65 64 0:41 / /tmp/a\\040b rw,relatime shared:5 - autofs src rw,fd=6,pgrp=6,timeout=60,minproto=5,maxproto=5,indirect,pipe_ino=13371",
        )
        .unwrap();
        assert_eq!(l.mount_id, 65);
        assert_eq!(l.mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(l.fstype, "autofs");
        assert_eq!(l.option("fd"), Some("6"));
        assert_eq!(l.int_option("pipe_ino"), Some(13371));
        assert!(l.has_flag("indirect"));
        assert!(!l.has_flag("direct"));
    }
}
