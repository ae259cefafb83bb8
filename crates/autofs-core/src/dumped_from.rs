//! The mount of an autofs superblock that CRIU dumps it from (reference §2), which is the mount
//! its probe (§3.6) goes through.
//!
//! `parse_mountinfo()` (`criu/proc_parse.c`) builds a namespace's mount list by prepending each
//! line (`mntinfo_add_list_before()`), so the list is the mount table reversed, and
//! `dump_mnt_ns()` (`criu/mount.c`) walks it in that order. `dump_one_fs()` is thus first called
//! on the superblock's last mount in mountinfo order, `L`, and calls `autofs_dump()` on the first
//! mount of its bind ring that shows the root (`fsroot_mounted()`): `L` itself, or else, in ring
//! order, the superblock's other mounts in mountinfo order (`__search_bindmounts()` builds the
//! ring from `L` with `list_add()`, which puts each later-listed mount first). That one call
//! decides for every mount of the superblock: on success they are all marked dumped.
//!
//! Only the mounts of one mount namespace are grouped here: across namespaces CRIU's order
//! also depends on the order it found the namespaces in (`ns_ids`), which `/proc` does not tell.

use std::collections::HashMap;

use crate::mountinfo::MountInfo;

/// For every mount of `lines` (one namespace's autofs mounts, in mountinfo order), the mount id
/// of the mount of the same superblock (device and source, `mounts_sb_equal()`) that CRIU's
/// `dump_one_fs()` calls `autofs_dump()` on; a superblock no mount of which shows its root maps
/// to nothing (CRIU cannot dump it at all).
pub fn dumped_from<'a>(lines: impl IntoIterator<Item = &'a MountInfo>) -> HashMap<u32, u32> {
    let mut superblocks: HashMap<(u32, u32, &[u8]), Vec<&MountInfo>> = HashMap::new();
    for m in lines {
        superblocks
            .entry((m.major, m.minor, &m.source))
            .or_default()
            .push(m);
    }
    let mut from = HashMap::new();
    for mounts in superblocks.values() {
        let Some((last, rest)) = mounts.split_last() else {
            continue;
        };
        let chosen = std::iter::once(last)
            .chain(rest)
            .find(|m| m.root == b"/")
            .map(|m| m.mount_id);
        if let Some(chosen) = chosen {
            from.extend(mounts.iter().map(|m| (m.mount_id, chosen)));
        }
    }
    from
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
        let from = dumped_from(&lines);
        // 41 is the last mount of 0:60 in the table, and shows the root.
        assert_eq!((from[&40], from[&41]), (41, 41));
        // The last mount of 0:61 is a bind of a directory: the ring goes on from the first.
        assert_eq!((from[&42], from[&43], from[&44]), (42, 42, 42));
        // No mount of 0:62 shows its root.
        assert!(!from.contains_key(&45));
    }
}
