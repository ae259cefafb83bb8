//! The mount of an autofs superblock that CRIU dumps it from (reference §2), which is the mount
//! its probe (§3.6) goes through, across every mount namespace of one dump.
//!
//! `collect_mnt_namespaces()` (`criu/mount.c`) walks the dump's mount namespaces in `ns_ids`
//! order and appends each one's mount list to the global `mntinfo`. `parse_mountinfo()`
//! (`criu/proc_parse.c`) builds a namespace's list by prepending each line
//! (`mntinfo_add_list_before()`), so each namespace contributes its mount table reversed.
//! `__search_bindmounts()` starts a superblock's bind ring (`mnt_bind`, `mounts_sb_equal()`:
//! device and source) at its first mount in that global list, `M0`, and `list_add()`s every
//! later one right after `M0`: the ring is `M0`, then the other mounts in reverse global order.
//! `dump_mnt_ns()` visits mounts in the same global order, so `dump_one_fs()` is first called
//! on `M0`, and calls `autofs_dump()` on the first mount of the ring that shows the root
//! (`fsroot_mounted()`). That one call decides for every mount of the superblock: on success
//! they are all marked dumped.
//!
//! `nsid_add()` (`criu/namespaces.c`) prepends each namespace it discovers to `ns_ids`, and
//! `collect_pstree_ids()` discovers them task by task in the dumped tree's depth-first order
//! (`for_each_pstree_item()`, the root first): the namespace discovered last is walked first
//! ([`crate::ns_order::discovery_order`] recovers the order from `/proc`).
//!
//! Within one namespace this is: the superblock's last mount in mountinfo order, `L`, and
//! then, in mountinfo order, the others.

use std::collections::HashMap;

use crate::mountinfo::MountInfo;

/// A mount, by mount namespace inode and mount id.
pub type MountKey = (u64, u32);

/// One mount namespace's autofs mounts: its inode and its mounts in mountinfo order.
pub type NamespaceMounts<'a> = (u64, Vec<&'a MountInfo>);

/// A superblock as `mounts_sb_equal()` tells them apart: device and source.
type Superblock<'a> = (u32, u32, &'a [u8]);

/// For every mount of `namespaces` (the autofs mounts of one dump's mount namespaces, each in
/// mountinfo order, the namespaces in the order CRIU discovers them: the dumped tree's root's
/// first), the mount of the same superblock (device and source, `mounts_sb_equal()`) that
/// CRIU's `dump_one_fs()` calls `autofs_dump()` on; a superblock no mount of which shows its
/// root maps to nothing (CRIU cannot dump it at all).
pub fn dumped_from(namespaces: &[NamespaceMounts<'_>]) -> HashMap<MountKey, MountKey> {
    // The global list: the namespace discovered last first, each table reversed.
    let mut superblocks: HashMap<Superblock<'_>, Vec<(MountKey, &MountInfo)>> = HashMap::new();
    for (mnt_ns, lines) in namespaces.iter().rev() {
        for m in lines.iter().rev() {
            superblocks
                .entry((m.major, m.minor, &m.source))
                .or_default()
                .push(((*mnt_ns, m.mount_id), m));
        }
    }
    let mut from = HashMap::new();
    for mounts in superblocks.values() {
        let Some((first, rest)) = mounts.split_first() else {
            continue;
        };
        let chosen = std::iter::once(first)
            .chain(rest.iter().rev())
            .find(|(_, m)| m.root == b"/")
            .map(|(key, _)| *key);
        if let Some(chosen) = chosen {
            from.extend(mounts.iter().map(|(key, _)| (*key, chosen)));
        }
    }
    from
}

/// Whether some superblock of `namespaces` has mounts in more than one of them: only then
/// does the order of the namespaces matter to [`dumped_from`].
pub fn spans_namespaces(namespaces: &[NamespaceMounts<'_>]) -> bool {
    let mut seen: HashMap<Superblock<'_>, u64> = HashMap::new();
    namespaces.iter().any(|(mnt_ns, lines)| {
        lines
            .iter()
            .any(|m| *seen.entry((m.major, m.minor, &m.source)).or_insert(*mnt_ns) != *mnt_ns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(id: u32, minor: u32, root: &str) -> MountInfo {
        let line = format!(
            "{id} 22 0:{minor} {root} /m{id} rw - autofs src rw,fd=5,pgrp=9,timeout=0,minproto=5,maxproto=5,direct,pipe_ino=7"
        );
        MountInfo::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn the_last_mount_of_the_root_wins_then_the_first_in_table_order() {
        let lines = [
            mount(40, 60, "/"),
            mount(41, 60, "/"),
            mount(42, 61, "/"),
            mount(43, 61, "/"),
            mount(44, 61, "/sub"),
            mount(45, 62, "/sub"),
        ];
        let namespaces = [(7, lines.iter().collect())];
        let from = dumped_from(&namespaces);
        assert!(!spans_namespaces(&namespaces));
        // 41 is the last mount of 0:60 in the table, and shows the root.
        assert_eq!((from[&(7, 40)], from[&(7, 41)]), ((7, 41), (7, 41)));
        // The last mount of 0:61 is a bind of a directory: the ring goes on from the first.
        assert_eq!(
            (from[&(7, 42)], from[&(7, 43)], from[&(7, 44)]),
            ((7, 42), (7, 42), (7, 42))
        );
        // No mount of 0:62 shows its root.
        assert!(!from.contains_key(&(7, 45)));
    }

    #[test]
    fn the_namespace_discovered_last_is_walked_first_and_the_ring_goes_on_from_the_root() {
        // The root's namespace 1 and a member's namespace 2 (a private copy) share 0:60.
        let root_ns = [mount(50, 60, "/"), mount(51, 60, "/")];
        let member_ns = [mount(60, 60, "/"), mount(61, 60, "/")];
        let namespaces = [
            (1, root_ns.iter().collect()),
            (2, member_ns.iter().collect()),
        ];
        assert!(spans_namespaces(&namespaces));
        // The global list is 61 60 51 50: the ring starts at 61.
        assert_eq!(dumped_from(&namespaces)[&(1, 50)], (2, 61));

        // When the member's copy is a bind of a directory, the ring goes on in reverse global
        // order: the root's namespace in table order.
        let member_ns = [mount(60, 60, "/sub"), mount(61, 60, "/sub")];
        let namespaces = [
            (1, root_ns.iter().collect()),
            (2, member_ns.iter().collect()),
        ];
        let from = dumped_from(&namespaces);
        assert_eq!((from[&(1, 51)], from[&(2, 61)]), ((1, 50), (1, 50)));
    }
}
