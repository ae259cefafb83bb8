//! Notices mount namespaces made since the last look, without reading `/proc`.
//!
//! The kernel keeps every mount namespace on one list ordered by its id, a 64-bit sequence
//! number that is never reused (unlike the nsfs inode a `/proc/<pid>/ns/mnt` link shows, which
//! a new namespace may take over from a dead one). Holding a descriptor of one namespace, a
//! process may walk that list both ways: `NS_MNT_GET_PREV` and `NS_MNT_GET_NEXT` return a
//! descriptor of the neighbouring namespace, skipping those whose user namespace the caller
//! has no `CAP_SYS_ADMIN` over (`get_sequential_mnt_ns` in fs/namespace.c, Linux ≥ 6.12).
//!
//! A namespace made after a scan by a process that mounts only inside it (`unshare -m` with
//! private propagation, a service's `PrivateTmp=`) changes no mount table a scan kept open, so
//! the mount-table watch never hears of it; its autofs mounts (copies of the host's, or its
//! own) would wait for the next full scan. A walk sees it at once.
//!
//! Each step's descriptor holds its namespace alive while it is open: the walk closes it as
//! soon as the next step has been taken, so it holds at most two at a time, for microseconds,
//! and keeps only the caller's own namespace open between walks.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{OFlag, open};
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
    /// Opens the calling thread's mount namespace (`/proc/thread-self/ns/mnt`) and asks the
    /// kernel for its id, which tells whether the kernel can walk the list.
    ///
    /// # Errors
    ///
    /// The error of the open or the `fstat`; `Unsupported` when the kernel has no
    /// `NS_MNT_GET_INFO` (before Linux 6.12, `ENOTTY`); `PermissionDenied` when the thread
    /// would not see every namespace: the kernel hides each one whose user namespace the
    /// caller has no `CAP_SYS_ADMIN` over (skips it, or refuses the step with `EPERM`), so only a thread of the initial user
    /// namespace with `CAP_SYS_ADMIN` effective sees them all (a container given only
    /// `CAP_SYS_PTRACE` would walk its own namespace alone, and learn nothing).
    pub fn open() -> io::Result<Self> {
        sees_every_namespace()?;
        let own = open(
            "/proc/thread-self/ns/mnt",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let id = match ns_ioctl(&own, nix::libc::NS_MNT_GET_INFO) {
            Ok((None, id)) => id,
            Ok((Some(_), _)) => return Err(io::Error::other("NS_MNT_GET_INFO returned an fd")),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTTY) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel cannot list mount namespaces (NS_MNT_GET_NEXT, Linux 6.12)",
                ));
            }
            Err(e) => return Err(e),
        };
        let ino = fstat(&own)?.st_ino;
        Ok(Self {
            own,
            own_ns: MountNamespace { id, ino },
        })
    }

    /// Every mount namespace the calling thread administers (`CAP_SYS_ADMIN` over the user
    /// namespace that owns it; the kernel skips the others): every one of the machine for a
    /// thread with the privileges [`NamespaceWalk::open`] asks for. Its own is included; the
    /// order is none in particular.
    ///
    /// # Errors
    ///
    /// The error of a step other than the end of the list (`ENOENT`), or of an `fstat`.
    pub fn walk(&self) -> io::Result<Vec<MountNamespace>> {
        let mut all = vec![self.own_ns];
        for step in [nix::libc::NS_MNT_GET_PREV, nix::libc::NS_MNT_GET_NEXT] {
            let mut at: Option<OwnedFd> = None;
            loop {
                let from = at.as_ref().unwrap_or(&self.own);
                match ns_ioctl(from, step) {
                    Ok((Some(next), id)) => {
                        all.push(MountNamespace {
                            id,
                            ino: fstat(&next)?.st_ino,
                        });
                        at = Some(next); // closes the one before
                    }
                    Ok((None, _)) => return Err(io::Error::other("the walk returned no fd")),
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(all)
    }
}

/// `CAP_SYS_ADMIN` (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
/// `PROC_USER_INIT_INO` (include/linux/proc_ns.h): the inode of the initial user namespace.
const INIT_USER_NS_INO: u64 = 0xEFFF_FFFD;

/// Whether the calling thread has `CAP_SYS_ADMIN` over every user namespace, hence sees every
/// mount namespace in a walk: it is in the initial user namespace (`ns/user`, whose inode the
/// kernel fixes) with the capability effective (`CapEff:` of its status; capabilities are a
/// thread's own).
fn sees_every_namespace() -> io::Result<()> {
    let denied = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the kernel would hide the mount namespaces of other user namespaces: {why}"),
        ))
    };
    let user_ns = std::fs::metadata("/proc/thread-self/ns/user")?.ino();
    if user_ns != INIT_USER_NS_INO {
        return denied(format!(
            "this thread is in user namespace {user_ns}, not the initial one"
        ));
    }
    let status = std::fs::read("/proc/thread-self/status")?;
    let cap_eff = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"CapEff:"))
        .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| io::Error::other("/proc/thread-self/status has no readable CapEff:"))?;
    if cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
        return denied("this thread lacks CAP_SYS_ADMIN".to_owned());
    }
    Ok(())
}

/// `ioctl(fd, request, &info)` for an nsfs mount-namespace request: the descriptor it
/// returned (`GET_PREV`/`GET_NEXT`) if any, and the `mnt_ns_id` it filled in.
fn ns_ioctl(fd: &OwnedFd, request: nix::libc::Ioctl) -> io::Result<(Option<OwnedFd>, u64)> {
    let mut info = nix::libc::mnt_ns_info {
        size: nix::libc::MNT_NS_INFO_SIZE_VER0 as u32,
        nr_mounts: 0,
        mnt_ns_id: 0,
    };
    // SAFETY: the requests take a pointer to a `struct mnt_ns_info` whose `size` says how
    // much the kernel may write; `info` is one, alive for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), request, &raw mut info) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a positive return of GET_PREV/GET_NEXT is a new descriptor nobody else owns
    // (`fd_install` in ns_ioctl()); GET_INFO returns 0.
    #[allow(unsafe_code)]
    let next = (rc > 0).then(|| unsafe { OwnedFd::from_raw_fd(rc) });
    Ok((next, info.mnt_ns_id))
}

/// Says when a walk shows a mount namespace that is new: made since the walk before, or, at
/// the first walk, not among the namespaces the latest scan listed (compared by inode, the
/// only identity a scan has).
///
/// A namespace made after the previous walk is news even if a scan has listed it since
/// (a scan asked for by a mount-table change in the meantime): an inode may have been taken
/// over from a dead namespace, so only the id is trusted, at the cost of that one scan.
/// A namespace no scan can list (one without processes, held by a bind mount of its
/// `ns/mnt` or by another program's descriptor) is news once, when it appears.
#[derive(Debug, Default)]
pub struct NewNamespaces {
    previous: Option<HashSet<u64>>,
}

impl NewNamespaces {
    /// Takes a walk's namespaces as the ones known from now on; true when one is new.
    /// `scanned` says whether the latest scan listed a namespace inode (used at the first
    /// walk only).
    pub fn news(&mut self, walked: &[MountNamespace], scanned: impl Fn(u64) -> bool) -> bool {
        let news = match &self.previous {
            Some(previous) => walked.iter().any(|ns| !previous.contains(&ns.id)),
            None => walked.iter().any(|ns| !scanned(ns.ino)),
        };
        self.previous = Some(walked.iter().map(|ns| ns.id).collect());
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
        let scanned = |ino| ino == 100 || ino == 101;
        assert!(!news.news(&[ns(1, 100), ns(2, 101)], scanned));
        // Made after the first walk: news once.
        assert!(news.news(&[ns(1, 100), ns(2, 101), ns(3, 102)], scanned));
        assert!(!news.news(&[ns(1, 100), ns(2, 101), ns(3, 102)], scanned));
        // A namespace gone is no news; a new one taking a dead one's inode is.
        assert!(!news.news(&[ns(1, 100), ns(3, 102)], scanned));
        assert!(news.news(&[ns(1, 100), ns(3, 102), ns(4, 101)], scanned));
    }

    #[test]
    fn at_the_first_walk_a_namespace_the_scan_did_not_list_is_news() {
        let mut news = NewNamespaces::default();
        assert!(news.news(&[ns(1, 100), ns(2, 101)], |ino| ino == 100));
        assert!(!news.news(&[ns(1, 100), ns(2, 101)], |ino| ino == 100));
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
            // What the refusal rests on: the same walk now sees its own namespace alone, or
            // is refused a step (EPERM: Linux 6.18).
            match own.walk() {
                Ok(seen) => assert_eq!(seen, [own.own_ns]),
                Err(e) => assert_eq!(e.raw_os_error(), Some(nix::libc::EPERM), "{e}"),
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
        assert!(!news.news(&before, |_| true));

        let held = HeldNamespace::make();
        let after = walk.walk().expect("walk");
        let made: Vec<_> = after.iter().filter(|ns| held.is(ns)).collect();
        assert_eq!(made.len(), 1, "{} in {after:?}", held.link);
        assert!(!before.iter().any(|ns| ns.id == made[0].id));
        assert!(
            news.news(&after, |_| true),
            "a namespace made since is news"
        );
        assert!(!news.news(&after, |_| true), "once");
    }
}
