//! Where the read ends of orphan candidates live, remembered across scans, so that a scan
//! costs what autofs costs and not what the node costs.
//!
//! CRIU looks only at the master's fds (reference §3.4), and so does a scan first: the fds of
//! each distinct leader, once. Only a mount whose leader holds no read end needs to know who
//! else holds the pipe. For those, in order:
//!
//! 1. ends found by an earlier scan are re-checked, one `readlink` and one access-mode read
//!    (an `lstat` of the link on procfs) each;
//! 2. a pipe that no process held any end of is taken to stay that way: an anonymous pipe
//!    cannot be opened again without an fd to it. But an end sent over a unix socket
//!    (`SCM_RIGHTS`) is in no fd table while in flight and lands in one when received; so on
//!    CRIU's probe path (a direct or offset mount with a live leader, where "nobody reads"
//!    makes the mount dumpable) the answer is believed for [`NOBODY_RECHECK`] (30 s) after the
//!    census that found it, then listed for again (sooner when a census runs anyway);
//! 3. the kernel's reader count, through any end still known, says whether anybody reads the
//!    pipe at all ([`QueueProbe::has_readers`]): nobody means there is no holder to find;
//! 4. only then the fds of every process are listed, for those pipes alone; a pipe of the
//!    probe path that no process's fd table holds any end of is then looked for in the fd
//!    tables threads have of their own (`unshare(CLONE_FILES)`), which `/proc/<pid>/fd` does
//!    not show.
//!
//! Verdicts are the same as with a census of every fd on every scan, except for a pipe nobody
//! held, whose end received from a unix socket is found up to 30 s later on the probe path
//! (and not at all elsewhere, where the verdict is not dumpable either way: only the holder
//! named differs); only the cost differs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::pipes::{PipeIndex, QueueProbe};
use crate::proc_root::ProcRoot;

/// What earlier scans found about one pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Memo {
    /// Ends held by processes (read and write ends), as `(pid, fd)`.
    Ends(Vec<(i32, i32)>),
    /// A complete census at this instant found no process holding any end.
    Nobody(Instant),
}

/// How long a census that found nobody holding any end of a pipe is believed: the bound on
/// how late an end received from a unix socket is seen, and on how often a pipe nobody holds
/// costs a census of every fd of the node.
pub const NOBODY_RECHECK: Duration = Duration::from_secs(30);

/// The orphan candidates of one scan.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    /// Pipe inodes whose leader holds no read end.
    pub pipes: &'a HashSet<u64>,
    /// Those on CRIU's probe path: of direct or offset mounts whose leader lives, where
    /// "nobody reads" makes the verdict dumpable.
    pub probe_path: &'a HashSet<u64>,
}

/// Pipe holders remembered across scans, by pipe inode.
#[derive(Debug, Default)]
pub struct HolderMemo {
    pipes: HashMap<u64, Memo>,
}

impl HolderMemo {
    /// Completes `index` for the orphan candidates `candidates` (pipe inodes whose leader
    /// holds no read end), at time `now`: re-checks remembered ends, asks the kernel's reader
    /// count, and lists the fds of `pids` only for the pipes still unexplained (and those of
    /// the probe path that nobody held at a census older than [`NOBODY_RECHECK`], or at any
    /// census when one runs anyway). Returns how many pipes needed that census.
    pub fn locate(
        &mut self,
        root: &ProcRoot,
        probe: &dyn QueueProbe,
        pids: &[i32],
        index: &mut PipeIndex,
        candidates: Candidates<'_>,
        now: Instant,
    ) -> usize {
        let Candidates {
            pipes: candidates,
            probe_path,
        } = candidates;
        let mut census = HashSet::new();
        let mut believed = HashSet::new();
        for &ino in candidates {
            match self.pipes.get(&ino) {
                Some(&Memo::Nobody(at))
                    if !probe_path.contains(&ino)
                        || now.saturating_duration_since(at) < NOBODY_RECHECK =>
                {
                    if probe_path.contains(&ino) {
                        believed.insert(ino);
                    }
                    continue;
                }
                Some(Memo::Nobody(_)) => {}
                Some(Memo::Ends(ends)) => {
                    for &(pid, fd) in ends {
                        index.verify(root, ino, pid, fd);
                    }
                }
                None => {}
            }
            if index.ends(ino).iter().any(|e| e.is_read_end()) {
                continue;
            }
            let nobody_reads = index.ends(ino).first().is_some_and(|end| {
                let path = root.pid_path(end.pid, &format!("fd/{}", end.fd));
                matches!(probe.has_readers(&path, ino), Ok(Some(false)))
            });
            if !nobody_reads {
                census.insert(ino);
            }
        }
        if census.is_empty() {
            return 0;
        }
        // A census runs anyway: the probe path's "nobody" answers are checked again with it.
        let counted = census.len();
        census.extend(believed);
        let unreadable_before = index.unreadable().len();
        index.scan(root, pids, &census);
        // Nobody's main fd table holds an end: on the probe path, a thread's own table may.
        let unheld: HashSet<u64> = census
            .iter()
            .copied()
            .filter(|&ino| probe_path.contains(&ino) && index.ends(ino).is_empty())
            .collect();
        index.scan_threads(root, pids, &unheld);
        let complete = index.unreadable().len() == unreadable_before;
        for &ino in &census {
            let ends: Vec<(i32, i32)> = index.ends(ino).iter().map(|e| (e.pid, e.fd)).collect();
            if !ends.is_empty() {
                self.pipes.insert(ino, Memo::Ends(ends));
            } else if complete {
                self.pipes.insert(ino, Memo::Nobody(now));
            } else {
                self.pipes.remove(&ino);
            }
        }
        counted
    }

    /// Forgets pipes no mount uses any more.
    pub fn retain(&mut self, in_use: &HashSet<u64>) {
        self.pipes.retain(|ino, _| in_use.contains(ino));
    }
}
