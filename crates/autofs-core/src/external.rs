//! CRIU's external mounts (`--external mnt[PATH]:KEY`): the mounts of a workload CRIU is told
//! not to dump, and the autofs mounts it therefore skips.
//!
//! runc and crun checkpoint a container with every bind mount of its OCI spec marked external
//! (runc's `addCriuDumpMount`), which is how Kubernetes (kubelet → containerd/CRI-O) and
//! podman checkpoint: a hostPath volume of a host's autofs directory is such a bind, and its
//! master (the host's automount) lives outside the container.
//!
//! CRIU's rule (`criu/mount.c`):
//! - `try_resolve_ext_mount()` marks a mount external when its mount point, as the dumped
//!   namespace shows it, is exactly a `mnt[PATH]` key, and only in the dumped root mount
//!   namespace (`NS_ROOT`: the tree's root task's, the container's own), never in a namespace
//!   made inside it; a namespace's root mount (`/`) is never external.
//! - `mnt_is_external_bind()` then holds for every mount of the same superblock in the dump (its
//!   bind ring, `mounts_sb_equal()`: same device) whose root is a sub-path (`is_sub_path()`) of an
//!   external mount's root: the external mount itself and binds of it, nested namespaces
//!   included.
//! - `dump_one_fs()` returns at once for such a mount: `autofs_dump()` is not called, nothing is
//!   probed, nothing fails. The other mounts of the superblock are dumped as without externals.
//! - CRIU's mountinfo parse (`autofs_parse()`, reference §3.1) has run on every autofs mount
//!   before: its failures still fail the dump ([`crate::MountReport::blocks_when_external`]).
//!
//! Autodetection (`--ext-mount-map auto`, `mnt[]`) is not modelled: name the mounts.

use std::collections::{BTreeSet, HashMap};

use crate::report::MountReport;

/// At most this many external mount points per question (a pod's volumes are far fewer).
pub const MAX_EXTERNAL_MOUNTS: usize = 1024;

/// At most this many bytes per mount point (`PATH_MAX` with its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// Why a list of external mount points was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalMountError {
    /// More paths than [`MAX_EXTERNAL_MOUNTS`].
    #[error("external_mounts: {count} paths, at most {MAX_EXTERNAL_MOUNTS} are accepted")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A path that CRIU could never match against a mount point.
    #[error("external_mounts[{index}]: {why}, got {given:?}")]
    Invalid {
        /// Its position in the list.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
        /// The path given (its first 80 characters, invalid UTF-8 as `\xHH`).
        given: String,
    },
}

/// Validated external mount points: absolute, normalized paths as seen in the workload's own
/// mount namespace (the `PATH` of CRIU's `--external mnt[PATH]`), compared byte for byte with
/// mount points, as CRIU compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalMounts(BTreeSet<Vec<u8>>);

impl ExternalMounts {
    /// Validates `paths`; duplicates are kept once.
    ///
    /// # Errors
    ///
    /// [`ExternalMountError::TooMany`] for more than [`MAX_EXTERNAL_MOUNTS`] paths;
    /// [`ExternalMountError::Invalid`] for a path that is empty, relative, longer than
    /// [`MAX_PATH_BYTES`], holds a NUL, or is not normalized (a trailing or repeated `/`, a `.`
    /// or `..` component): mountinfo shows no such mount point, so CRIU would match nothing.
    pub fn new<P: AsRef<[u8]>>(
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self, ExternalMountError> {
        let paths: Vec<P> = paths.into_iter().collect();
        if paths.len() > MAX_EXTERNAL_MOUNTS {
            return Err(ExternalMountError::TooMany { count: paths.len() });
        }
        let mut set = BTreeSet::new();
        for (index, path) in paths.iter().enumerate() {
            let path = path.as_ref();
            if let Err(why) = check_path(path) {
                let given = crate::escape::escape(path).chars().take(80).collect();
                return Err(ExternalMountError::Invalid { index, why, given });
            }
            set.insert(path.to_vec());
        }
        Ok(Self(set))
    }

    /// Whether no path was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `mount_point` is one of the paths.
    pub fn contains(&self, mount_point: &[u8]) -> bool {
        self.0.contains(mount_point)
    }

    /// The paths, in byte order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }
}

fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path[0] != b'/' {
        return Err("not an absolute path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("longer than 4095 bytes (PATH_MAX)");
    }
    if path.contains(&0) {
        return Err("holds a NUL byte");
    }
    if path == b"/" {
        return Ok(());
    }
    let normal = path[1..]
        .split(|&b| b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..");
    if normal {
        Ok(())
    } else {
        Err(
            "not a normalized path (no trailing or repeated '/', no '.' or '..'): CRIU matches mount points exactly",
        )
    }
}

/// CRIU's `is_sub_path(path, sub_path)` (`criu/util.c`, `get_relative_path()`): whether `path`
/// lies at or below `sub_path`, comparing whole components; repeated slashes and `.`
/// components are ignored, `..` is a name like any other.
pub fn is_sub_path(path: &[u8], sub_path: &[u8]) -> bool {
    fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
        p.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
    }
    let mut path = components(path);
    components(sub_path).all(|c| path.next() == Some(c))
}

/// The mount namespaces CRIU dumps together (one `criu dump` of a tree): the tree's root
/// namespace, where external mount points are looked up, and those made inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The root task's mount namespace (`NS_ROOT`); `None` when it is not known, so nothing of
    /// this dump can be told external.
    pub root_ns: Option<u64>,
    /// Every mount namespace of the dump, the root's included.
    pub namespaces: Vec<u64>,
}

/// The indices of `reports` that CRIU skips as external binds of `externals` in `dumps`.
pub fn external_binds(
    reports: &[MountReport],
    dumps: &[Dump],
    externals: &ExternalMounts,
) -> BTreeSet<usize> {
    let mut skipped = BTreeSet::new();
    if externals.is_empty() {
        return skipped;
    }
    for dump in dumps {
        let Some(root_ns) = dump.root_ns else {
            continue;
        };
        // The external mounts of the root namespace, by superblock: their roots.
        let mut external_roots: HashMap<(u32, u32), Vec<&[u8]>> = HashMap::new();
        for r in reports.iter().filter(|r| r.mnt_ns == root_ns && read(r)) {
            if r.mount_point_bytes != b"/" && externals.contains(&r.mount_point_bytes) {
                external_roots
                    .entry((r.major, r.minor))
                    .or_default()
                    .push(&r.root_bytes);
            }
        }
        if external_roots.is_empty() {
            continue;
        }
        for (i, r) in reports.iter().enumerate() {
            if read(r)
                && dump.namespaces.contains(&r.mnt_ns)
                && external_roots
                    .get(&(r.major, r.minor))
                    .is_some_and(|roots| roots.iter().any(|root| is_sub_path(&r.root_bytes, root)))
            {
                skipped.insert(i);
            }
        }
    }
    skipped
}

/// Whether the report's mountinfo line was read (only then are its mount point and root known).
fn read(r: &MountReport) -> bool {
    !r.root_bytes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_compare_whole_components_as_criu_does() {
        assert!(is_sub_path(b"/", b"/"));
        assert!(is_sub_path(b"/a/b", b"/"));
        assert!(is_sub_path(b"/a/b", b"/a"));
        assert!(is_sub_path(b"/a/b", b"/a/b"));
        assert!(is_sub_path(b"//a/./b/", b"/a/"));
        assert!(!is_sub_path(b"/a/bc", b"/a/b"));
        assert!(!is_sub_path(b"/a", b"/a/b"));
        assert!(!is_sub_path(b"/", b"/a"));
        assert!(!is_sub_path(b"/x/y", b"/a"));
        assert!(is_sub_path(b"/../x", b"/.."), "'..' is a name");
    }

    #[test]
    fn external_paths_must_be_absolute_normalized_and_bounded() {
        let ok = ExternalMounts::new(["/home", "/scratch/data", "/home", "/"]).unwrap();
        assert_eq!(
            ok.iter().collect::<Vec<_>>(),
            [&b"/"[..], b"/home", b"/scratch/data"]
        );
        assert!(ExternalMounts::new(Vec::<&str>::new()).unwrap().is_empty());
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        for (bad, why) in [
            ("", "empty"),
            ("home", "not an absolute path"),
            ("/home/", "not a normalized path"),
            ("/home//x", "not a normalized path"),
            ("/home/./x", "not a normalized path"),
            ("/home/..", "not a normalized path"),
            ("/a\0b", "NUL"),
            (long.as_str(), "longer than 4095 bytes"),
        ] {
            let err = ExternalMounts::new(["/ok", bad]).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("external_mounts[1]: "), "{text}");
            assert!(text.contains(why), "{bad:?}: {text}");
            assert!(text.len() < 300, "the echo is truncated: {text}");
        }
        let many = vec!["/x"; MAX_EXTERNAL_MOUNTS + 1];
        assert_eq!(
            ExternalMounts::new(many).unwrap_err(),
            ExternalMountError::TooMany {
                count: MAX_EXTERNAL_MOUNTS + 1
            }
        );
        assert!(ExternalMounts::new(vec!["/x"; MAX_EXTERNAL_MOUNTS]).is_ok());
    }
}
