//! GetNodeInfo: the version handshake and what this node and agent can do.

use autofs_api::v1;

use crate::service::ServiceConfig;
use crate::snapshot::Inventory;

/// `CAP_DAC_READ_SEARCH`: list other users' `/proc/<pid>/fd` (mode 0500).
const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_SYS_PTRACE`: pass the ptrace access check on other processes' fd links.
const CAP_SYS_PTRACE: u32 = 19;

/// Collects the handshake answer.
pub fn collect(inventory: &Inventory, config: &ServiceConfig) -> v1::GetNodeInfoResponse {
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    v1::GetNodeInfoResponse {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        api_major: autofs_api::API_MAJOR,
        node: config.node_name.clone(),
        pipe_ino_supported: pipe_ino_supported(inventory, &kernel_release),
        kernel_release,
        can_read_fds: can_read_fds(),
        scan_interval_ms: u32::try_from(config.scan_interval.as_millis()).unwrap_or(u32::MAX),
    }
}

/// `pipe_ino=` needs Linux ≥ 4.6 and CONFIG_CHECKPOINT_RESTORE. A mount that shows it is
/// proof; otherwise the kernel version and `kernel/ns_last_pid` (which exists only with
/// CONFIG_CHECKPOINT_RESTORE) decide.
fn pipe_ino_supported(inventory: &Inventory, release: &str) -> bool {
    let snapshot = inventory.latest();
    if snapshot
        .scan
        .reports
        .iter()
        .any(|r| r.options.contains("pipe_ino="))
    {
        return true;
    }
    let mut version = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let at_least_4_6 = matches!((version.next(), version.next()), (Some(major), Some(minor)) if (major, minor) >= (4, 6));
    let proc_root = inventory.proc_root().map_or_else(
        || std::path::PathBuf::from("/proc"),
        |r| r.path().to_path_buf(),
    );
    at_least_4_6 && proc_root.join("sys/kernel/ns_last_pid").exists()
}

/// Whether the agent holds what reading other processes' fds takes.
fn can_read_fds() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE]
        .iter()
        .all(|cap| effective & (1 << cap) != 0)
}
