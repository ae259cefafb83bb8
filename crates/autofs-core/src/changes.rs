//! Cheap signs that a verdict may have changed since a scan, for an agent that would rather
//! notice changes than rescan the world: a queue appearing or draining on a known read end
//! (one `FIONREAD` each), and a master, or a process between it and the root of the tree CRIU
//! dumps, exiting (a pidfd per process turns readable).
//!
//! Neither replaces a scan; each only says when one is worth running now.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::escape::escape;
use crate::mountinfo::MountLine;
use crate::pipes::QueueProbe;
use crate::proc_root::ProcRoot;
use crate::process::ProcessTable;
use crate::report::{MountReport, MountState};
use crate::scan::Scan;

/// One read end a scan measured, and what it measured.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KnownQueue {
    pid: i32,
    fd: i32,
    ino: u64,
    pending_bytes: u64,
}

/// The read ends of a scan's live mounts, to re-measure between scans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownQueues {
    queues: Vec<KnownQueue>,
}

impl KnownQueues {
    /// The read ends measured by `scan` (ACTIVE, INTERIM, and orphans whose holder is known).
    pub fn from_scan(scan: &Scan) -> Self {
        let mut queues: Vec<KnownQueue> = scan
            .reports
            .iter()
            .filter(|r| r.read_end_pid > 0 && r.read_end_fd >= 0 && r.pipe_ino > 0)
            .filter(|r| {
                matches!(
                    r.state,
                    MountState::Active | MountState::Interim | MountState::Orphaned
                )
            })
            .map(|r| KnownQueue {
                pid: r.read_end_pid,
                fd: r.read_end_fd,
                ino: r.pipe_ino,
                pending_bytes: r.pending_bytes,
            })
            .collect();
        // Copies of one mount in several namespaces share the pipe: measure it once.
        queues.sort_unstable_by_key(|q| (q.pid, q.fd, q.ino));
        queues.dedup_by_key(|q| (q.pid, q.fd, q.ino));
        Self { queues }
    }

    /// How many read ends are known.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether no read end is known.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// One pass: whether a queue differs from what the scan measured, or can no longer be
    /// measured (the fd was closed, the process exited), in a way not reported yet (`last`).
    /// One `FIONREAD` per known read end, nothing consumed, nothing else read.
    ///
    /// A difference is reported once, not at every pass until a scan accounts for it: the
    /// scan it asks for may come back with the same measurement (the queue drained and
    /// filled again meanwhile), or may fail. Reported queue sizes are forgotten when a scan is
    /// published ([`Readings::new_scan`]), so a later difference is news again; a read end
    /// that cannot be measured stays reported for as long as scans keep naming it, since a
    /// scan that still names it would otherwise be asked for at every pass, forever.
    pub fn changed(&self, root: &ProcRoot, probe: &dyn QueueProbe, last: &mut Readings) -> bool {
        let mut changed = false;
        let mut reported = HashMap::new();
        for q in &self.queues {
            let path = root.pid_path(q.pid, &format!("fd/{}", q.fd));
            let reading = probe.queued_bytes(&path, q.ino).ok();
            if reading == Some(q.pending_bytes) {
                continue; // as scanned: nothing outstanding
            }
            let key = (q.pid, q.fd, q.ino);
            changed |= last.0.get(&key) != Some(&reading);
            reported.insert(key, reading);
        }
        last.0 = reported;
        changed
    }
}

/// The differences [`KnownQueues::changed`] reported and that are still outstanding: the
/// reading (`None`: could not measure) of each read end that differs from its scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings(HashMap<(i32, i32, u64), Option<u64>>);

impl Readings {
    /// A scan was published: its measurements are the new baseline, so reported queue sizes
    /// are forgotten; read ends reported as unmeasurable stay reported.
    pub fn new_scan(&mut self) {
        self.0.retain(|_, reading| reading.is_none());
    }
}

/// The mounts of a scan whose verdict the kernel can change with no mount-table event, no
/// process exit and no queue to measure, and the namespace tables to re-read for them:
///
/// - CATATONIC: a restarted daemon reconnects it with `AUTOFS_DEV_IOCTL_SETPIPEFD` (ACTIVE
///   again; automount does so at start for the mounts it finds);
/// - ORPHANED with no read end anyone holds: the next lookup's write fails and the kernel
///   turns it catatonic (`autofs_notify_daemon`), and a daemon's `AUTOFS_DEV_IOCTL_CATATONIC`
///   and `SETPIPEFD` do too.
///
/// Each shows only in the mount's super options in `mountinfo` (`fd=`, `pgrp=`,
/// `pipe_ino=`): `POLLPRI` on the table fires for mounts and unmounts, not for these. Other
/// mounts have a queue or a master whose exit a pidfd shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuietMounts {
    namespaces: Vec<QuietNamespace>,
}

/// One namespace's quiet mounts: the pid its table was read through, and each mount's id
/// and super options (escaped) as the scan read them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuietNamespace {
    reader: i32,
    mounts: HashMap<u32, String>,
}

impl QuietMounts {
    /// The quiet mounts of `scan`, in the namespaces whose table it read completely: one
    /// mount per superblock (device), since the super options a change shows in are the
    /// superblock's, the same in every copy of the mount (a host's automount mounts propagated
    /// into every container are re-read once, not once per container).
    pub fn from_scan(scan: &Scan) -> Self {
        let readable: std::collections::HashSet<u64> = scan
            .namespaces
            .iter()
            .filter(|ns| ns.table_reader > 0)
            .map(|ns| ns.mnt_ns)
            .collect();
        let mut devices = std::collections::HashSet::new();
        let mut by_ns: HashMap<u64, HashMap<u32, String>> = HashMap::new();
        for r in &scan.reports {
            let quiet = match r.state {
                MountState::Catatonic => true,
                MountState::Orphaned => r.read_end_pid <= 0,
                _ => false,
            };
            if quiet
                && r.mount_id > 0
                && !r.options.is_empty()
                && readable.contains(&r.mnt_ns)
                && devices.insert((r.major, r.minor))
            {
                by_ns
                    .entry(r.mnt_ns)
                    .or_default()
                    .insert(r.mount_id, r.options.clone());
            }
        }
        let mut namespaces: Vec<QuietNamespace> = scan
            .namespaces
            .iter()
            .filter(|ns| ns.table_reader > 0)
            .filter_map(|ns| {
                by_ns.remove(&ns.mnt_ns).map(|mounts| QuietNamespace {
                    reader: ns.table_reader,
                    mounts,
                })
            })
            .collect();
        namespaces.sort_unstable_by_key(|ns| ns.reader);
        Self { namespaces }
    }

    /// How many namespaces have quiet mounts.
    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    /// Whether the scan has no quiet mount.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// One pass: whether the super options of a quiet mount differ from the scan's, reading
    /// the `mountinfo` of each namespace with quiet mounts once, through the process the scan
    /// read it through (nothing else is read; no mount is touched). A mount missing from the
    /// table is no news here (its unmount is a mount-table event), nor is a table that can no
    /// longer be read (its reader's exit is watched; the next scan reads another member's).
    pub fn changed(&self, root: &ProcRoot) -> bool {
        self.namespaces.iter().any(|ns| {
            let Ok(text) = root.read(ns.reader, "mountinfo") else {
                return false;
            };
            text.split(|&b| b == b'\n')
                .filter_map(|line| MountLine::parse(line).ok())
                .filter(|m| m.is_autofs())
                .any(|m| {
                    ns.mounts
                        .get(&m.mount_id)
                        .is_some_and(|scanned| escape(m.super_options) != *scanned)
                })
        })
    }
}

/// Host pids whose exit changes a verdict of `scan`: the leaders of live mounts and the
/// holders of read ends.
pub fn masters(scan: &Scan) -> BTreeSet<i32> {
    scan.reports
        .iter()
        .filter(|r| r.pipe_ino > 0)
        .flat_map(|r| [r.host_pgrp, r.read_end_pid])
        .filter(|&pid| pid > 0)
        .collect()
}

/// Host pids named by the `pgrp=` of live mounts of `reports` that do not exist: their `stat`
/// could not be read through `table` (the scan's own, which judged the mounts with the same
/// reads). CRIU takes a `pgrp=` number as a pid, whatever process has it, so a process that
/// takes one of these pids changes the verdict (pids are reused), with no event to notice:
/// [`GoneLeaders`] looks for them between scans.
pub fn gone_leaders(table: &mut ProcessTable<'_>, reports: &[MountReport]) -> BTreeSet<i32> {
    reports
        .iter()
        .filter(|r| r.pipe_ino > 0 && r.host_pgrp > 0)
        .map(|r| r.host_pgrp)
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .filter(|&pid| table.check_exists(pid).is_err())
        .collect()
}

/// The leaders a scan found gone ([`gone_leaders`]), to look for between scans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoneLeaders {
    pids: Vec<i32>,
}

impl GoneLeaders {
    /// The leaders `scan` found gone.
    pub fn from_scan(scan: &Scan) -> Self {
        Self {
            pids: scan.gone_leaders.clone(),
        }
    }

    /// Whether the scan found no leader gone.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// One pass: whether a process now has the pid of a leader the scan found gone (its
    /// `stat` reads, as the scan's existence check does). One read per pid; nothing else.
    pub fn reused(&self, root: &ProcRoot) -> bool {
        self.pids
            .iter()
            .any(|&pid| root.read_record(pid, "stat").is_ok())
    }
}

/// Longest parent chain [`tree_paths`] follows from a leader to its namespace's owner.
const MAX_TREE_DEPTH: usize = 64;

/// Host pids whose exit moves a leader of `reports` into or out of the process tree CRIU
/// dumps or changes that tree's root: for each live mount whose leader descends from the
/// owner of its namespace, every process from the leader's parent up to the owner, and the
/// owner. When one of them exits, the kernel re-parents its children to a subreaper or to
/// init, outside the tree (`MASTER_OUTSIDE_TREE`). For a leader whose chain does not reach the
/// owner, every process from its parent up (the leader outside the tree already): when one of
/// them exits, its children go to the nearest subreaper above it in their pid namespace, else
/// to that namespace's init, which is the owner when the owner is a container's init (a
/// daemon started by `kubectl exec` or `nsenter` that forked and left its parent), and then
/// the leader is in the tree. Parents come from `table` (the scan's own, whose `stat` reads
/// they share; at most 64 up a chain).
pub fn tree_paths(table: &mut ProcessTable<'_>, reports: &[MountReport]) -> BTreeSet<i32> {
    let mut watched = BTreeSet::new();
    let leaders: BTreeSet<(i32, i32)> = reports
        .iter()
        .filter(|r| r.pipe_ino > 0 && r.host_pgrp > 0 && r.owner_pid > 0)
        .map(|r| (r.host_pgrp, r.owner_pid))
        .collect();
    for (leader, owner) in leaders {
        let mut path = Vec::new();
        let mut pid = leader;
        for _ in 0..MAX_TREE_DEPTH {
            if pid == owner {
                path.push(owner);
                break;
            }
            match table.parent(pid) {
                Ok(parent) if parent > 0 => {
                    if pid != leader {
                        path.push(pid);
                    }
                    pid = parent;
                }
                Ok(_) if pid != leader => {
                    // The root of the chain (init, or a process whose parent is not in this
                    // proc root's pid namespace): its exit re-parents the leader's ancestors.
                    path.push(pid);
                    break;
                }
                _ => break,
            }
        }
        watched.extend(path);
    }
    watched
}

/// A pidfd for `pid` (`pidfd_open(2)`): it polls readable once the process has exited.
///
/// Only meaningful when the proc root shows the caller's own pid namespace
/// ([`ProcRoot::is_own_pid_namespace`]): pids of another namespace name other processes.
///
/// # Errors
///
/// The `pidfd_open` error (`ESRCH`: the process is already gone).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is
    // passed. The fd is owned by nobody else, so OwnedFd may close it.
    #[allow(unsafe_code)]
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned no fd"))?;
    // SAFETY: `fd` was just returned by the kernel and is not owned elsewhere.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_turns_readable_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(i32::try_from(child.id()).unwrap()).unwrap();
        let readable = |fd: &OwnedFd| {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(fd),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() > 0
        };
        assert!(!readable(&pidfd));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(readable(&pidfd));
    }

    #[test]
    fn quiet_mounts_are_re_read_once_per_superblock_not_once_per_copy() {
        use crate::scan::NamespaceInfo;
        let root = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/proc/catatonic_keeps_raw_pgrp"
        );
        let mut scan = crate::Scanner::new(root, "node").unwrap().scan().unwrap();
        let catatonic = scan
            .reports
            .iter()
            .find(|r| r.state == MountState::Catatonic)
            .cloned()
            .unwrap();
        let home = scan
            .namespaces
            .iter()
            .find(|ns| ns.mnt_ns == catatonic.mnt_ns)
            .cloned()
            .unwrap();
        assert_eq!(QuietMounts::from_scan(&scan).len(), 1);
        // The same superblock copied into two more namespaces (a host's mount propagated into
        // containers), and another catatonic superblock in the last of them.
        for (mnt_ns, minor) in [(1, catatonic.minor), (2, catatonic.minor), (2, 999)] {
            scan.reports.push(MountReport {
                mnt_ns,
                minor,
                ..catatonic.clone()
            });
        }
        for mnt_ns in [1, 2] {
            scan.namespaces.push(NamespaceInfo {
                mnt_ns,
                table_reader: home.table_reader + i32::try_from(mnt_ns).unwrap(),
                ..home.clone()
            });
        }
        let quiet = QuietMounts::from_scan(&scan);
        assert_eq!(quiet.len(), 2, "{quiet:?}");
        let devices: usize = quiet.namespaces.iter().map(|ns| ns.mounts.len()).sum();
        assert_eq!(devices, 2, "one mount per superblock: {quiet:?}");
    }

    /// A probe that reads queue sizes from a table the test sets (`None`: cannot measure).
    struct Table(std::cell::RefCell<HashMap<u64, Option<u64>>>);

    impl QueueProbe for Table {
        fn queued_bytes(&self, _fd_path: &std::path::Path, ino: u64) -> io::Result<u64> {
            self.0
                .borrow()
                .get(&ino)
                .copied()
                .flatten()
                .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))
        }
    }

    fn queue(ino: u64, pending_bytes: u64) -> KnownQueue {
        KnownQueue {
            pid: 100,
            fd: 3,
            ino,
            pending_bytes,
        }
    }

    #[test]
    fn a_difference_from_the_scan_is_reported_once_until_a_scan_measures_anew() {
        let root = ProcRoot::open("/proc").unwrap();
        let probe = Table(Default::default());
        let mut last = Readings::default();
        let set = |ino: u64, bytes: Option<u64>| probe.0.borrow_mut().insert(ino, bytes);
        // The scan measured an empty queue on pipe 7.
        let scanned_empty = KnownQueues {
            queues: vec![queue(7, 0)],
        };
        set(7, Some(0));
        assert!(
            !scanned_empty.changed(&root, &probe, &mut last),
            "as scanned"
        );
        set(7, Some(304));
        assert!(
            scanned_empty.changed(&root, &probe, &mut last),
            "a queue appeared"
        );
        assert!(
            !scanned_empty.changed(&root, &probe, &mut last),
            "reported already: no scan at every pass"
        );
        // A scan published meanwhile measured the same empty queue (the daemon had read the
        // first request): a queue seen now is news again.
        last.new_scan();
        assert!(
            scanned_empty.changed(&root, &probe, &mut last),
            "news after a scan"
        );
        // It drained before a scan saw it: as scanned again, nothing to report.
        set(7, Some(0));
        assert!(!scanned_empty.changed(&root, &probe, &mut last));
        // Filled again before any scan: reported again (it was no longer outstanding).
        set(7, Some(304));
        assert!(scanned_empty.changed(&root, &probe, &mut last));

        // A scan measured the queue (304): its draining is news.
        last.new_scan();
        let scanned_full = KnownQueues {
            queues: vec![queue(7, 304)],
        };
        assert!(!scanned_full.changed(&root, &probe, &mut last));
        set(7, Some(0));
        assert!(scanned_full.changed(&root, &probe, &mut last), "drained");

        // A read end that cannot be measured any more is reported once; scans that still name
        // it (as they did) do not make every later pass report it again.
        last.new_scan();
        set(7, None);
        assert!(scanned_empty.changed(&root, &probe, &mut last), "gone");
        assert!(!scanned_empty.changed(&root, &probe, &mut last));
        last.new_scan();
        assert!(!scanned_empty.changed(&root, &probe, &mut last));
        // Measurable again and as scanned: nothing to report; then a queue: reported.
        set(7, Some(0));
        assert!(!scanned_empty.changed(&root, &probe, &mut last));
        set(7, Some(608));
        assert!(scanned_empty.changed(&root, &probe, &mut last));
    }

    #[test]
    fn a_pid_that_does_not_exist_has_no_pidfd() {
        // Above the kernel's largest pid_max.
        assert!(pidfd_open(4_194_305).is_err());
    }
}
