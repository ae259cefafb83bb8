//! A private mount namespace for the calling thread: what every process that mounts for a test
//! (the scenario's init, the benchmark's node builder) does first.

use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;

/// Unshares a mount namespace (`extra`: more namespaces, e.g. `CLONE_NEWPID`) and makes every
/// mount in it private, so nothing mounted here propagates back to the host (nor the other way).
///
/// # Errors
///
/// The `unshare(2)` or `mount(2)` error as text, naming the call.
pub fn unshare_private_mounts(extra: CloneFlags) -> Result<(), String> {
    let flags = CloneFlags::CLONE_NEWNS | extra;
    nix::sched::unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))
}
