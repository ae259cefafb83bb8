//! The process tree CRIU dumps for a mount namespace: its owner (the task CRIU is given, the
//! container's init) and the owner's descendants.
//!
//! CRIU checkpoints a container by dumping the tree rooted at its init; `pid_to_virt()` finds a
//! master only among those tasks (reference §3.8). Membership of the owner's *pid namespace* is
//! not enough: a `--pid=host` container, a pod sharing its pid namespace, or `--pid=container:X`
//! sees processes that CRIU does not dump with it.
//!
//! The owner is a root of the namespace's process forest: a member whose parent is outside the
//! mount namespace (or, for a namespace made inside a container, that container's init: below).
//! Among several roots (`docker exec` sessions, or an operator's `nsenter` from the host, join a
//! container's namespaces later) a pid-namespace init wins, then the oldest process (start time;
//! pid order says nothing once pids wrap), then the shallowest pid namespace. A root that only
//! waits for a pid-namespace init it forked (`unshare --mount --pid --fork`: the parent enters
//! the new mount namespace but stays in the outer pid namespace) hands ownership to that init,
//! which is the container.
//!
//! A mount namespace made inside a container (a service's `PrivateTmp=`, an `unshare --mount`
//! below the container's init) has no init among its members; its root descends from the
//! init of its pid namespace. That init is the owner: CRIU checkpoints the container from it,
//! dumping the nested namespace with the rest of the tree, and a master anywhere in that tree
//! is found. Only in the proc root's own pid namespace (the host's: `--pid=host` containers,
//! whose roots descend from the host's pid 1) the root itself stays the owner.

use std::collections::{HashMap, HashSet};

use crate::attribution::Attribution;
use crate::process::ProcessTable;

/// The host pid of the owner of the mount namespace whose members are `pids` (ascending).
/// `None` when no member's facts could be read. Reads every member's parent: see
/// [`ForestMemo`] for the same answer across scans without that.
pub fn namespace_owner(table: &mut ProcessTable<'_>, pids: &[i32]) -> Option<i32> {
    if pid_one_owns(table, pids) {
        return Some(1);
    }
    choose_owner(&mut Fresh(table), pids)
}

/// Pid 1 of the proc root's pid namespace outranks every other candidate (an init, the oldest
/// process, of the shallowest pid namespace): on the host's namespace, with thousands of
/// members, nothing else needs reading.
fn pid_one_owns(table: &mut ProcessTable<'_>, pids: &[i32]) -> bool {
    pids.first() == Some(&1) && table.info(1).is_ok_and(|i| i.ppid == 0)
}

/// How a candidate owner ranks: pid-namespace inits first, then the oldest (start time), then
/// the shallowest pid namespace, then the lowest pid. Fixed for a process's lifetime.
///
/// Age before depth: a process of the host's pid namespace that joins a container's mount
/// namespace later (`nsenter --mount` by an operator) is a root of its forest too, and must not
/// take it over from the container's processes (the namespace's container and pod come from its
/// owner's cgroup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    not_init: bool,
    starttime: u64,
    depth: usize,
    pid: i32,
}

/// The facts the owner choice rests on.
trait Forest {
    /// The parent pid of `pid`; `None` when it could not be read.
    fn parent(&mut self, pid: i32) -> Option<i32>;
    /// The rank of `pid`; `None` when its facts could not be read.
    fn rank(&mut self, pid: i32) -> Option<Rank>;
    /// The container and pod of `pid` (from its `cgroup`; empty when unreadable).
    fn attribution(&mut self, pid: i32) -> Attribution;
}

/// Everything read from the proc root, for this scan only.
struct Fresh<'t, 'a>(&'t mut ProcessTable<'a>);

impl Forest for Fresh<'_, '_> {
    fn parent(&mut self, pid: i32) -> Option<i32> {
        self.0.parent(pid).ok()
    }

    fn rank(&mut self, pid: i32) -> Option<Rank> {
        let info = self.0.info(pid).ok()?;
        Some(Rank {
            not_init: !info.is_pidns_init(),
            depth: info.pidns_depth(),
            starttime: info.starttime,
            pid,
        })
    }

    fn attribution(&mut self, pid: i32) -> Attribution {
        self.0.attribution(pid).clone()
    }
}

/// The roots of the members' forest (a member whose parent is not a member), each handing
/// over to a deeper pid-namespace init that is its only child, ranked; the best one.
fn choose_owner(forest: &mut dyn Forest, pids: &[i32]) -> Option<i32> {
    let members: HashSet<i32> = pids.iter().copied().collect();
    // Every member's parent, once; full facts only for the roots.
    let parents: Vec<Option<i32>> = pids.iter().map(|&pid| forest.parent(pid)).collect();
    let mut candidates = Vec::new();
    for (&pid, parent) in pids.iter().zip(&parents) {
        match parent {
            Some(ppid) if !members.contains(ppid) => {}
            _ => continue,
        }
        let Some(root) = forest.rank(pid) else {
            continue;
        };
        let mut owner = root;
        if root.not_init {
            let children: Vec<i32> = pids
                .iter()
                .zip(&parents)
                .filter(|&(_, &parent)| parent == Some(pid))
                .map(|(&c, _)| c)
                .collect();
            if let [only] = children[..]
                && let Some(child) = forest.rank(only)
                && !child.not_init
                && child.depth > root.depth
            {
                owner = child;
            }
        }
        if owner.not_init
            && let Some(init) = container_init(forest, owner)
        {
            owner = init;
        }
        candidates.push(owner);
    }
    candidates.into_iter().min().map(|rank| rank.pid)
}

/// Longest parent chain [`container_init`] follows.
const MAX_CHAIN: usize = 64;

/// The init of `root`'s pid namespace, when that namespace is not the proc root's own (a
/// container's), its init is an ancestor of `root`, and both belong to the same container and
/// pod: CRIU checkpoints a container from its init, so a mount namespace made inside the
/// container (a service's `PrivateTmp=`, an `unshare --mount` below the init) is dumped with
/// the init's tree. `None` when the chain leaves the pid namespace first (a process that
/// joined it from outside, as `runc exec` sessions do), when the init is another container's
/// (a pod sharing its pid namespace: the kernel hands orphans to the pause container's init;
/// `--pid=container:X`), when an ancestor is younger than its child (a pid reused while the
/// chain was read), or when the chain cannot be read.
fn container_init(forest: &mut dyn Forest, root: Rank) -> Option<Rank> {
    if root.depth < 2 {
        return None;
    }
    let mut child = root;
    for _ in 0..MAX_CHAIN {
        let parent = forest.parent(child.pid).filter(|&p| p > 0)?;
        let rank = forest.rank(parent)?;
        if rank.depth != root.depth || rank.starttime > child.starttime {
            return None;
        }
        if !rank.not_init {
            return (forest.attribution(rank.pid) == forest.attribution(root.pid)).then_some(rank);
        }
        child = rank;
    }
    None
}

/// The process forests of earlier scans, so that a scan need not read the parent of every
/// member of a namespace with autofs mounts (on a host namespace: of every process) to find
/// the namespace's owner. Gives the answer of [`namespace_owner`] on the same facts.
///
/// Only on procfs, where the inode number of `/proc/<pid>` tells one process from a later
/// holder of its pid ([`crate::ProcRoot::pid_entries`]). Per member it keeps:
///
/// * its rank (pid-namespace level, start time), which never changes while it lives;
/// * its parent pid, with the parent's `/proc` inode number and start time. A process's parent
///   changes only when the parent process exits (its children then go to a reaper; a dying
///   thread's children go to a live thread of the same process first). So the parent pid is
///   still right while the parent is listed with the same inode number (it has held its pid
///   without a break since the member's `stat` was read) and its `stat` shows the same start
///   time and a leader that has not begun to exit (see
///   [`ProcessTable::unexited_starttime`]).
///
/// A member whose inode number changed (a new process, a reused pid, or an entry the kernel
/// evicted), whose parent fails that check, or whose parent is outside the proc root's view
/// (ppid 0) has its `stat` read again. Membership itself is never remembered: the members are
/// the scan's. So a scan reads one `stat` per distinct parent instead of one per member.
#[derive(Debug, Default)]
pub struct ForestMemo {
    known: HashMap<i32, Known>,
    scan: u64,
    reads: usize,
}

/// What is remembered of one process.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// `/proc/<pid>` inode number when its facts were read.
    ino: u64,
    /// Its parent, when that can be re-checked.
    parent: Option<Parent>,
    rank: Option<Rank>,
    /// Last scan that listed it as a member of a namespace with autofs mounts.
    seen: u64,
}

/// A parent as it was when its child's `stat` was read.
#[derive(Debug, Clone, Copy)]
struct Parent {
    pid: i32,
    ino: u64,
    starttime: u64,
}

impl ForestMemo {
    /// Starts a scan: `listing` is [`crate::ProcRoot::pid_entries`] of this scan.
    pub fn begin<'m>(&'m mut self, listing: &'m [(i32, u64)]) -> ForestScan<'m> {
        self.scan += 1;
        self.reads = 0;
        ForestScan {
            memo: self,
            listing,
        }
    }

    /// `stat` and `status` files the last scan read to choose owners (members re-read,
    /// parents checked, ranks of new roots).
    pub fn reads(&self) -> usize {
        self.reads
    }
}

/// One scan's use of a [`ForestMemo`]; forgets the processes it did not see when dropped.
#[derive(Debug)]
pub struct ForestScan<'m> {
    memo: &'m mut ForestMemo,
    listing: &'m [(i32, u64)],
}

impl ForestScan<'_> {
    /// [`namespace_owner`] of the members `pids` (ascending), from remembered facts where
    /// they still hold.
    pub fn owner(&mut self, table: &mut ProcessTable<'_>, pids: &[i32]) -> Option<i32> {
        let before = table.files_read();
        let owner = if pid_one_owns(table, pids) {
            Some(1)
        } else {
            choose_owner(
                &mut Cached {
                    scan: self,
                    table,
                    last: None,
                },
                pids,
            )
        };
        self.memo.reads += table.files_read() - before;
        owner
    }

    /// Inode number of `/proc/<pid>` in this scan's listing; `None` when not listed or not a
    /// real number (procfs reports 1 when it could not instantiate the entry).
    fn ino(&self, pid: i32) -> Option<u64> {
        self.listing
            .binary_search_by_key(&pid, |&(p, _)| p)
            .ok()
            .map(|i| self.listing[i].1)
            .filter(|&ino| ino > 1)
    }
}

impl Drop for ForestScan<'_> {
    fn drop(&mut self) {
        let scan = self.memo.scan;
        self.memo.known.retain(|_, k| k.seen == scan);
    }
}

struct Cached<'s, 'm, 't, 'a> {
    scan: &'s mut ForestScan<'m>,
    table: &'t mut ProcessTable<'a>,
    /// The last parent checked and the answer (members mostly share a few parents).
    last: Option<(i32, u64, u64, bool)>,
}

impl Cached<'_, '_, '_, '_> {
    /// Whether `parent` still holds its pid and has not begun to exit.
    fn still_parent(&mut self, parent: Parent) -> bool {
        if let Some((pid, ino, starttime, answer)) = self.last
            && (pid, ino, starttime) == (parent.pid, parent.ino, parent.starttime)
        {
            return answer;
        }
        let answer = self.scan.ino(parent.pid) == Some(parent.ino)
            && self.unexited(parent.pid) == Some(parent.starttime);
        self.last = Some((parent.pid, parent.ino, parent.starttime, answer));
        answer
    }

    fn unexited(&mut self, pid: i32) -> Option<u64> {
        self.table.unexited_starttime(pid).ok().flatten()
    }

    /// The entry of `pid` if it describes the process listed now, else a fresh one.
    fn entry(&mut self, pid: i32, ino: u64) -> &mut Known {
        let scan = self.scan.memo.scan;
        let known = self.scan.memo.known.entry(pid).or_insert(Known {
            ino,
            parent: None,
            rank: None,
            seen: scan,
        });
        if known.ino != ino {
            *known = Known {
                ino,
                parent: None,
                rank: None,
                seen: scan,
            };
        }
        known.seen = scan;
        known
    }
}

impl Forest for Cached<'_, '_, '_, '_> {
    fn parent(&mut self, pid: i32) -> Option<i32> {
        let Some(ino) = self.scan.ino(pid) else {
            return Fresh(self.table).parent(pid);
        };
        if let Some(parent) = self.entry(pid, ino).parent
            && self.still_parent(parent)
        {
            return Some(parent.pid);
        }
        let ppid = self.table.parent(pid).ok();
        let parent = match ppid {
            Some(ppid) if ppid > 0 => self.scan.ino(ppid).and_then(|ino| {
                self.unexited(ppid).map(|starttime| Parent {
                    pid: ppid,
                    ino,
                    starttime,
                })
            }),
            _ => None,
        };
        self.entry(pid, ino).parent = parent;
        ppid
    }

    fn rank(&mut self, pid: i32) -> Option<Rank> {
        let Some(ino) = self.scan.ino(pid) else {
            return Fresh(self.table).rank(pid);
        };
        if let Some(rank) = self.entry(pid, ino).rank {
            return Some(rank);
        }
        let rank = Fresh(self.table).rank(pid);
        self.entry(pid, ino).rank = rank;
        rank
    }

    fn attribution(&mut self, pid: i32) -> Attribution {
        Fresh(self.table).attribution(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process forest given as (pid, parent, pid-namespace depth, init?, start time,
    /// container).
    struct Given(Vec<(i32, i32, usize, bool, u64, &'static str)>);

    impl Given {
        fn get(&self, pid: i32) -> Option<&(i32, i32, usize, bool, u64, &'static str)> {
            self.0.iter().find(|p| p.0 == pid)
        }
    }

    impl Forest for Given {
        fn parent(&mut self, pid: i32) -> Option<i32> {
            self.get(pid).map(|p| p.1)
        }

        fn rank(&mut self, pid: i32) -> Option<Rank> {
            self.get(pid)
                .map(|&(pid, _, depth, init, starttime, _)| Rank {
                    not_init: !init,
                    starttime,
                    depth,
                    pid,
                })
        }

        fn attribution(&mut self, pid: i32) -> Attribution {
            Attribution {
                container_id: self.get(pid).map_or("", |p| p.5).to_owned(),
                pod_uid: String::new(),
            }
        }
    }

    /// The host: pid 1, a container runtime's shim.
    const HOST: [(i32, i32, usize, bool, u64, &str); 2] =
        [(1, 0, 1, true, 0, ""), (50, 1, 1, false, 5, "")];

    fn owner(mut procs: Vec<(i32, i32, usize, bool, u64, &'static str)>, members: &[i32]) -> i32 {
        procs.extend(HOST);
        choose_owner(&mut Given(procs), members).unwrap()
    }

    #[test]
    fn a_namespace_made_below_a_containers_init_is_owned_by_the_init() {
        let container = vec![
            (100, 50, 2, true, 10, "c"),
            (101, 100, 2, false, 20, "c"),
            (102, 101, 2, false, 30, "c"),
        ];
        assert_eq!(owner(container.clone(), &[101, 102]), 100);
        // An operator's later `nsenter --mount` from the host changes nothing.
        let mut joined = container;
        joined.push((60, 1, 1, false, 40, ""));
        assert_eq!(owner(joined, &[60, 101, 102]), 100);
    }

    #[test]
    fn another_containers_init_in_a_shared_pid_namespace_never_owns() {
        // A pod sharing its pid namespace: the pause container's process is its init, the
        // app's first process is a child of the shim, and a daemon the app double-forked was
        // handed to the pause process.
        let pod = vec![
            (200, 50, 2, true, 6, "pause"),
            (201, 50, 2, false, 10, "a"),
            (202, 200, 2, false, 30, "a"),
        ];
        assert_eq!(owner(pod.clone(), &[201, 202]), 201);
        // Even when the daemon is all that is left of the container.
        assert_eq!(owner(pod, &[202]), 202);
    }

    #[test]
    fn roots_that_joined_from_outside_keep_the_oldest_first() {
        // A `runc exec` session (its parent is the shim, outside the pid namespace) that made a
        // mount namespace, and a later host process that joined it.
        let procs = vec![(301, 50, 2, false, 40, "c"), (60, 1, 1, false, 45, "")];
        assert_eq!(owner(procs, &[60, 301]), 301);
    }

    #[test]
    fn no_init_is_taken_through_a_reused_pid_or_in_the_hosts_pid_namespace() {
        // The parent pid names a process younger than its child: it was reused after the
        // child's parent exited.
        let reused = vec![(400, 50, 2, true, 100, "c"), (401, 400, 2, false, 50, "c")];
        assert_eq!(owner(reused, &[401]), 401);
        // The host's pid 1 never owns a `--pid=host` container's namespace.
        assert_eq!(owner(vec![(500, 1, 1, false, 20, "h")], &[500]), 500);
    }
}
