//! Notices mount namespaces made since the last look, without reading `/proc`.
//!
//! The kernel keeps every mount namespace on one list ordered by its id, a 64-bit sequence
//! number that is never reused (unlike the nsfs inode a `/proc/<pid>/ns/mnt` link shows, which
//! a new namespace may take over from a dead one). Holding a descriptor of one namespace, a
//! process may walk that list both ways: `NS_MNT_GET_PREV` and `NS_MNT_GET_NEXT` return a
//! descriptor of the neighbouring namespace (`get_sequential_mnt_ns` in fs/namespace.c,
//! Linux ≥ 6.12). Not to everyone: Linux 6.12 skips each namespace whose user namespace the
//! caller has no `CAP_SYS_ADMIN` over, and later kernels (and stable updates of 6.12) refuse
//! the step outright (`EPERM`) unless the caller is in the initial pid and user namespaces with
//! `CAP_SYS_ADMIN` (`may_see_all_namespaces()` in fs/nsfs.c). So only a privileged agent walks;
//! a DaemonSet given `CAP_SYS_PTRACE` alone waits for its scans.
//!
//! A namespace made after a scan by a process that mounts only inside it (`unshare -m` with
//! private propagation, a service's `PrivateTmp=`) changes no mount table a scan kept open, so
//! the mount-table watch never hears of it; its autofs mounts (copies of the host's, or its
//! own) would wait for the next full scan. A walk sees it at once.
//!
//! Each step's descriptor holds its namespace alive while it is open: the walk closes it as
//! soon as the next step has been taken, so it holds at most two at a time, for microseconds,
//! and keeps only the caller's own namespace open between walks.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{OFlag, open};
use nix::libc::{EPERM, Ioctl, NS_MNT_GET_INFO, NS_MNT_GET_NEXT, NS_MNT_GET_PREV};
use nix::sys::stat::{Mode, fstat};

/// One mount namespace of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountNamespace {
    /// The kernel's id of the namespace (`mnt_ns_id`): unique for the life of the machine.
    pub id: u64,
    /// Its nsfs inode: the number in `mnt:[N]` of its members' `ns/mnt` links.
    pub ino: u64,
}

/// Walks the kernel's list of mount namespaces from the caller's own.
#[derive(Debug)]
pub struct NamespaceWalk {
    own: OwnedFd,
    own_ns: MountNamespace,
}

impl NamespaceWalk {
    /// Opens the calling thread's mount namespace (`/proc/thread-self/ns/mnt`), asks the
    /// kernel for its id, and takes one step of the walk (closed at once) to learn whether the
    /// kernel lets this thread walk.
    ///
    /// # Errors
    ///
    /// The error of the open, the `fstat` or the step; `Unsupported` when the kernel has no
    /// `NS_MNT_GET_INFO` (before Linux 6.12, `ENOTTY`); `PermissionDenied` when the thread
    /// would not see every namespace (see the module's documentation): it lacks
    /// `CAP_SYS_ADMIN` in the initial user namespace (a container given only `CAP_SYS_PTRACE`
    /// would walk its own namespace alone, and learn nothing), or the kernel refuses the step
    /// (`EPERM`: outside the initial pid namespace, or an LSM's refusal).
    pub fn open() -> io::Result<Self> {
        sees_every_namespace()?;
        let own = open(
            "/proc/thread-self/ns/mnt",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let id = match ns_info(&own) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTTY) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel cannot list mount namespaces (NS_MNT_GET_NEXT, Linux 6.12)",
                ));
            }
            other => other?,
        };
        let ino = fstat(&own)?.st_ino;
        // One step each way (either may be the end of the list): refused or not.
        for request in [NS_MNT_GET_PREV, NS_MNT_GET_NEXT] {
            match ns_step(&own, request) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(EPERM) => {
                    return denied(format!(
                        "the kernel refuses this thread a step of the walk ({e}; Linux 6.12.y and later allow it only in the initial pid and user namespaces with CAP_SYS_ADMIN, may_see_all_namespaces())"
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Self {
            own,
            own_ns: MountNamespace { id, ino },
        })
    }

    /// Every mount namespace of the machine, for a thread with the privileges
    /// [`NamespaceWalk::open`] asks for (the kernel hides the others, or refuses the walk).
    /// Its own is included; the order is none in particular.
    ///
    /// # Errors
    ///
    /// The error of a step other than the end of the list (`ENOENT`), or of an `fstat`.
    pub fn walk(&self) -> io::Result<Vec<MountNamespace>> {
        let mut all = vec![self.own_ns];
        for request in [NS_MNT_GET_PREV, NS_MNT_GET_NEXT] {
            let mut at: Option<OwnedFd> = None;
            while let Some((next, id)) = ns_step(at.as_ref().unwrap_or(&self.own), request)? {
                all.push(MountNamespace {
                    id,
                    ino: fstat(&next)?.st_ino,
                });
                at = Some(next); // closes the one before
            }
        }
        Ok(all)
    }
}

/// `CAP_SYS_ADMIN` (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
/// `PROC_USER_INIT_INO` (include/linux/proc_ns.h): the inode of the initial user namespace.
const INIT_USER_NS_INO: u64 = 0xEFFF_FFFD;

fn denied<T>(why: String) -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("the kernel would hide mount namespaces from this thread: {why}"),
    ))
}

/// Whether the calling thread has `CAP_SYS_ADMIN` over every user namespace: it is in the
/// initial user namespace (`ns/user`, whose inode the kernel fixes) with the capability
/// effective (`CapEff:` of its status; capabilities are a thread's own). Linux 6.12 skips
/// without an error the namespaces such a thread does not administer.
fn sees_every_namespace() -> io::Result<()> {
    let user_ns = std::fs::metadata("/proc/thread-self/ns/user")?.ino();
    if user_ns != INIT_USER_NS_INO {
        return denied(format!(
            "this thread is in user namespace {user_ns}, not the initial one"
        ));
    }
    let status = std::fs::read("/proc/thread-self/status")?;
    let cap_eff = status
        .split(|&b| b == b'\n')
        .find_map(crate::view::cap_eff_line)
        .flatten()
        .ok_or_else(|| io::Error::other("/proc/thread-self/status has no readable CapEff:"))?;
    if cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
        return denied("this thread lacks CAP_SYS_ADMIN".to_owned());
    }
    Ok(())
}

fn empty_info() -> nix::libc::mnt_ns_info {
    nix::libc::mnt_ns_info {
        size: nix::libc::MNT_NS_INFO_SIZE_VER0 as u32,
        nr_mounts: 0,
        mnt_ns_id: 0,
    }
}

/// `ioctl(fd, NS_MNT_GET_INFO, &info)`: the namespace's `mnt_ns_id`.
fn ns_info(fd: &OwnedFd) -> io::Result<u64> {
    let mut info = empty_info();
    // SAFETY: the request takes a pointer to a `struct mnt_ns_info` whose `size` says how
    // much the kernel may write; `info` is one, alive for the call. It returns 0 or -1.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), NS_MNT_GET_INFO, &raw mut info) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.mnt_ns_id)
}

/// `ioctl(fd, request, &info)` for `NS_MNT_GET_PREV` or `NS_MNT_GET_NEXT`: a descriptor of the
/// neighbouring namespace and its `mnt_ns_id`, or `None` at the end of the list (`ENOENT`).
fn ns_step(fd: &OwnedFd, request: Ioctl) -> io::Result<Option<(OwnedFd, u64)>> {
    let mut info = empty_info();
    // SAFETY: as in `ns_info`; these requests return a new descriptor or -1.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), request, &raw mut info) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(nix::libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a non-negative return is a descriptor the kernel just installed for this
    // process (`fd_install` in ns_ioctl(); 0 when stdin is closed), which nobody else owns.
    #[allow(unsafe_code)]
    let next = unsafe { OwnedFd::from_raw_fd(rc) };
    Ok(Some((next, info.mnt_ns_id)))
}

/// How many scans a namespace a walk reported new may ask for while none of them lists it
/// (it has no process yet, or never will: one held by a bind mount of its `ns/mnt` or by
/// another program's descriptor).
pub const UNLISTED_REPORTS: u32 = 3;

/// Says when a walk shows a mount namespace the scans have not caught up with: one made since
/// the walk before (at the first walk: one the latest scan did not list, compared by inode, the
/// only identity a scan has), or one reported so before that a scan published since did not
/// list, up to [`UNLISTED_REPORTS`] times.
///
/// The kernel puts a namespace on its list before the process that made it has moved in
/// (`copy_mnt_ns()` runs before `switch_task_namespaces()` in `unshare(2)`, and before the
/// child is attached in `clone(2)`; a `CLONE_NEWNET` alongside widens the gap), so the scan a
/// report asks for may not see it yet: that is why a report is repeated.
/// A namespace made after the previous walk is news even if a scan has listed it since (a
/// scan asked for by a mount-table change in the meantime): an inode may have been taken over
/// from a dead namespace, so only the id is trusted, at the cost of that one scan.
#[derive(Debug, Default)]
pub struct NewNamespaces {
    /// The ids of the previous walk.
    previous: Option<HashSet<u64>>,
    /// Namespaces reported whose inode no scan since has listed, by id.
    unlisted: HashMap<u64, Unlisted>,
}

#[derive(Debug)]
struct Unlisted {
    ino: u64,
    /// The scan that was the latest when it was last reported.
    scan: u64,
    reports: u32,
}

impl NewNamespaces {
    /// Takes a walk's namespaces as the ones known from now on; true when one is news.
    /// `scan` numbers the latest published scan (it grows with each), and `listed` says
    /// whether that scan listed a namespace inode.
    pub fn news(
        &mut self,
        walked: &[MountNamespace],
        scan: u64,
        listed: impl Fn(u64) -> bool,
    ) -> bool {
        let mut news = false;
        for ns in walked {
            let new = match &self.previous {
                Some(previous) => !previous.contains(&ns.id),
                None => !listed(ns.ino),
            };
            if new {
                let first = Unlisted {
                    ino: ns.ino,
                    scan,
                    reports: 1,
                };
                self.unlisted.insert(ns.id, first);
                news = true;
            }
        }
        let alive: HashSet<u64> = walked.iter().map(|ns| ns.id).collect();
        self.unlisted.retain(|id, u| {
            if !alive.contains(id) || (u.scan != scan && listed(u.ino)) {
                return false; // gone, or a scan since found it
            }
            if u.scan == scan {
                return true; // no scan since the report
            }
            if u.reports >= UNLISTED_REPORTS {
                return false; // no process shows it: the full scans will, if one ever does
            }
            u.reports += 1;
            u.scan = scan;
            news = true;
            true
        });
        self.previous = Some(alive);
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(id: u64, ino: u64) -> MountNamespace {
        MountNamespace { id, ino }
    }

    #[test]
    fn the_first_walk_is_compared_with_the_scan_later_ones_with_the_walk_before() {
        let mut news = NewNamespaces::default();
        let scanned = |ino| ino == 100 || ino == 101 || ino == 102;
        assert!(!news.news(&[ns(1, 100), ns(2, 101)], 1, scanned));
        // Made after the first walk: news once (a later scan lists it).
        assert!(news.news(&[ns(1, 100), ns(2, 101), ns(3, 102)], 1, scanned));
        assert!(!news.news(&[ns(1, 100), ns(2, 101), ns(3, 102)], 2, scanned));
        assert!(!news.news(&[ns(1, 100), ns(2, 101), ns(3, 102)], 3, scanned));
        // A namespace gone is no news; a new one taking a dead one's inode is, although the
        // scan lists that inode.
        assert!(!news.news(&[ns(1, 100), ns(3, 102)], 3, scanned));
        assert!(news.news(&[ns(1, 100), ns(3, 102), ns(4, 101)], 3, scanned));
        assert!(!news.news(&[ns(1, 100), ns(3, 102), ns(4, 101)], 4, scanned));
    }

    #[test]
    fn at_the_first_walk_a_namespace_the_scan_did_not_list_is_news() {
        let mut news = NewNamespaces::default();
        let scanned = |ino| ino == 100 || ino == 101;
        assert!(news.news(&[ns(1, 100), ns(2, 101)], 1, |ino| ino == 100));
        assert!(!news.news(&[ns(1, 100), ns(2, 101)], 1, |ino| ino == 100));
        assert!(!news.news(&[ns(1, 100), ns(2, 101)], 2, scanned));
    }

    /// The scan a report asked for ran before the namespace's maker moved in: the report is
    /// repeated after each scan that does not list it, up to `UNLISTED_REPORTS` in all.
    #[test]
    fn a_new_namespace_no_scan_lists_is_reported_again_a_bounded_number_of_times() {
        let mut news = NewNamespaces::default();
        let old = |ino| ino == 100;
        assert!(!news.news(&[ns(1, 100)], 1, old));
        let walked = [ns(1, 100), ns(2, 101)];
        assert!(news.news(&walked, 1, old), "made");
        assert!(!news.news(&walked, 1, old), "no scan since");
        assert!(news.news(&walked, 2, old), "scan 2 did not list it");
        assert!(!news.news(&walked, 2, old));
        assert!(news.news(&walked, 3, old), "nor did scan 3");
        assert!(!news.news(&walked, 4, old), "given up after 3 reports");
        assert!(!news.news(&walked, 5, old));

        // Listed by the scan after its second report: no more.
        let mut news = NewNamespaces::default();
        assert!(!news.news(&[ns(1, 100)], 1, old));
        let walked = [ns(1, 100), ns(3, 102)];
        assert!(news.news(&walked, 1, old));
        assert!(news.news(&walked, 2, old));
        assert!(!news.news(&walked, 3, |ino| ino == 100 || ino == 102));
        assert!(!news.news(&walked, 4, old), "found: not reported again");

        // Gone before any scan listed it: not reported again.
        let mut news = NewNamespaces::default();
        assert!(!news.news(&[ns(1, 100)], 1, old));
        assert!(news.news(&[ns(1, 100), ns(4, 103)], 1, old));
        assert!(!news.news(&[ns(1, 100)], 2, old));
    }

    /// A child in a mount namespace of its own (private propagation), held until dropped.
    struct HeldNamespace {
        child: std::process::Child,
        /// Its `ns/mnt` link, `mnt:[N]`.
        link: String,
    }

    impl HeldNamespace {
        fn make() -> Self {
            let mut child = std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg("readlink /proc/self/ns/mnt; read _ || :")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("unshare");
            let mut link = String::new();
            let stdout = child.stdout.take().expect("stdout");
            let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut link);
            let held = Self {
                child,
                link: link.trim_end().to_owned(),
            };
            read.expect("the child's namespace");
            assert!(held.link.starts_with("mnt:["), "{:?}", held.link);
            held
        }

        fn is(&self, ns: &MountNamespace) -> bool {
            format!("mnt:[{}]", ns.ino) == self.link
        }
    }

    impl Drop for HeldNamespace {
        fn drop(&mut self) {
            drop(self.child.stdin.take()); // ends `read`
            let _ = self.child.wait();
        }
    }

    /// Real-kernel: the kernel hides other namespaces from a thread without `CAP_SYS_ADMIN`
    /// (as from an agent given only `CAP_SYS_PTRACE` and `CAP_DAC_READ_SEARCH`), so such a
    /// thread is refused a walk instead of being given one that says nothing is new.
    #[test]
    fn a_thread_without_cap_sys_admin_is_refused_the_walk_it_could_not_make() {
        let held = HeldNamespace::make();
        let own = NamespaceWalk::open().expect("NS_MNT_GET_INFO (Linux >= 6.12)");
        let all = own.walk().expect("walk");
        assert!(
            all.iter().any(|ns| held.is(ns)),
            "{} not in {all:?}",
            held.link
        );
        std::thread::spawn(move || {
            caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_ADMIN,
            )
            .expect("drop CAP_SYS_ADMIN from this thread");
            // What the refusal rests on: the same walk now misses the held namespace
            // (Linux 6.12), or is refused a step (EPERM: later kernels).
            match own.walk() {
                Ok(seen) => assert!(!seen.iter().any(|ns| held.is(ns)), "{seen:?}"),
                Err(e) => assert_eq!(e.raw_os_error(), Some(EPERM), "{e}"),
            }
            let refused = NamespaceWalk::open().expect_err("a walk without CAP_SYS_ADMIN");
            assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied, "{refused}");
            assert!(refused.to_string().contains("CAP_SYS_ADMIN"), "{refused}");
        })
        .join()
        .expect("the thread without CAP_SYS_ADMIN");
    }

    /// Real-kernel: needs Linux ≥ 6.12 and `CAP_SYS_ADMIN` (the test machine).
    #[test]
    fn a_walk_finds_its_own_namespace_and_one_made_after_it_once() {
        let walk = NamespaceWalk::open().expect("NS_MNT_GET_INFO (Linux >= 6.12)");
        let own_link = std::fs::read_link("/proc/thread-self/ns/mnt")
            .expect("own ns/mnt")
            .to_string_lossy()
            .into_owned();
        let before = walk.walk().expect("walk");
        assert!(
            before
                .iter()
                .any(|ns| format!("mnt:[{}]", ns.ino) == own_link),
            "{own_link} not in {before:?}"
        );
        let mut news = NewNamespaces::default();
        assert!(!news.news(&before, 1, |_| true));

        let held = HeldNamespace::make();
        let after = walk.walk().expect("walk");
        let made: Vec<_> = after.iter().filter(|ns| held.is(ns)).collect();
        assert_eq!(made.len(), 1, "{} in {after:?}", held.link);
        assert!(!before.iter().any(|ns| ns.id == made[0].id));
        assert!(
            news.news(&after, 1, |_| true),
            "a namespace made since is news"
        );
        assert!(!news.news(&after, 2, |_| true), "once (a scan lists it)");
    }
}
