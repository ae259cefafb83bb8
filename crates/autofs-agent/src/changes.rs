//! What changed between two scans, computed once per scan and shared by every watcher.
//!
//! A watcher holds no copy of the mounts it has sent: its position is the snapshot it has
//! delivered up to (shared with everyone else at that generation). When the next snapshot
//! arrives it applies that snapshot's [`Change`] through its filter; only a watcher that fell
//! more than one scan behind (a slow client) diffs its position against the latest itself.

use std::collections::HashMap;

use autofs_api::v1;

/// One mount's change, unfiltered.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// New: the report at this index of the new snapshot.
    Added(usize),
    /// Different: the previous report, and the index of the new one.
    Changed {
        /// The report before.
        old: Box<v1::MountReport>,
        /// Index in the new snapshot.
        new: usize,
    },
    /// Gone: the last report of it.
    Removed(Box<v1::MountReport>),
}

/// Every change from one report set to the next, in the order watchers send them: new and
/// changed mounts in report order, then removed ones by (mount namespace, mount id).
///
/// A mount is known by its namespace and mount id, but the kernel gives a new mount the
/// lowest free id (and a new namespace may get a freed inode number): a report under a known
/// key with another device or mount point is another mount, the old one REMOVED and the new
/// one ADDED, never one CHANGED into the other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// The deltas.
    pub deltas: Vec<Delta>,
}

/// Whether two reports under the same (namespace, mount id) are of the same mount: the same
/// device (an autofs mount's superblock) and mount point.
pub fn same_mount(a: &v1::MountReport, b: &v1::MountReport) -> bool {
    (a.major, a.minor) == (b.major, b.minor) && a.mount_point_bytes == b.mount_point_bytes
}

impl Change {
    /// The change from `old` to `new`.
    pub fn between(old: &[v1::MountReport], new: &[v1::MountReport]) -> Change {
        let before: HashMap<(u64, u32), &v1::MountReport> =
            old.iter().map(|r| ((r.mnt_ns, r.mount_id), r)).collect();
        let mut deltas = Vec::new();
        let mut present = std::collections::HashSet::with_capacity(new.len());
        for (i, report) in new.iter().enumerate() {
            let key = (report.mnt_ns, report.mount_id);
            present.insert(key);
            match before.get(&key) {
                None => deltas.push(Delta::Added(i)),
                Some(was) if !same_mount(was, report) => {
                    deltas.push(Delta::Removed(Box::new((*was).clone())));
                    deltas.push(Delta::Added(i));
                }
                Some(was) if *was != report => deltas.push(Delta::Changed {
                    old: Box::new((*was).clone()),
                    new: i,
                }),
                Some(_) => {}
            }
        }
        let mut removed: Vec<&v1::MountReport> = old
            .iter()
            .filter(|r| !present.contains(&(r.mnt_ns, r.mount_id)))
            .collect();
        removed.sort_by_key(|r| (r.mnt_ns, r.mount_id));
        deltas.extend(
            removed
                .into_iter()
                .map(|r| Delta::Removed(Box::new(r.clone()))),
        );
        Change { deltas }
    }

    /// The events a watcher whose filter is `matches` sends for this change, given the new
    /// report set: a mount entering the filter is ADDED, leaving it is REMOVED.
    pub fn events<'a>(
        &'a self,
        new: &'a [v1::MountReport],
        matches: impl Fn(&v1::MountReport) -> bool + 'a,
    ) -> impl Iterator<Item = (v1::mount_event::Kind, &'a v1::MountReport)> + 'a {
        use v1::mount_event::Kind;
        self.deltas.iter().filter_map(move |delta| match delta {
            Delta::Added(i) => {
                let r = &new[*i];
                matches(r).then_some((Kind::Added, r))
            }
            Delta::Changed { old, new: i } => {
                let r = &new[*i];
                match (matches(old), matches(r)) {
                    (true, true) => Some((Kind::Changed, r)),
                    (false, true) => Some((Kind::Added, r)),
                    (true, false) => Some((Kind::Removed, &**old)),
                    (false, false) => None,
                }
            }
            Delta::Removed(old) => matches(old).then_some((Kind::Removed, &**old)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::mount_event::Kind;

    fn report(id: u32, state: v1::MountState) -> v1::MountReport {
        v1::MountReport {
            mnt_ns: 1,
            mount_id: id,
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn adds_changes_and_removes_in_watch_order() {
        use v1::MountState::{Active, Interim};
        let old = [report(1, Active), report(2, Active), report(3, Active)];
        let new = [report(4, Active), report(2, Interim), report(1, Active)];
        let change = Change::between(&old, &new);
        let got: Vec<_> = change
            .events(&new, |_| true)
            .map(|(k, r)| (k, r.mount_id))
            .collect();
        assert_eq!(
            got,
            [(Kind::Added, 4), (Kind::Changed, 2), (Kind::Removed, 3)]
        );
    }

    #[test]
    fn a_mount_entering_or_leaving_the_filter_is_added_or_removed() {
        use v1::MountState::{Active, Interim};
        let old = [report(1, Active), report(2, Interim)];
        let new = [report(1, Interim), report(2, Active)];
        let change = Change::between(&old, &new);
        let interim_only = |r: &v1::MountReport| r.state == Interim as i32;
        let got: Vec<_> = change
            .events(&new, interim_only)
            .map(|(k, r)| (k, r.mount_id))
            .collect();
        assert_eq!(got, [(Kind::Added, 1), (Kind::Removed, 2)]);
    }

    /// An unmount and a mount between two scans: the new mount has the freed id.
    #[test]
    fn a_new_mount_under_a_freed_mount_id_is_removed_and_added_not_changed() {
        use v1::MountState::Active;
        let mount = |point: &str, minor| v1::MountReport {
            mount_point: point.into(),
            mount_point_bytes: point.as_bytes().to_vec(),
            major: 0,
            minor,
            ..report(7, Active)
        };
        let change = Change::between(&[mount("/a", 60)], &[mount("/b", 61)]);
        let got: Vec<_> = change
            .events(&[mount("/b", 61)], |_| true)
            .map(|(k, r)| (k, r.mount_point.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::Removed, "/a".to_owned()),
                (Kind::Added, "/b".to_owned())
            ]
        );
        // The same mount point with a new device is another mount too (the minor of an
        // anonymous device may be reused, the pair rarely is).
        let change = Change::between(&[mount("/a", 60)], &[mount("/a", 61)]);
        assert!(matches!(
            change.deltas[..],
            [Delta::Removed(_), Delta::Added(0)]
        ));
    }

    #[test]
    fn nothing_changed_is_an_empty_change() {
        let same = [report(1, v1::MountState::Active)];
        assert!(Change::between(&same, &same).deltas.is_empty());
    }
}
