//! Walking one process's fd table through `<pid>/fd`, in ascending fd order on procfs, and
//! telling a fd's access mode from its link without reading `fdinfo`.
//!
//! On procfs a listing (`getdents64` of `<pid>/fd`) costs about as much per entry as the
//! `readlink` that follows it: the kernel instantiates a dentry for every fd it lists. The
//! walk therefore reads the links by number, `0, 1, 2, …`, in the order a listing gives them,
//! for as many as the table holds (procfs reports that count as the size of `<pid>/fd`, Linux
//! 6.2), then lists the rest of the table from the next number: a listing of an empty tail
//! costs little, and it finds what the count did not cover (a fd opened into a lower hole
//! meanwhile uses up part of the count). A run of absent numbers (a sparse table) hands the
//! rest to that listing early. Every fd that stays open throughout is visited, as a listing
//! visits it. Fixture trees are always listed.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::sys::stat::SFlag;
use nix::unistd::{Whence, lseek};

use crate::proc_root::{PidPath, parse_decimal, readlink_into};

/// Consecutive absent fd numbers after which the walk stops reading links by number and
/// lists the rest: a miss costs about as much as a hit, a listing of an empty tail little.
const MISS_BUDGET: u32 = 8;

/// Longest link target kept; longer ones are truncated (only short ones, `pipe:[N]`, matter).
const LINK_MAX: usize = 256;

/// What a walk of a fd table read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Links read (fds visited).
    pub links: usize,
    /// Whether the walk reached the end of the table (`false`: the visitor stopped it).
    pub complete: bool,
}

/// Visits every fd numbered `from` or above of the table open as `dir` (`<pid>/fd`), calling
/// `visit(fd, link target)` in ascending fd order on procfs (`procfs`), in listing order
/// elsewhere, until `visit` breaks. A fd closed between being found and its link being read
/// is skipped.
///
/// # Errors
///
/// The error of `fstat`, `readlinkat` (other than ENOENT: a fd closed meanwhile) or the
/// listing of `dir`, e.g. ENOENT or ESRCH from the listing of a process that exited.
pub fn walk(
    dir: OwnedFd,
    procfs: bool,
    from: i32,
    visit: impl FnMut(i32, &[u8]) -> ControlFlow<()>,
) -> io::Result<Walked> {
    // `st_size` of `<pid>/fd` is the number of open fds (Linux 6.2, `proc_fd_getattr`); 0 on
    // older kernels, or for an empty table: listed instead, which costs nothing then.
    let open = if procfs && from <= 0 {
        usize::try_from(nix::sys::stat::fstat(dir.as_fd())?.st_size).unwrap_or(0)
    } else {
        0
    };
    walk_counted(dir, procfs, from, open, visit)
}

/// [`walk`] with the table's fd count given: links are read by number until `open` were read
/// (or the miss budget ran out), then the rest is listed.
fn walk_counted(
    dir: OwnedFd,
    procfs: bool,
    from: i32,
    open: usize,
    mut visit: impl FnMut(i32, &[u8]) -> ControlFlow<()>,
) -> io::Result<Walked> {
    let mut link = [0u8; LINK_MAX];
    let mut links = 0;
    let mut next = from.max(0);
    // Reads `fd`'s link and visits it: `None` when the fd is not there (closed meanwhile).
    let mut step = |fd: i32| -> io::Result<Option<ControlFlow<()>>> {
        match read_link(&dir, fd, &mut link) {
            Ok(n) => Ok(Some(visit(fd, &link[..n]))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let stopped = |links| Walked {
        links,
        complete: false,
    };
    if procfs && next == 0 {
        let mut misses = 0;
        while open > 0 && links < open && misses < MISS_BUDGET {
            let fd = next;
            next += 1;
            match step(fd)? {
                Some(flow) => {
                    misses = 0;
                    links += 1;
                    if flow.is_break() {
                        return Ok(stopped(links));
                    }
                }
                None => misses += 1,
            }
        }
    }
    if procfs && next > 0 {
        // procfs positions `<pid>/fd` at `fd + 2` (after `.` and `..`): list from `next` on.
        lseek(&dir, i64::from(next) + 2, Whence::SeekSet)?;
    }
    // The listing owns one fd of the directory; the links are read through the other.
    let mut listing = Dir::from_fd(nix::unistd::dup(dir.as_fd())?)?;
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        let Some(fd) = parse_decimal::<i32>(name.to_bytes()).filter(|&fd| fd >= next) else {
            continue;
        };
        if let Some(flow) = step(fd)? {
            links += 1;
            if flow.is_break() {
                return Ok(stopped(links));
            }
        }
    }
    Ok(Walked {
        links,
        complete: true,
    })
}

/// `readlinkat(dir, "<fd>")` into `buf`, without allocating; the target's length.
fn read_link(dir: &impl AsRawFd, fd: i32, buf: &mut [u8; LINK_MAX]) -> Result<usize, Errno> {
    let name = PidPath::fd_name(fd).map_err(|_| Errno::ENAMETOOLONG)?;
    readlink_into(dir, name.as_c_str(), buf)
}

/// The access mode (`O_RDONLY`, `O_WRONLY` or `O_RDWR`) of the file behind a procfs fd link,
/// from the link's own mode bits: procfs gives `<pid>/fd/<fd>` `S_IRUSR` when the file was
/// opened for reading and `S_IWUSR` when for writing (`tid_fd_update_inode`, refreshed on
/// every lookup). `None` when it has neither (an `O_PATH` fd, or access mode 3): only the
/// `flags:` of `fdinfo` tell those apart. One `fstatat` instead of reading `fdinfo`.
///
/// `mode` is the `st_mode` of an `lstat` of the link.
pub fn access_mode_of_link(mode: u32) -> Option<u32> {
    const O_RDONLY: u32 = 0;
    const O_WRONLY: u32 = 1;
    const O_RDWR: u32 = 2;
    if mode & SFlag::S_IFMT.bits() != SFlag::S_IFLNK.bits() {
        return None;
    }
    let read = mode & 0o400 != 0;
    let write = mode & 0o200 != 0;
    match (read, write) {
        (true, false) => Some(O_RDONLY),
        (false, true) => Some(O_WRONLY),
        (true, true) => Some(O_RDWR),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    use autofs_testkit::child::Reaped;
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;

    fn fd_dir(pid: u32) -> OwnedFd {
        open(
            format!("/proc/{pid}/fd").as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("/proc/<pid>/fd")
    }

    fn visit_all(pid: u32, procfs: bool, from: i32) -> Vec<(i32, Vec<u8>)> {
        let mut seen = Vec::new();
        let walked = walk(fd_dir(pid), procfs, from, |fd, link| {
            seen.push((fd, link.to_vec()));
            ControlFlow::Continue(())
        })
        .expect("walk");
        assert!(walked.complete);
        assert_eq!(walked.links, seen.len());
        seen
    }

    /// `sleep 600` with the fds the test process holds without `O_CLOEXEC`, returned once it
    /// sleeps (its fd table then stays fixed), killed and reaped on drop. `spawn` returns at
    /// the exec; the dynamic loader still opens and closes files (`/etc/ld.so.cache`,
    /// libraries) after it, so the table is fixed only once the kernel shows the process in
    /// `nanosleep` (`/proc/<pid>/wchan`).
    fn sleeper() -> Reaped {
        let child = Reaped(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("spawn sleep"),
        );
        let wchan = format!("/proc/{}/wchan", child.0.id());
        for _ in 0..60_000 {
            let at = std::fs::read_to_string(&wchan).expect("read wchan");
            if at.contains("nanosleep") {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("sleep never reached nanosleep ({wchan})");
    }

    /// The walk by number visits what a listing visits, in ascending order, on a child's
    /// table with a dense start, a hole longer than the miss budget and a far, sparse tail
    /// (fds without `O_CLOEXEC` are inherited across exec).
    #[test]
    fn the_walk_by_number_sees_what_a_listing_sees_in_ascending_order() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // Inherited across exec (no O_CLOEXEC): the lowest free numbers from 200, 201, 4000.
        let held: Vec<OwnedFd> = [200, 201, 4000].iter().map(|&at| dup_at(&r, at)).collect();
        let far: Vec<i32> = held.iter().map(AsRawFd::as_raw_fd).collect();
        let child = sleeper();
        drop((r, w, held));
        let pid = child.0.id();
        let by_number = visit_all(pid, true, 0);
        let fds: Vec<i32> = by_number.iter().map(|&(fd, _)| fd).collect();
        let mut sorted = fds.clone();
        sorted.sort_unstable();
        assert_eq!(fds, sorted, "ascending");
        for fd in &far {
            assert!(fds.contains(fd), "fd {fd} missing from {fds:?}");
        }
        let mut listed = visit_all(pid, false, 0);
        listed.sort();
        assert_eq!(by_number, listed);
        // Resuming above a number visits exactly the fds at or above it.
        let tail: Vec<_> = by_number
            .iter()
            .filter(|&&(fd, _)| fd >= far[1])
            .cloned()
            .collect();
        assert_eq!(tail.first().map(|t| t.0), Some(far[1]), "{tail:?}");
        assert!(tail.iter().any(|t| t.0 == far[2]), "{tail:?}");
        assert_eq!(visit_all(pid, true, far[1]), tail);
    }

    /// A count used up before the table's end (fds opened into low holes while the walk ran)
    /// does not end the walk: the rest of the table is listed, every fd visited.
    #[test]
    fn a_count_used_up_early_still_visits_every_fd() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let held = dup_at(&r, 40);
        let child = sleeper();
        drop(held);
        let pid = child.0.id();
        let every = visit_all(pid, true, 0);
        assert!(every.len() > 3, "{every:?}");
        let mut seen = Vec::new();
        let walked = walk_counted(fd_dir(pid), true, 0, 3, |fd, link| {
            seen.push((fd, link.to_vec()));
            ControlFlow::Continue(())
        })
        .expect("walk");
        assert!(walked.complete);
        assert_eq!(seen, every);
    }

    /// A fd opened into a low hole while the walk runs uses up part of the count the walk
    /// began with: the fds above it are still visited (the tail is listed).
    #[test]
    fn a_fd_opened_during_the_walk_does_not_hide_a_higher_one() {
        // Two holes at the lowest free numbers (the walk's own dir fd takes the first, the
        // visitor's new fd the second) and `high` as the process's highest fd, one number
        // above the last one (closer than the miss budget: only the count can end the walk
        // before it).
        let (a, b) = nix::unistd::pipe().expect("pipe");
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let top = std::fs::read_dir("/proc/self/fd")
            .expect("list /proc/self/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .max()
            .expect("some fd");
        let high = dup_at(&r, top + 2);
        drop((a, b));
        let mut opened = Vec::new();
        let mut seen = Vec::new();
        let walked = walk(fd_dir(std::process::id()), true, 0, |fd, _| {
            if opened.is_empty() {
                opened.push(nix::unistd::dup(&r).expect("dup into the hole"));
            }
            seen.push(fd);
            ControlFlow::Continue(())
        })
        .expect("walk");
        assert!(walked.complete);
        let new = opened[0].as_raw_fd();
        assert!(new < high.as_raw_fd(), "the new fd {new} fills a hole");
        assert!(
            seen.contains(&high.as_raw_fd()),
            "fd {} missing from {seen:?}",
            high.as_raw_fd()
        );
    }

    /// `fcntl(F_DUPFD)`: a copy of `fd` at the lowest free number from `at` (never replacing
    /// another thread's fd, as `dup2` could), without `O_CLOEXEC`.
    fn dup_at(fd: &OwnedFd, at: i32) -> OwnedFd {
        let n = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(at)).expect("F_DUPFD");
        // SAFETY: `n` is a new fd the kernel just returned, owned by nobody else.
        #[allow(unsafe_code)]
        unsafe {
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n)
        }
    }

    #[test]
    fn a_visitor_that_breaks_stops_the_walk_at_that_fd() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let mut last = -1;
        let walked = walk(fd_dir(std::process::id()), true, 0, |fd, _| {
            last = fd;
            if fd == r.as_raw_fd() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("walk");
        assert!(!walked.complete);
        assert_eq!(last, r.as_raw_fd());
    }

    /// The link's mode bits give the same access mode as `fdinfo`'s `flags:` for every way
    /// a pipe end can be open, and nothing for `O_PATH`, which only `fdinfo` tells.
    #[test]
    fn link_mode_bits_give_the_access_mode_fdinfo_gives() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let reopen = |flags: OFlag| {
            open(
                format!("/proc/self/fd/{}", r.as_raw_fd()).as_str(),
                flags | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .expect("reopen the pipe")
        };
        let rdwr = reopen(OFlag::O_RDWR);
        let path = reopen(OFlag::O_PATH);
        let fdinfo_mode = |fd: i32| {
            let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
            let flags = text
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|v| u32::from_str_radix(v.trim(), 8).expect("octal"))
                .expect("flags: line");
            flags & 0o3
        };
        let link_mode = |fd: i32| {
            let st = nix::sys::stat::lstat(format!("/proc/self/fd/{fd}").as_str()).expect("lstat");
            access_mode_of_link(st.st_mode)
        };
        for (fd, expected) in [
            (r.as_raw_fd(), 0),
            (w.as_raw_fd(), 1),
            (rdwr.as_raw_fd(), 2),
        ] {
            assert_eq!(fdinfo_mode(fd), expected, "fdinfo of fd {fd}");
            assert_eq!(link_mode(fd), Some(expected), "link of fd {fd}");
        }
        assert_eq!(link_mode(path.as_raw_fd()), None, "O_PATH needs fdinfo");
        // Not a link: no answer.
        assert_eq!(access_mode_of_link(SFlag::S_IFREG.bits() | 0o600), None);
    }
}
