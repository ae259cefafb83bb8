//! GetNodeInfo: the version handshake and what this node and agent can do.

use std::time::Duration;

use autofs_api::v1;

use crate::snapshot::Inventory;

/// Collects the handshake answer of the agent serving `inventory` as `node`, scanning every
/// `scan_interval`.
pub fn collect(
    inventory: &Inventory,
    node: &str,
    scan_interval: Duration,
) -> v1::GetNodeInfoResponse {
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    // Everything from /proc was read on the scan thread with the scan: an RPC never waits on
    // a /proc read (one can hang behind a stuck unmount).
    let snapshot = inventory.latest();
    let view = snapshot.view().into_owned();
    // Before the first scan, and from a source without a live proc root (benchmarks), there
    // are no host facts to tell.
    let host = snapshot.host.clone().unwrap_or_default();
    let confinement = host.confinement.as_ref();
    v1::GetNodeInfoResponse {
        view_restricted: view.restricted,
        view_problems: view.problems().cloned().collect(),
        hidepid: view.hidepid.unwrap_or_default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        api_major: autofs_api::API_MAJOR,
        node: node.to_owned(),
        pipe_ino_supported: host.pipe_ino_supported,
        kernel_release,
        can_read_fds: host.can_read_fds,
        scan_interval_ms: u32::try_from(scan_interval.as_millis()).unwrap_or(u32::MAX),
        security_label: confinement.map(|c| c.label.clone()).unwrap_or_default(),
        security_module: confinement
            .map(|c| c.lsm.as_str().into())
            .unwrap_or_default(),
        security_confined: confinement.is_some_and(|c| c.confining),
        access_denied_cause: host.access_denied_cause.clone().unwrap_or_default(),
        // The service's, set by GetNodeInfo.
        agent_instance: String::new(),
    }
}

/// When the latest scan could not read some processes although the agent holds the
/// capabilities that should allow it: how many, and the likely cause (a confining LSM label).
pub fn access_denied_cause(inventory: &Inventory) -> Option<String> {
    inventory
        .latest()
        .host
        .as_ref()?
        .access_denied_cause
        .clone()
}
