//! The process tree CRIU dumps for a mount namespace: its owner (the task CRIU is given, the
//! container's init) and the owner's descendants.
//!
//! CRIU checkpoints a container by dumping the tree rooted at its init; `pid_to_virt()` finds a
//! master only among those tasks (reference §3.8). Membership of the owner's *pid namespace* is
//! not enough: a `--pid=host` container, a pod sharing its pid namespace, or `--pid=container:X`
//! sees processes that CRIU does not dump with it.
//!
//! The owner is a root of the namespace's process forest: a member whose parent is outside the
//! mount namespace. Among several roots (`docker exec` sessions join a container's namespaces
//! later) a pid-namespace init wins, then the shallowest pid namespace, then the oldest process
//! (start time; pid order says nothing once pids wrap). A root that only waits for a pid-namespace
//! init it forked (`unshare --mount --pid --fork`: the parent enters the new mount namespace but
//! stays in the outer pid namespace) hands ownership to that init, which is the container.

use std::collections::HashSet;

use crate::process::ProcessTable;

/// The host pid of the owner of the mount namespace whose members are `pids` (ascending).
/// `None` when no member's facts could be read.
pub fn namespace_owner(table: &mut ProcessTable<'_>, pids: &[i32]) -> Option<i32> {
    // Pid 1 of the proc root's pid namespace outranks every other candidate (an init, of the
    // shallowest pid namespace, the oldest process): on the host's namespace, with thousands
    // of members, nothing else needs reading.
    if pids.first() == Some(&1) && table.info(1).is_ok_and(|i| i.ppid == 0) {
        return Some(1);
    }
    let members: HashSet<i32> = pids.iter().copied().collect();
    let mut candidates = Vec::new();
    for &pid in pids {
        // Every member's parent (one `stat` each); full facts only for the roots.
        match table.parent(pid) {
            Ok(ppid) if !members.contains(&ppid) => {}
            _ => continue,
        }
        let Ok(info) = table.info(pid) else { continue };
        let root = info.clone();
        let mut owner = root.clone();
        if !root.is_pidns_init() {
            let children: Vec<i32> = pids
                .iter()
                .copied()
                .filter(|&c| table.parent(c).is_ok_and(|ppid| ppid == root.pid))
                .collect();
            if let [only] = children[..]
                && let Ok(child) = table.info(only)
                && child.is_pidns_init()
                && child.pidns_depth() > root.pidns_depth()
            {
                owner = child.clone();
            }
        }
        candidates.push((
            !owner.is_pidns_init(),
            owner.pidns_depth(),
            owner.starttime,
            owner.pid,
        ));
    }
    candidates.into_iter().min().map(|(_, _, _, pid)| pid)
}
