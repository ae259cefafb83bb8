//! GetNodeInfo: the version handshake and what this node and agent can do.

use autofs_api::v1;
use autofs_core::ProcRoot;
use autofs_core::security::{self, Confinement};

use autofs_core::view::{CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, SelfFacts};

use crate::service::ServiceConfig;
use crate::snapshot::Inventory;

/// Collects the handshake answer.
pub fn collect(inventory: &Inventory, config: &ServiceConfig) -> v1::GetNodeInfoResponse {
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let view = inventory.latest().scan.view.clone();
    v1::GetNodeInfoResponse {
        view_restricted: view.restricted,
        view_problems: view.reasons,
        hidepid: view.hidepid.unwrap_or_default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        api_major: autofs_api::API_MAJOR,
        node: config.node_name.clone(),
        pipe_ino_supported: pipe_ino_supported(inventory, &kernel_release),
        kernel_release,
        can_read_fds: can_read_fds(inventory),
        scan_interval_ms: u32::try_from(config.scan_interval.as_millis()).unwrap_or(u32::MAX),
        ..confinement_fields(inventory)
    }
}

/// The agent's own AppArmor/SELinux label and, when the latest scan was denied access the
/// capabilities should grant, the likely cause (fields 20 and up of GetNodeInfoResponse).
fn confinement_fields(inventory: &Inventory) -> v1::GetNodeInfoResponse {
    let confinement = own_confinement(inventory);
    v1::GetNodeInfoResponse {
        security_label: confinement
            .as_ref()
            .map(|c| c.label.clone())
            .unwrap_or_default(),
        security_module: confinement
            .as_ref()
            .map(|c| c.lsm.as_str().into())
            .unwrap_or_default(),
        security_confined: confinement.as_ref().is_some_and(|c| c.confining),
        access_denied_cause: access_denied_cause(inventory).unwrap_or_default(),
        ..Default::default()
    }
}

/// The agent's label, read through the `self` entry of the proc root being scanned (the
/// host's /proc in a hostPID pod), else of /proc.
fn own_confinement(inventory: &Inventory) -> Option<Confinement> {
    match inventory.proc_root() {
        Some(root) if root.path().join("self").exists() => Confinement::read(root),
        _ => ProcRoot::open("/proc")
            .ok()
            .and_then(|r| Confinement::read(&r)),
    }
}

/// When the latest scan could not read some processes although the agent holds the
/// capabilities that should allow it: how many, and the likely cause (a confining LSM label).
pub fn access_denied_cause(inventory: &Inventory) -> Option<String> {
    let denied = inventory.latest().scan.stats.unreadable;
    (denied > 0 && can_read_fds(inventory))
        .then(|| security::explain_denial(own_confinement(inventory).as_ref(), denied))
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

/// Whether the agent holds what reading other processes' fds takes (its own `CapEff:`, read
/// through the proc root's `self`).
fn can_read_fds(inventory: &Inventory) -> bool {
    inventory.proc_root().is_some_and(|root| {
        let facts = SelfFacts::read(root);
        facts.has_cap(CAP_DAC_READ_SEARCH) && facts.has_cap(CAP_SYS_PTRACE)
    })
}
