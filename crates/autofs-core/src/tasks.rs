//! What stops CRIU in a workload's dumped tree that no mount report shows: a task asleep in an
//! autofs request, and a pipe end in packet mode that no autofs mount of the dump exempts.
//!
//! Both stop the dump whatever its mounts, and neither needs a mount to exist:
//! - A request the daemon has read but not answered leaves its requester asleep in the
//!   kernel's `autofs_wait()` (killable: state `D`), and the pipe empty. CRIU's freeze cannot
//!   seize it: compel's `compel_wait_task()` fails with "Unseizable non-zombie <pid> found,
//!   state D". It clears once the daemon answers.
//! - The kernel sets `O_DIRECT` on the write end of an autofs mount's pipe and never clears
//!   it. A daemon keeps that end after its mount is unmounted (even its only mount, when no
//!   mount names the daemon any more). CRIU's `dump_one_pipe()` refuses a packet-mode end
//!   whose pipe is not one of the dump's autofs mounts (`is_autofs_pipe()`): "The packetized
//!   mode for pipes is not supported yet".
//!
//! Reading every task's `stat` and fd table costs what the workload's tree holds, so the agent
//! runs this only when asked about one workload (`CheckMigratable`, `WaitMigratable`), not in
//! every scan of the node.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::pipes::packet_mode_ends;
use crate::proc_root::ProcRoot;
use crate::process::{ProcessTable, Unavailable};
use crate::scan::Scan;

/// Why a task stops the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskReason {
    /// A thread is asleep in `autofs_wait()` (state `D`): CRIU's freeze cannot seize it. It
    /// clears when the daemon answers the request.
    RequesterWaiting,
    /// The task holds a pipe end in packet mode (`O_DIRECT`) of a pipe no autofs mount of the
    /// dump shows: CRIU's pipe dump refuses it.
    PacketModePipe,
    /// The task's state or fds could not be read: whether it stops the dump is unknown.
    Unreadable,
}

/// A task of the dumped tree that stops the dump by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskBlocker {
    /// Host pid of the process.
    pub pid: i32,
    /// Host thread id: the sleeping thread for [`TaskReason::RequesterWaiting`], else `pid`.
    pub tid: i32,
    /// Its command name, escaped (see [`crate::escape`]).
    pub comm: String,
    /// Why it stops the dump.
    pub reason: TaskReason,
    /// The fd of the packet-mode end ([`TaskReason::PacketModePipe`]), else -1.
    pub fd: i32,
    /// The inode of that end's pipe, else 0.
    pub pipe_ino: u64,
    /// What CRIU meets, with its own line.
    pub message: String,
}

impl TaskBlocker {
    /// Whether it clears by itself (a daemon answers its pending request).
    pub fn clears_by_itself(&self) -> bool {
        self.reason == TaskReason::RequesterWaiting
    }
}

/// One dump of a workload: the tree rooted at `owner`, whose processes lie among `members`
/// (host pids of the mount namespaces CRIU dumps with it, ascending), and the pipes of the
/// autofs mounts of those namespaces, which CRIU's pipe dump exempts from its refusal of
/// packet mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpTree {
    /// Host pid of the tree's root (the container init); 0 when it could not be read.
    pub owner: i32,
    /// Candidate members, ascending.
    pub members: Vec<i32>,
    /// Pipe inodes of the dump's autofs mounts.
    pub autofs_pipes: HashSet<u64>,
}

/// The dumps of the mount namespaces `namespaces` of `scan` (a workload's): one per owner.
pub fn dump_trees(scan: &Scan, namespaces: &[u64]) -> Vec<DumpTree> {
    let mut trees: BTreeMap<i32, DumpTree> = BTreeMap::new();
    for n in scan
        .namespaces
        .iter()
        .filter(|n| namespaces.contains(&n.mnt_ns))
    {
        let tree = trees.entry(n.owner_pid).or_insert_with(|| DumpTree {
            owner: n.owner_pid,
            members: Vec::new(),
            autofs_pipes: HashSet::new(),
        });
        tree.members.extend(&n.pids);
        tree.autofs_pipes.extend(
            scan.reports
                .iter()
                .filter(|r| r.mnt_ns == n.mnt_ns && r.pipe_ino > 0)
                .map(|r| r.pipe_ino),
        );
    }
    trees
        .into_values()
        .map(|mut t| {
            t.members.sort_unstable();
            t.members.dedup();
            t
        })
        .collect()
}

/// The tasks of `trees` that stop CRIU's dump, read from `root` now: ascending by pid within
/// each tree. A process that exits meanwhile is left out (CRIU would not meet it); one whose
/// facts cannot be read is a [`TaskReason::Unreadable`] blocker, never left out.
pub fn blocking_tasks(root: &ProcRoot, trees: &[DumpTree]) -> Vec<TaskBlocker> {
    let mut table = ProcessTable::new(root);
    let mut found = Vec::new();
    for tree in trees {
        if tree.owner <= 0 {
            found.push(unreadable(
                0,
                String::new(),
                "the root of the tree CRIU dumps (the owner of the workload's mount namespace) could not be read, so neither could its tasks".to_owned(),
            ));
            continue;
        }
        for &pid in &tree.members {
            match table.descends_from(pid, tree.owner) {
                Ok(true) => {}
                Ok(false) | Err(Unavailable::Vanished) => continue,
                Err(Unavailable::Failed(why)) => {
                    found.push(unreadable(
                        pid,
                        String::new(),
                        format!("whether it is in the tree CRIU dumps: {why}"),
                    ));
                    continue;
                }
            }
            check_task(&mut table, pid, tree, &mut found);
        }
    }
    found
}

/// Checks one process of the tree: every thread's state, then its fds.
fn check_task(
    table: &mut ProcessTable<'_>,
    pid: i32,
    tree: &DumpTree,
    found: &mut Vec<TaskBlocker>,
) {
    let root = table.root();
    let (state, comm) = match table.state(pid) {
        Ok(s) => s,
        Err(Unavailable::Vanished) => return,
        Err(Unavailable::Failed(why)) => return found.push(unreadable(pid, String::new(), why)),
    };
    // A zombie has no fds, and CRIU dumps it as one.
    if state == b'Z' {
        return;
    }
    let mut tids = vec![(pid, state)];
    // One `fstatat` tells a process without other threads (most) from the rest.
    let single = matches!(root.thread_count(pid), Ok(Some(n)) if n <= 1);
    let others = if single {
        Ok(Vec::new())
    } else {
        root.threads(pid)
    };
    match others {
        Ok(others) => {
            for tid in others {
                match table.thread_state(pid, tid) {
                    Ok(s) => tids.push((tid, s)),
                    Err(Unavailable::Vanished) => {}
                    Err(Unavailable::Failed(why)) => {
                        found.push(unreadable(pid, comm.clone(), why));
                    }
                }
            }
        }
        Err(e)
            if crate::proc_root::ReadFailure::of(&e) == crate::proc_root::ReadFailure::Vanished =>
        {
            return;
        }
        Err(e) => found.push(unreadable(
            pid,
            comm.clone(),
            format!("cannot list {}: {e}", root.pid_path(pid, "task").display()),
        )),
    }
    for (tid, state) in tids {
        if state != b'D' {
            continue;
        }
        let rel = format!("task/{tid}/wchan");
        match root.read(pid, &rel) {
            Ok(wchan) if wchan.trim_ascii() == b"autofs_wait" => {
                let (who, criu_says) = if tid == pid {
                    (
                        format!("pid {pid} ({comm})"),
                        format!(", after its --timeout (10 s by default): Unseizable non-zombie {pid} found, state D"),
                    )
                } else {
                    (format!("thread {tid} of pid {pid} ({comm})"), String::new())
                };
                found.push(TaskBlocker {
                    pid,
                    tid,
                    comm: comm.clone(),
                    reason: TaskReason::RequesterWaiting,
                    fd: -1,
                    pipe_ino: 0,
                    message: format!(
                        "{who} sleeps in autofs_wait (state D): a request it made to an autofs mount is pending (read by the daemon or still queued) and it wakes when the daemon answers; until then CRIU's freeze cannot seize it and the dump fails{criu_says}"
                    ),
                });
            }
            // The kernel shows 0 for a thread that runs again (it woke between the two
            // reads: its state says so now) and where it will not say (no ptrace access).
            Ok(wchan)
                if wchan.trim_ascii() == b"0"
                    && table.thread_state(pid, tid).is_ok_and(|s| s == b'D') =>
            {
                found.push(unreadable(
                pid,
                comm.clone(),
                format!(
                    "thread {tid} is asleep in the kernel (state D), and the kernel will not say where ({} reads 0): if it waits for an autofs request, CRIU's freeze cannot seize it",
                    root.pid_path(pid, &rel).display()
                ),
                ));
            }
            Ok(_) => {}
            Err(e)
                if crate::proc_root::ReadFailure::of(&e)
                    == crate::proc_root::ReadFailure::Vanished => {}
            Err(e) => found.push(unreadable(
                pid,
                comm.clone(),
                format!(
                    "thread {tid} is asleep in the kernel (state D), and where cannot be read ({}: {e}): if it waits for an autofs request, CRIU's freeze cannot seize it",
                    root.pid_path(pid, &rel).display()
                ),
            )),
        }
    }
    match packet_mode_ends(root, pid, &tree.autofs_pipes) {
        Ok(ends) => found.extend(ends.into_iter().map(|end| TaskBlocker {
            pid,
            tid: pid,
            comm: comm.clone(),
            reason: TaskReason::PacketModePipe,
            fd: end.fd,
            pipe_ino: end.ino,
            message: format!(
                "pid {pid} ({comm}) holds fd {} of pipe {}, in packet mode (O_DIRECT, which the kernel sets on the write end of an autofs mount's pipe and which stays after the mount is unmounted or turned catatonic); no autofs mount of the dump shows that pipe, so CRIU's pipe dump refuses it and the dump fails: The packetized mode for pipes is not supported yet",
                end.fd, end.ino
            ),
        })),
        Err(e) if crate::proc_root::ReadFailure::of(&e) == crate::proc_root::ReadFailure::Vanished => {}
        Err(e) => found.push(unreadable(
            pid,
            comm,
            format!(
                "cannot read its fds ({}: {e}): a pipe end in packet mode there would fail CRIU's pipe dump",
                root.pid_path(pid, "fd").display()
            ),
        )),
    }
}

fn unreadable(pid: i32, comm: String, why: String) -> TaskBlocker {
    TaskBlocker {
        pid,
        tid: pid,
        comm,
        reason: TaskReason::Unreadable,
        fd: -1,
        pipe_ino: 0,
        message: if pid > 0 {
            format!(
                "whether pid {pid} stops CRIU's dump is unknown (nothing can be told from what could not be read): {why}"
            )
        } else {
            format!("whether a task stops CRIU's dump is unknown: {why}")
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A process of a fixture tree: `stat` (state, parent), its thread `pid` with a `wchan`,
    /// and `fds` as (fd, link target, fdinfo flags).
    fn process(
        root: &Path,
        pid: i32,
        state: char,
        ppid: i32,
        wchan: &str,
        fds: &[(i32, &str, u32)],
    ) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join(format!("task/{pid}"))).unwrap();
        std::fs::create_dir_all(dir.join("fd")).unwrap();
        std::fs::create_dir_all(dir.join("fdinfo")).unwrap();
        let stat = format!(
            "{pid} (p{pid}) {state} {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
        );
        std::fs::write(dir.join("stat"), &stat).unwrap();
        std::fs::write(dir.join(format!("task/{pid}/stat")), &stat).unwrap();
        std::fs::write(dir.join(format!("task/{pid}/wchan")), wchan).unwrap();
        for (fd, target, flags) in fds {
            std::os::unix::fs::symlink(target, dir.join(format!("fd/{fd}"))).unwrap();
            std::fs::write(
                dir.join(format!("fdinfo/{fd}")),
                format!("pos:\t0\nflags:\t{flags:o}\nmnt_id:\t15\nino:\t1\n"),
            )
            .unwrap();
        }
    }

    #[test]
    fn a_waiting_requester_and_a_leftover_packet_mode_end_of_the_tree_block_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 10 owns the tree; 11 waits for an answer; 12 keeps a packet-mode write end of a pipe
        // no mount shows, and of one a mount shows (exempt); 13 is a zombie; 14 sleeps
        // elsewhere; 20 is outside the tree with a packet-mode end of its own.
        process(root, 10, 'S', 1, "do_wait", &[(0, "/dev/null", 0o2)]);
        process(root, 11, 'D', 10, "autofs_wait\n", &[]);
        process(
            root,
            12,
            'S',
            10,
            "pipe_read",
            &[
                (5, "pipe:[700]", 0o40001),
                (6, "pipe:[800]", 0o40001),
                (7, "pipe:[900]", 0o1),
            ],
        );
        process(root, 13, 'Z', 10, "0", &[]);
        process(root, 14, 'D', 10, "io_schedule", &[]);
        process(root, 20, 'S', 1, "do_wait", &[(3, "pipe:[701]", 0o40001)]);
        let proc_root = ProcRoot::open(root).unwrap();
        let tree = DumpTree {
            owner: 10,
            members: vec![10, 11, 12, 13, 14, 20],
            autofs_pipes: HashSet::from([800]),
        };
        let found = blocking_tasks(&proc_root, &[tree]);
        let got: Vec<_> = found
            .iter()
            .map(|t| (t.pid, t.reason, t.fd, t.pipe_ino))
            .collect();
        assert_eq!(
            got,
            [
                (11, TaskReason::RequesterWaiting, -1, 0),
                (12, TaskReason::PacketModePipe, 5, 700),
            ],
            "{found:#?}"
        );
        assert!(
            found[0]
                .message
                .ends_with("Unseizable non-zombie 11 found, state D"),
            "{found:#?}"
        );
        assert!(found.iter().all(|t| t.comm.starts_with('p')), "{found:#?}");
    }

    #[test]
    fn what_cannot_be_read_blocks_as_unknown_never_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        process(root, 10, 'S', 1, "do_wait", &[]);
        process(root, 11, 'S', 10, "do_wait", &[]);
        // Its fd table is not a directory: listing it fails (not "gone").
        std::fs::remove_dir(root.join("11/fd")).unwrap();
        std::fs::write(root.join("11/fd"), "").unwrap();
        let proc_root = ProcRoot::open(root).unwrap();
        let trees = [
            DumpTree {
                owner: 10,
                members: vec![10, 11],
                autofs_pipes: HashSet::new(),
            },
            DumpTree {
                owner: 0,
                members: vec![30],
                autofs_pipes: HashSet::new(),
            },
        ];
        let found = blocking_tasks(&proc_root, &trees);
        let got: Vec<_> = found.iter().map(|t| (t.pid, t.reason)).collect();
        assert_eq!(
            got,
            [(11, TaskReason::Unreadable), (0, TaskReason::Unreadable)],
            "{found:#?}"
        );
        assert!(
            found[0].message.contains("cannot read its fds"),
            "{found:#?}"
        );
    }
}
