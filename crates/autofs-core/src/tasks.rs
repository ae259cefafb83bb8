//! What stops CRIU in a workload's dumped tree that no mount report shows: a task asleep in an
//! autofs request, and a pipe end in packet mode that no autofs mount of the dump exempts.
//!
//! Both stop the dump whatever its mounts, and neither needs a mount to exist:
//! - A request the daemon has read but not answered leaves its requester asleep in the
//!   kernel's autofs wait (killable: state `D`), and the pipe empty. CRIU's freeze cannot
//!   seize it: with ptrace alone, compel's `compel_wait_task()` fails with "Unseizable
//!   non-zombie PID found, state D"; with a freezer cgroup (`--freeze-cgroup`, as runc
//!   passes), `freeze_processes()` fails first: "Unable to freeze cgroup ...". It clears once
//!   the daemon answers.
//! - The kernel sets `O_DIRECT` on the write end of an autofs mount's pipe and never clears
//!   it. A daemon keeps that end after its mount is unmounted (even its only mount, when no
//!   mount names the daemon any more). CRIU's `dump_one_pipe()` refuses a packet-mode end
//!   whose pipe is not one of the dump's autofs mounts (`is_autofs_pipe()`, filled from the
//!   `pipe_ino=` of every autofs mount of the dumped namespaces): "The packetized mode for
//!   pipes is not supported yet".
//!
//! Everything is read live, when the question is asked, as CRIU would meet it: the tree from
//! its root down (`task/<tid>/children`, as CRIU's `collect_children()`), each task's mount
//! namespace, each namespace's mount table once (the exempt pipes), then each thread's state
//! and each process's fds. That costs what the workload's tree holds, so the agent runs it
//! only when asked about one workload (`CheckMigratable`, `WaitMigratable`, `scan --pid`),
//! never in the node-wide scans.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::pipes::packet_mode_ends;
use crate::proc_root::{ProcRoot, ReadFailure};
use crate::process::{ProcessTable, Unavailable};
use crate::scan::Scan;

/// Why a task stops the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskReason {
    /// A thread is asleep in an autofs wait (state `D`, `wchan` `autofs_*`): CRIU's freeze
    /// cannot seize it. It clears when the daemon answers.
    RequesterWaiting,
    /// The task holds a pipe end in packet mode (`O_DIRECT`) of a pipe no autofs mount of the
    /// dump shows: CRIU's pipe dump refuses it.
    PacketModePipe,
    /// The task's state or fds, or the tree itself, could not be read: whether it stops the
    /// dump is unknown.
    Unreadable,
}

/// A task of the dumped tree that stops the dump by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskBlocker {
    /// Host pid of the process (0 when the tree's root itself is unknown).
    pub pid: i32,
    /// Host thread id: the sleeping thread for [`TaskReason::RequesterWaiting`], else `pid`.
    pub tid: i32,
    /// Its command name, escaped (see [`crate::escape`]); empty when unread.
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

/// The trees CRIU dumps for a workload ([`dump_roots`]), and how to read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpTrees {
    /// Host pids of the trees' roots (the owners of the workload's mount namespaces),
    /// ascending; 0 for a namespace whose owner could not be read.
    pub roots: Vec<i32>,
    /// Per mount namespace, the pid through which the scan read its complete mount table (a
    /// process whose root is the namespace's: one that is chrooted sees only part of it).
    pub readers: HashMap<u64, i32>,
    /// Whether the scan's view was restricted ([`crate::view::View::restricted`]): a process
    /// hidden from it looks exactly like one that exited, so a task listed in its parent's
    /// `children` whose files are missing is reported unreadable, never left out.
    pub restricted: bool,
}

/// The trees CRIU dumps for a workload whose mount namespaces are `namespaces` of `scan`. The
/// owner the scan read from a namespace's process forest ([`NamespaceInfo::owner_read`])
/// roots its tree; a namespace without autofs mounts, whose owner the scan did not read (it
/// only attributed it, through its lowest member), has its owner read now from `root`, from
/// its members' parents ([`crate::tree::namespace_owner`]): one `stat` per member. Owners
/// shared by several namespaces (one made inside a container is dumped from the container's
/// init) root one tree.
///
/// [`NamespaceInfo::owner_read`]: crate::scan::NamespaceInfo::owner_read
pub fn dump_roots(root: &ProcRoot, scan: &Scan, namespaces: &[u64]) -> DumpTrees {
    let mut table = ProcessTable::new(root);
    let mut roots: Vec<i32> = scan
        .namespaces
        .iter()
        .filter(|n| namespaces.contains(&n.mnt_ns))
        .filter_map(|n| {
            if n.owner_read() {
                return Some(n.owner_pid);
            }
            // The members still in the namespace: a pid the scan saw there may name another
            // process now (reused), which must not root the namespace's tree.
            let members: Vec<i32> = n
                .pids
                .iter()
                .copied()
                .filter(|&pid| root.mount_namespace(pid).map_or(true, |ns| ns == n.mnt_ns))
                .collect();
            match crate::tree::namespace_owner(&mut table, &members) {
                Some(owner) => Some(owner),
                // Every member exited since the scan (a short-lived sandbox): nothing of it is
                // left to dump. Through a view that hides processes that cannot be told.
                None if !scan.view.restricted
                    && members.iter().all(|&pid| {
                        table
                            .check_exists(pid)
                            .is_err_and(|e| e == Unavailable::Vanished)
                    }) =>
                {
                    None
                }
                None => Some(0),
            }
        })
        .collect();
    roots.sort_unstable();
    roots.dedup();
    let readers = scan
        .namespaces
        .iter()
        .filter(|n| n.table_reader > 0)
        .map(|n| (n.mnt_ns, n.table_reader))
        .collect();
    DumpTrees {
        roots,
        readers,
        restricted: scan.view.restricted,
    }
}

/// The tasks of the trees `trees` that stop CRIU's dump, read from `root` now, by tree, then
/// in depth-first order. A mount namespace new since the scan has its table read through the
/// first task of the tree found in it. A process that exits meanwhile is left out (CRIU would
/// not meet it); what cannot be read is a [`TaskReason::Unreadable`] blocker, never left out.
pub fn blocking_tasks(root: &ProcRoot, trees: &DumpTrees) -> Vec<TaskBlocker> {
    let mut table = ProcessTable::new(root);
    let mut found = Vec::new();
    for &owner in &trees.roots {
        if owner <= 0 {
            found.push(unreadable(
                0,
                String::new(),
                "the root of the tree CRIU dumps (the owner of the workload's mount namespace) could not be read, so neither could its tasks".to_owned(),
            ));
            continue;
        }
        let tasks = walk(&mut table, owner, trees.restricted, &mut found);
        let exempt = autofs_pipes(&mut table, &tasks, &trees.readers, &mut found);
        for &(pid, _) in &tasks {
            check_task(&mut table, pid, &exempt, &mut found);
        }
    }
    found
}

/// The tree rooted at `owner`, depth-first from it, each task with its mount namespace. A
/// task whose namespace cannot be read is said in `found` and left out with its subtree.
fn walk(
    table: &mut ProcessTable<'_>,
    owner: i32,
    restricted: bool,
    found: &mut Vec<TaskBlocker>,
) -> Vec<(i32, u64)> {
    let root = table.root();
    let mut tasks = Vec::new();
    let mut seen = HashSet::new();
    // (task, the parent that listed it)
    let mut stack = vec![(owner, 0)];
    while let Some((pid, parent)) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let mnt_ns = match root.mount_namespace(pid) {
            Ok(mnt_ns) => mnt_ns,
            Err(e) => {
                let link = root.pid_path(pid, "ns/mnt");
                let why = if pid == owner {
                    format!(
                        "the root of the tree CRIU dumps, pid {owner}, cannot be read ({}: {e}); it exited since the scan, or is hidden",
                        link.display()
                    )
                } else {
                    match Presence::of(table, pid) {
                        // A view that hides processes shows a hidden one exactly as one that
                        // exited; one its parent no longer lists was reaped.
                        Presence::Gone
                            if restricted
                                && root.children(parent).map_or(true, |c| c.contains(&pid)) =>
                        {
                            format!(
                                "its parent lists it as a child, part of the tree CRIU dumps, but {} cannot be read ({e}): this view of /proc hides it, or it exited",
                                link.display()
                            )
                        }
                        // Exited (a task reaped between the lookup and the read makes the
                        // kernel refuse the link: EACCES), exiting (`do_exit()` releases the
                        // namespaces first), or a zombie, which CRIU dumps as one.
                        Presence::Gone | Presence::Exiting | Presence::Zombie => continue,
                        Presence::Alive if ReadFailure::of(&e) == ReadFailure::Vanished => {
                            continue;
                        }
                        Presence::ZombieWithThreads => zombie_with_threads(&format!(
                            "so it has no mount namespace ({}: {e}), and",
                            link.display()
                        )),
                        Presence::Alive => format!("cannot read {}: {e}", link.display()),
                    }
                };
                found.push(unreadable(pid, String::new(), why));
                continue;
            }
        };
        tasks.push((pid, mnt_ns));
        match root.children(pid) {
            Ok(children) => stack.extend(children.into_iter().rev().map(|c| (c, pid))),
            Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => {}
            Err(e) => found.push(unreadable(
                pid,
                String::new(),
                format!(
                    "its children, part of the tree CRIU dumps, cannot be listed ({}: {e})",
                    root.pid_path(pid, "task").display()
                ),
            )),
        }
    }
    tasks
}

/// What is left of a process whose mount namespace or mount table could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// Its `stat` is gone too: it exited.
    Gone,
    /// Exiting (`PF_EXITING` in its `stat` flags, or, a zombie leader, in every other
    /// thread's): `do_exit()` releases its namespaces first, and a multi-threaded process
    /// shows its leader a zombie while the other threads are still torn down.
    Exiting,
    /// A zombie (state `Z`) of one thread: its namespaces are released at exit.
    Zombie,
    /// A thread-group leader that exited (`pthread_exit()`) while other threads run on (state
    /// `Z`, another thread without `PF_EXITING`).
    ZombieWithThreads,
    /// Still there, and none of the above.
    Alive,
}

/// Why a zombie thread-group leader whose other threads run on stops the dump; `detail` goes
/// before "its threads".
fn zombie_with_threads(detail: &str) -> String {
    format!(
        "its main thread has exited (pthread_exit) while its other threads run on, {detail} its threads are not looked at here; CRIU refuses such a process: Zombies with threads are not supported"
    )
}

impl Presence {
    fn of(table: &mut ProcessTable<'_>, pid: i32) -> Self {
        let (state, exiting) = match table.thread_exit_state(pid, pid) {
            Ok(facts) => facts,
            Err(Unavailable::Vanished) => return Self::Gone,
            Err(Unavailable::Failed(_)) => return Self::Alive,
        };
        if state != b'Z' {
            return if exiting { Self::Exiting } else { Self::Alive };
        }
        let Ok(others) = table.root().threads(pid) else {
            return Self::Zombie;
        };
        let mut torn_down = false;
        for tid in others {
            match table.thread_exit_state(pid, tid) {
                Ok((_, true)) => torn_down = true,
                Ok((_, false)) | Err(Unavailable::Failed(_)) => return Self::ZombieWithThreads,
                Err(Unavailable::Vanished) => {}
            }
        }
        if torn_down {
            Self::Exiting
        } else {
            Self::Zombie
        }
    }
}

/// The pipes CRIU's mountinfo parse exempts from its refusal of packet mode: the `pipe_ino=`
/// of every autofs mount of the namespaces `tasks` are in, each table read once now: through
/// the scan's reader while it is still in that namespace, else through the tree's tasks there,
/// in order, until one gives it (a task that exits meanwhile makes the kernel refuse its
/// table). A namespace whose every task is gone has nothing left to check.
fn autofs_pipes(
    table: &mut ProcessTable<'_>,
    tasks: &[(i32, u64)],
    readers: &HashMap<u64, i32>,
    found: &mut Vec<TaskBlocker>,
) -> HashSet<u64> {
    let root = table.root();
    let mut members: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    for &(pid, mnt_ns) in tasks {
        members.entry(mnt_ns).or_default().push(pid);
    }
    let mut pipes = HashSet::new();
    for (mnt_ns, members) in members {
        let reader = readers
            .get(&mnt_ns)
            .copied()
            .filter(|&r| root.mount_namespace(r).is_ok_and(|ns| ns == mnt_ns));
        let mut failed: Option<(i32, std::io::Error)> = None;
        let mut mountinfo = None;
        for pid in reader.into_iter().chain(members.iter().copied()) {
            match root.read(pid, "mountinfo") {
                Ok(text) => {
                    mountinfo = Some(text);
                    break;
                }
                Err(e) => {
                    if !matches!(
                        Presence::of(table, pid),
                        Presence::Gone | Presence::Exiting | Presence::Zombie
                    ) {
                        failed.get_or_insert((pid, e));
                    }
                }
            }
        }
        match (mountinfo, failed) {
            (Some(text), _) => pipes.extend(text.split(|&b| b == b'\n').filter_map(pipe_ino_of)),
            (None, Some((pid, e))) => found.push(unreadable(
                pid,
                String::new(),
                format!(
                    "the mount table of its mount namespace {mnt_ns}, whose autofs pipes CRIU's pipe dump exempts, cannot be read ({}: {e})",
                    root.pid_path(pid, "mountinfo").display()
                ),
            )),
            (None, None) => {}
        }
    }
    pipes
}

/// The `pipe_ino=` of an autofs mountinfo line, as CRIU's `autofs_parse()` reads it (that
/// option alone: the others may fail CRIU's parse later, never this exemption).
fn pipe_ino_of(line: &[u8]) -> Option<u64> {
    let l = crate::mountinfo::MountLine::parse(line).ok()?;
    if !l.is_autofs() {
        return None;
    }
    l.super_options
        .split(|&b| b == b',')
        .find_map(|o| o.strip_prefix(b"pipe_ino="))
        .and_then(crate::proc_root::parse_decimal)
}

/// Checks one process of the tree: every thread's state, then its fds.
fn check_task(
    table: &mut ProcessTable<'_>,
    pid: i32,
    exempt: &HashSet<u64>,
    found: &mut Vec<TaskBlocker>,
) {
    let root = table.root();
    let (state, comm) = match table.state(pid) {
        Ok(s) => s,
        Err(Unavailable::Vanished) => return,
        Err(Unavailable::Failed(why)) => return found.push(unreadable(pid, String::new(), why)),
    };
    // A zombie has no fds, and CRIU dumps it as one; not one whose other threads run on.
    if state == b'Z' {
        if Presence::of(table, pid) == Presence::ZombieWithThreads {
            found.push(unreadable(pid, comm, zombie_with_threads("and")));
        }
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
        Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => return,
        Err(e) => found.push(unreadable(
            pid,
            comm.clone(),
            format!("cannot list {}: {e}", root.pid_path(pid, "task").display()),
        )),
    }
    for (tid, state) in tids {
        if state == b'D' {
            check_sleeper(table, pid, tid, &comm, found);
        }
    }
    match packet_mode_ends(root, pid, exempt) {
        Ok(ends) => found.extend(ends.into_iter().map(|end| TaskBlocker {
            pid,
            tid: pid,
            comm: comm.clone(),
            reason: TaskReason::PacketModePipe,
            fd: end.fd,
            pipe_ino: end.ino,
            message: format!(
                "pid {pid} ({comm}) holds fd {} of pipe {}, in packet mode (O_DIRECT: the kernel sets it on the write end of an autofs mount's pipe and it stays after the mount is unmounted or turned catatonic; pipe2(O_DIRECT) sets it too); no autofs mount of the dump shows that pipe, so CRIU's pipe dump refuses it and the dump fails: The packetized mode for pipes is not supported yet",
                end.fd, end.ino
            ),
        })),
        Err(e) if ReadFailure::of(&e) == ReadFailure::Vanished => {}
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

/// A thread asleep in the kernel (state `D`): where (`wchan`) tells an autofs wait.
fn check_sleeper(
    table: &mut ProcessTable<'_>,
    pid: i32,
    tid: i32,
    comm: &str,
    found: &mut Vec<TaskBlocker>,
) {
    let root = table.root();
    let rel = format!("task/{tid}/wchan");
    // Whether it still sleeps there: a `wchan` of 0, or none, is what a thread that runs
    // again shows too.
    let mut still_asleep = |why: String| match table.thread_state(pid, tid) {
        Ok(b'D') => Some(unreadable(pid, comm.to_owned(), why)),
        Ok(_) | Err(Unavailable::Vanished) => None,
        Err(Unavailable::Failed(e)) => Some(unreadable(pid, comm.to_owned(), e)),
    };
    let blocker = match root.read(pid, &rel) {
        // autofs_wait() (a lookup's request), autofs_expire_wait() (a walk into a mount
        // being expired), and whatever else autofs sleeps in.
        Ok(wchan) if wchan.trim_ascii().starts_with(b"autofs") => {
            let wchan = String::from_utf8_lossy(wchan.trim_ascii()).into_owned();
            let who = if tid == pid {
                format!("pid {pid} ({comm})")
            } else {
                format!("thread {tid} of pid {pid} ({comm})")
            };
            Some(TaskBlocker {
                pid,
                tid,
                comm: comm.to_owned(),
                reason: TaskReason::RequesterWaiting,
                fd: -1,
                pipe_ino: 0,
                message: format!(
                    "{who} sleeps in {wchan} (state D): a request to an autofs mount is pending (read by the daemon and not answered yet, or still queued) and it wakes when the daemon answers; until then CRIU's freeze cannot seize it and the dump fails, after its --timeout (10 s by default): Unseizable non-zombie {tid} found, state D (with a freezer cgroup, as runc passes: Unable to freeze cgroup)"
                ),
            })
        }
        Ok(wchan) if wchan.trim_ascii() == b"0" => still_asleep(format!(
            "thread {tid} is asleep in the kernel (state D), and the kernel will not say where ({} reads 0): if it waits for an autofs request, CRIU's freeze cannot seize it",
            root.pid_path(pid, &rel).display()
        )),
        Ok(_) => None,
        Err(e) => still_asleep(format!(
            "thread {tid} is asleep in the kernel (state D), and where cannot be read ({}: {e}): if it waits for an autofs request, CRIU's freeze cannot seize it",
            root.pid_path(pid, &rel).display()
        )),
    };
    found.extend(blocker);
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

    const NS: u64 = 4026532000;

    /// A process of a fixture tree, in mount namespace `NS`: `stat` (state, parent), its thread
    /// `pid` with a `wchan` and its `children`, and `fds` as (fd, link target, fdinfo flags).
    fn process(
        root: &Path,
        pid: i32,
        state: char,
        ppid: i32,
        wchan: &str,
        children: &str,
        fds: &[(i32, &str, u32)],
    ) {
        let dir = root.join(pid.to_string());
        let task = dir.join(format!("task/{pid}"));
        for d in [&task, &dir.join("fd"), &dir.join("fdinfo"), &dir.join("ns")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(format!("mnt:[{NS}]"), dir.join("ns/mnt")).unwrap();
        let stat = format!(
            "{pid} (p{pid}) {state} {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
        );
        std::fs::write(dir.join("stat"), &stat).unwrap();
        std::fs::write(task.join("stat"), &stat).unwrap();
        std::fs::write(task.join("wchan"), wchan).unwrap();
        std::fs::write(task.join("children"), children).unwrap();
        for (fd, target, flags) in fds {
            std::os::unix::fs::symlink(target, dir.join(format!("fd/{fd}"))).unwrap();
            std::fs::write(
                dir.join(format!("fdinfo/{fd}")),
                format!("pos:\t0\nflags:\t{flags:o}\nmnt_id:\t15\nino:\t1\n"),
            )
            .unwrap();
        }
    }

    /// The trees rooted at `roots`, with no reader known and a view that hides nothing.
    fn tree_of(roots: &[i32]) -> DumpTrees {
        DumpTrees {
            roots: roots.to_vec(),
            ..DumpTrees::default()
        }
    }

    /// `pid`'s `status`, with its parent and `NSpid:` (host first).
    fn status(root: &Path, pid: i32, ppid: i32, nspid: &str) {
        std::fs::write(
            root.join(format!("{pid}/status")),
            format!("Name:\tp{pid}\nTgid:\t{pid}\nPPid:\t{ppid}\nNSpid:\t{nspid}\n"),
        )
        .unwrap();
    }

    /// `pid`'s mountinfo: one autofs mount with pipe 800, one tmpfs.
    fn mountinfo(root: &Path, pid: i32) {
        std::fs::write(
            root.join(format!("{pid}/mountinfo")),
            "22 1 0:40 / /m rw - autofs systemd-1 rw,fd=5,pgrp=12,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=800\n23 1 0:41 / /t rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
    }

    #[test]
    fn a_waiting_requester_and_a_leftover_packet_mode_end_of_the_tree_block_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 10 roots the tree; 11 waits for an answer; 12 keeps a packet-mode write end of a
        // pipe no mount shows (700), and of one a mount shows (800: exempt); 13 is a zombie;
        // 14 sleeps elsewhere; 20 is outside the tree with a packet-mode end of its own.
        process(
            root,
            10,
            'S',
            1,
            "do_wait",
            "11 12 13 14 ",
            &[(0, "/dev/null", 0o2)],
        );
        process(root, 11, 'D', 10, "autofs_wait\n", "", &[]);
        process(
            root,
            12,
            'S',
            10,
            "pipe_read",
            "",
            &[
                (5, "pipe:[700]", 0o40001),
                (6, "pipe:[800]", 0o40001),
                (7, "pipe:[900]", 0o1),
            ],
        );
        process(root, 13, 'Z', 10, "0", "", &[]);
        process(root, 14, 'D', 10, "io_schedule", "", &[]);
        process(
            root,
            20,
            'S',
            1,
            "do_wait",
            "",
            &[(3, "pipe:[701]", 0o40001)],
        );
        mountinfo(root, 10);
        let proc_root = ProcRoot::open(root).unwrap();
        let found = blocking_tasks(&proc_root, &tree_of(&[10]));
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
                .contains("Unseizable non-zombie 11 found, state D"),
            "{found:#?}"
        );
        assert!(found.iter().all(|t| t.comm.starts_with('p')), "{found:#?}");
    }

    #[test]
    fn what_cannot_be_read_blocks_as_unknown_never_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        process(root, 10, 'S', 1, "do_wait", "11", &[]);
        process(root, 11, 'S', 10, "do_wait", "", &[]);
        // Its fd table is not a directory: listing it fails (not "gone").
        std::fs::remove_dir(root.join("11/fd")).unwrap();
        std::fs::write(root.join("11/fd"), "").unwrap();
        // No mount table of the namespace can be read either (10 has none).
        let proc_root = ProcRoot::open(root).unwrap();
        let found = blocking_tasks(&proc_root, &tree_of(&[10, 0, 77]));
        let got: Vec<_> = found.iter().map(|t| (t.pid, t.reason)).collect();
        assert_eq!(
            got,
            [
                (10, TaskReason::Unreadable),
                (11, TaskReason::Unreadable),
                (0, TaskReason::Unreadable),
                (77, TaskReason::Unreadable),
            ],
            "{found:#?}"
        );
        assert!(found[0].message.contains("mount table"), "{found:#?}");
        assert!(
            found[1].message.contains("cannot read its fds"),
            "{found:#?}"
        );
        assert!(
            found[3].message.contains("exited since the scan"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_namespace_without_autofs_mounts_is_dumped_from_its_owner_not_its_lowest_member() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Container init 300 has children 7 (a pid after the counter wrapped) and 301, which
        // keeps a packet-mode end of a pipe no mount shows (its daemon's only mount was
        // unmounted): no autofs mount is left, so the scan attributed the namespace through
        // its lowest member, 7, and read no owner.
        process(root, 300, 'S', 1, "do_wait", "7 301", &[]);
        process(root, 7, 'S', 300, "do_wait", "", &[]);
        process(
            root,
            301,
            'S',
            300,
            "pipe_read",
            "",
            &[(5, "pipe:[700]", 0o40001)],
        );
        // Pid 9, a member when the scan ran, now names a container init of another namespace
        // (the pid was reused): it would outrank 300.
        process(root, 9, 'S', 1, "do_wait", "", &[]);
        std::fs::remove_file(root.join("9/ns/mnt")).unwrap();
        std::os::unix::fs::symlink(format!("mnt:[{}]", NS + 2), root.join("9/ns/mnt")).unwrap();
        status(root, 9, 1, "9\t1");
        status(root, 300, 1, "300\t1");
        status(root, 7, 300, "7\t3");
        status(root, 301, 300, "301\t2");
        std::fs::write(
            root.join("300/mountinfo"),
            "23 1 0:41 / / rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let scan = Scan {
            reports: Vec::new(),
            namespaces: vec![
                crate::scan::NamespaceInfo {
                    mnt_ns: NS,
                    owner_pid: 7,
                    container_id: String::new(),
                    pod_uid: String::new(),
                    pids: vec![7, 9, 300, 301],
                    autofs_mounts: 0,
                    mount_table_error: None,
                    table_reader: 7,
                },
                crate::scan::NamespaceInfo {
                    // A sandbox of the container whose every member exited since the scan.
                    mnt_ns: NS + 1,
                    owner_pid: 500,
                    container_id: String::new(),
                    pod_uid: String::new(),
                    pids: vec![500],
                    autofs_mounts: 0,
                    mount_table_error: None,
                    table_reader: 500,
                },
            ],
            view: Default::default(),
            stats: Default::default(),
            tree_paths: Vec::new(),
            gone_leaders: Vec::new(),
            unknown_processes: Vec::new(),
        };
        assert!(scan.namespaces.iter().all(|n| !n.owner_read()));
        let proc_root = ProcRoot::open(root).unwrap();
        let trees = dump_roots(&proc_root, &scan, &[NS, NS + 1]);
        assert_eq!(trees.roots, [300], "{trees:#?}");
        let found = blocking_tasks(&proc_root, &trees);
        let got: Vec<_> = found
            .iter()
            .map(|t| (t.pid, t.reason, t.fd, t.pipe_ino))
            .collect();
        assert_eq!(
            got,
            [(301, TaskReason::PacketModePipe, 5, 700)],
            "{found:#?}"
        );
    }

    #[test]
    fn a_zombie_with_live_threads_and_a_child_hidden_from_the_view_are_never_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 11 is listed but has no files (exited, or hidden by the view); 12's main thread
        // exited while thread 120 runs; 13 is a plain zombie; 14 is exiting (not a zombie
        // yet). None of the last three has a mount namespace any more.
        process(root, 10, 'S', 1, "do_wait", "11 12 13 14 15 ", &[]);
        mountinfo(root, 10);
        for (pid, state) in [(12, 'Z'), (13, 'Z'), (14, 'R')] {
            process(root, pid, state, 10, "0", "", &[]);
            std::fs::remove_file(root.join(format!("{pid}/ns/mnt"))).unwrap();
        }
        // 12's thread 120 runs on; 15 is a multi-threaded process exiting: its leader shows a
        // zombie while thread 150, exiting too (PF_EXITING), is torn down.
        let thread = |pid: i32, tid: i32, flags: u32| {
            std::fs::create_dir_all(root.join(format!("{pid}/task/{tid}"))).unwrap();
            std::fs::write(
                root.join(format!("{pid}/task/{tid}/stat")),
                format!(
                    "{tid} (p{pid}) S 10 {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 2 0 100 0 0"
                ),
            )
            .unwrap();
        };
        thread(12, 120, 0x400040);
        process(root, 15, 'Z', 10, "0", "", &[]);
        std::fs::remove_file(root.join("15/ns/mnt")).unwrap();
        thread(15, 150, 0x40044c);
        let proc_root = ProcRoot::open(root).unwrap();
        let found = blocking_tasks(&proc_root, &tree_of(&[10]));
        let got: Vec<_> = found.iter().map(|t| (t.pid, t.reason)).collect();
        assert_eq!(got, [(12, TaskReason::Unreadable)], "{found:#?}");
        assert!(
            found[0]
                .message
                .contains("Zombies with threads are not supported"),
            "{found:#?}"
        );
        // Through a view that hides processes, the missing child may be hidden, not gone.
        let restricted = DumpTrees {
            restricted: true,
            ..tree_of(&[10])
        };
        let found = blocking_tasks(&proc_root, &restricted);
        let got: Vec<_> = found.iter().map(|t| (t.pid, t.reason)).collect();
        assert_eq!(
            got,
            [(11, TaskReason::Unreadable), (12, TaskReason::Unreadable)],
            "{found:#?}"
        );
        assert!(found[0].message.contains("hides it"), "{found:#?}");
    }

    #[test]
    fn the_exempt_pipes_are_read_through_another_task_when_one_cannot_give_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // The scan's reader (5) has left the namespace; 10 gives no table; 11 does, and its
        // autofs mount exempts the write end 12 keeps.
        process(root, 10, 'S', 1, "do_wait", "11 12 ", &[]);
        process(root, 11, 'S', 10, "do_wait", "", &[]);
        process(
            root,
            12,
            'S',
            10,
            "pipe_read",
            "",
            &[(6, "pipe:[800]", 0o40001)],
        );
        mountinfo(root, 11);
        let proc_root = ProcRoot::open(root).unwrap();
        let trees = DumpTrees {
            readers: HashMap::from([(NS, 5)]),
            ..tree_of(&[10])
        };
        let found = blocking_tasks(&proc_root, &trees);
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn a_kernel_that_lists_no_children_leaves_the_tree_unknown_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        process(root, 10, 'S', 1, "do_wait", "", &[]);
        mountinfo(root, 10);
        std::fs::remove_file(root.join("10/task/10/children")).unwrap();
        let proc_root = ProcRoot::open(root).unwrap();
        let found = blocking_tasks(&proc_root, &tree_of(&[10]));
        let got: Vec<_> = found.iter().map(|t| (t.pid, t.reason)).collect();
        assert_eq!(got, [(10, TaskReason::Unreadable)], "{found:#?}");
        assert!(
            found[0].message.contains("CONFIG_PROC_CHILDREN"),
            "{found:#?}"
        );
    }

    #[test]
    fn a_leader_that_called_pthread_exit_is_a_zombie_whose_threads_run_on_in_the_real_kernel() {
        // The main thread of a real process calls pthread_exit() while another thread sleeps:
        // the kernel shows the leader a zombie without a mount namespace, and the other thread
        // without PF_EXITING.
        let script = "import threading, time, ctypes\n\
            threading.Thread(target=time.sleep, args=(600,)).start()\n\
            ctypes.CDLL(None).pthread_exit(None)\n";
        let child = autofs_testkit::child::Reaped(
            std::process::Command::new("python3")
                .args(["-c", script])
                .spawn()
                .expect("spawn python3"),
        );
        let pid = i32::try_from(child.0.id()).unwrap();
        let root = ProcRoot::open("/proc").unwrap();
        let mut presence = Presence::Alive;
        // Up to 60 s for the interpreter to start (a loaded machine), never a timed assertion.
        for _ in 0..60_000 {
            presence = Presence::of(&mut ProcessTable::new(&root), pid);
            if presence != Presence::Alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(presence, Presence::ZombieWithThreads);
        assert!(root.mount_namespace(pid).is_err());
    }
}
