//! Which process owns a mount namespace, i.e. whose pid namespace CRIU would dump it in.
//!
//! A container's mount namespace is entered by its init (pid 1 of the container's pid
//! namespace) and its descendants, and sometimes by stragglers such as `unshare`, which enters
//! the new mount namespace itself but stays in the outer pid namespace. Owners are therefore
//! chosen among pid-namespace inits first, the shallowest and lowest-numbered winning; only a
//! namespace without any init in it falls back to its shallowest process.

use crate::process::ProcessTable;

/// The host pid of the owner of the mount namespace whose member processes are `pids`.
pub fn namespace_owner(table: &mut ProcessTable<'_>, pids: &[i32]) -> Option<i32> {
    pids.iter()
        .filter_map(|&pid| {
            let info = table.info(pid).ok()?;
            let is_init = info.nspid.last() == Some(&1);
            Some((!is_init, info.pidns_depth(), pid))
        })
        .min()
        .map(|(_, _, pid)| pid)
}
