//! What a controller's handshake needs to know about the node and the inspector itself, read
//! through the proc root like everything else: whether the kernel shows `pipe_ino`, whether the
//! inspector may read other processes' fds, and which security label confines it.

use crate::proc_root::ProcRoot;
use crate::scan::Scan;
use crate::security::{self, Confinement};
use crate::view::{CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, SelfFacts};

/// Facts about the node and the inspector, for `GetNodeInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Whether autofs mounts show `pipe_ino=` (Linux ≥ 4.6 with CONFIG_CHECKPOINT_RESTORE).
    pub pipe_ino_supported: bool,
    /// Whether the inspector holds CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
    pub can_read_fds: bool,
    /// The inspector's own AppArmor/SELinux label, if any.
    pub confinement: Option<Confinement>,
    /// When `scan` was refused reads the capabilities should allow: how many and the likely
    /// cause (a confining label).
    pub access_denied_cause: Option<String>,
}

impl HostFacts {
    /// Reads the facts through `root` (its `self` entry is the inspector), with the latest
    /// `scan` and the kernel `release` (`uname -r`).
    pub fn read(root: &ProcRoot, scan: &Scan, release: &str) -> Self {
        // The scan judged its view with the inspector's own capabilities, read then; only
        // without them (no scan yet) are they read here (its own `status` and `mountinfo`).
        let facts = SelfFacts {
            cap_eff: scan.view.cap_eff.or_else(|| SelfFacts::read(root).cap_eff),
            ..SelfFacts::default()
        };
        let can_read_fds = facts.has_cap(CAP_DAC_READ_SEARCH) && facts.has_cap(CAP_SYS_PTRACE);
        let confinement = Confinement::read(root);
        let denied = scan.stats.unreadable;
        Self {
            pipe_ino_supported: pipe_ino_supported(root, scan, release),
            can_read_fds,
            access_denied_cause: (denied > 0 && can_read_fds)
                .then(|| security::explain_denial(confinement.as_ref(), denied)),
            confinement,
        }
    }
}

/// A mount that shows `pipe_ino=` is proof; otherwise the kernel version (≥ 4.6) and
/// `sys/kernel/ns_last_pid` (present only with CONFIG_CHECKPOINT_RESTORE) decide.
fn pipe_ino_supported(root: &ProcRoot, scan: &Scan, release: &str) -> bool {
    if scan.reports.iter().any(|r| r.options.contains("pipe_ino=")) {
        return true;
    }
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let at_least_4_6 = matches!(
        (version.next(), version.next()),
        (Some(major), Some(minor)) if (major, minor) >= (4, 6)
    );
    at_least_4_6 && root.read_file("sys/kernel/ns_last_pid").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_scan() -> Scan {
        Scan {
            reports: Vec::new(),
            namespaces: Vec::new(),
            view: Default::default(),
            stats: Default::default(),
            tree_paths: Vec::new(),
            gone_leaders: Vec::new(),
            unknown_processes: Vec::new(),
        }
    }

    #[test]
    fn pipe_ino_support_follows_the_kernel_version_and_checkpoint_restore() {
        let dir = tempfile::tempdir().unwrap();
        let root = ProcRoot::open(dir.path()).unwrap();
        assert!(!pipe_ino_supported(&root, &empty_scan(), "6.18.0"));
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/ns_last_pid"), "42\n").unwrap();
        assert!(pipe_ino_supported(&root, &empty_scan(), "6.18.0"));
        assert!(!pipe_ino_supported(&root, &empty_scan(), "4.5.7"));
        assert!(!pipe_ino_supported(&root, &empty_scan(), "garbage"));
    }
}
