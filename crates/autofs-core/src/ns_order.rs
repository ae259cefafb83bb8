//! The order in which CRIU discovers the mount namespaces of the tree it dumps, which decides
//! the mount its probe of a superblock shared by several of them goes through
//! ([`crate::dumped_from`]).
//!
//! `collect_pstree_ids()` (`criu/cr-dump.c`) visits the dumped tree depth-first, the root
//! first (`for_each_pstree_item()`), and `dump_task_ns_ids()` adds each namespace at its first
//! task. A task's children come in `collect_children()`'s order (`criu/seize.c`): the
//! `task/<tid>/children` file of each of its threads, the thread-group leader first, each in
//! the kernel's order (the order they became its children): [`ProcRoot::children`]. Where a
//! parent's children cannot be read (it exited meanwhile), pid order stands in for them.

use std::cmp::Ordering;
use std::collections::HashMap;

#[cfg(doc)]
use crate::proc_root::ProcRoot;
use crate::process::ProcessTable;

/// The facts the order rests on.
trait Tree {
    /// The parent pid of `pid`; `None` when it could not be read.
    fn parent(&mut self, pid: i32) -> Option<i32>;
    /// The children of `pid` in CRIU's order; `None` when they could not be read.
    fn children(&mut self, pid: i32) -> Option<Vec<i32>>;
}

struct Proc<'t, 'a>(&'t mut ProcessTable<'a>);

impl Tree for Proc<'_, '_> {
    fn parent(&mut self, pid: i32) -> Option<i32> {
        self.0.parent(pid).ok()
    }

    fn children(&mut self, pid: i32) -> Option<Vec<i32>> {
        self.0.root().children(pid).ok()
    }
}

/// The mount namespaces of `namespaces` (inode and host pids of its members) that the tree
/// rooted at `owner` has tasks in, in the order CRIU discovers them when it dumps that tree,
/// each with the task that discovers it (CRIU's `ns_pid`, whose pid namespace its probe of
/// the namespace's mounts enters): `owner` for its own namespace, else the first member in a
/// depth-first walk of the tree. Namespaces none of whose members descends from `owner` (their
/// processes exited meanwhile, or left the tree) are not in it: CRIU does not dump them with
/// this tree.
pub fn discovery_order(
    table: &mut ProcessTable<'_>,
    owner: i32,
    namespaces: &[(u64, &[i32])],
) -> Vec<(u64, i32)> {
    order(&mut Proc(table), owner, namespaces)
}

fn order(tree: &mut dyn Tree, owner: i32, namespaces: &[(u64, &[i32])]) -> Vec<(u64, i32)> {
    let mut siblings = Siblings::default();
    let mut firsts: Vec<(Vec<i32>, u64)> = Vec::new();
    for (mnt_ns, members) in namespaces {
        let mut first: Option<Vec<i32>> = None;
        if members.binary_search(&owner).is_ok() {
            // The root is discovered before any other task.
            first = Some(Vec::new());
        } else {
            for &pid in *members {
                let Some(path) = path_from(tree, owner, pid) else {
                    continue;
                };
                if first
                    .as_ref()
                    .is_none_or(|f| siblings.compare(tree, owner, &path, f) == Ordering::Less)
                {
                    first = Some(path);
                }
            }
        }
        if let Some(path) = first {
            firsts.push((path, *mnt_ns));
        }
    }
    // Insertion keeps this to the comparisons the sort needs, each reading children once.
    let mut sorted: Vec<(Vec<i32>, u64)> = Vec::with_capacity(firsts.len());
    for item in firsts {
        let at = sorted
            .iter()
            .position(|s| siblings.compare(tree, owner, &item.0, &s.0) == Ordering::Less)
            .unwrap_or(sorted.len());
        sorted.insert(at, item);
    }
    sorted
        .into_iter()
        .map(|(path, mnt_ns)| (mnt_ns, path.last().copied().unwrap_or(owner)))
        .collect()
}

/// The pids from `owner`'s child down to `pid` (empty for `owner` itself); `None` when `pid`
/// does not descend from `owner` or a parent could not be read.
fn path_from(tree: &mut dyn Tree, owner: i32, pid: i32) -> Option<Vec<i32>> {
    let mut path = Vec::new();
    let mut at = pid;
    while at != owner {
        // As ProcessTable::descends_from: a longer chain is a loop.
        if at <= 0 || path.len() > 4096 {
            return None;
        }
        path.push(at);
        at = tree.parent(at)?;
    }
    path.reverse();
    Some(path)
}

/// Children lists read so far.
#[derive(Default)]
struct Siblings(HashMap<i32, Option<Vec<i32>>>);

impl Siblings {
    /// Depth-first order of the processes at `a` and `b` (paths from `owner`).
    fn compare(&mut self, tree: &mut dyn Tree, owner: i32, a: &[i32], b: &[i32]) -> Ordering {
        let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) else {
            // One is the other's ancestor (or the same process): the ancestor comes first.
            return a.len().cmp(&b.len());
        };
        let parent = if i == 0 { owner } else { a[i - 1] };
        let children = self
            .0
            .entry(parent)
            .or_insert_with(|| tree.children(parent));
        let rank = |pid: i32| {
            let at = children
                .as_ref()
                .and_then(|c| c.iter().position(|&c| c == pid));
            (at.unwrap_or(usize::MAX), pid)
        };
        rank(a[i]).cmp(&rank(b[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        parents: HashMap<i32, i32>,
        children: HashMap<i32, Vec<i32>>,
    }

    impl Tree for Fake {
        fn parent(&mut self, pid: i32) -> Option<i32> {
            self.parents.get(&pid).copied()
        }

        fn children(&mut self, pid: i32) -> Option<Vec<i32>> {
            self.children.get(&pid).cloned()
        }
    }

    fn fake(edges: &[(i32, i32)], children: &[(i32, &[i32])]) -> Fake {
        Fake {
            parents: edges.iter().map(|&(c, p)| (c, p)).collect(),
            children: children.iter().map(|&(p, c)| (p, c.to_vec())).collect(),
        }
    }

    #[test]
    fn namespaces_come_in_the_depth_first_order_of_their_first_member() {
        // 10 ─┬─ 30 ── 31 (ns C)
        //     └─ 20 (ns B) ── 21 (ns D)
        // 20 became 10's child after 30 (it was re-parented): the kernel lists it last.
        let mut tree = fake(
            &[(20, 10), (21, 20), (30, 10), (31, 30)],
            &[(10, &[30, 20]), (20, &[21]), (30, &[31])],
        );
        let namespaces: [(u64, &[i32]); 5] = [
            (1, &[10]),
            (2, &[20, 99]),
            (3, &[31]),
            (4, &[21]),
            (5, &[98]),
        ];
        // 98 and 99 are not in the tree (5 is left out); C (under 30) comes before B and D
        // (under 20); each namespace comes with the task that discovers it.
        assert_eq!(
            order(&mut tree, 10, &namespaces),
            [(1, 10), (3, 31), (2, 20), (4, 21)]
        );
    }

    #[test]
    fn pid_order_stands_in_for_unreadable_children() {
        let mut tree = fake(&[(20, 10), (30, 10)], &[]);
        let namespaces: [(u64, &[i32]); 2] = [(6, &[30]), (7, &[20])];
        assert_eq!(order(&mut tree, 10, &namespaces), [(7, 20), (6, 30)]);
    }
}
