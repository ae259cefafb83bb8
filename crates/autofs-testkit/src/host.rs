//! Where a scenario can run and with which binary: the preflight checks (root, autofs in the
//! kernel), locating or building `autofs-scenario`, and removing the empty work dirs that
//! killed test processes left behind.

use std::io;
use std::path::PathBuf;

use crate::{bad, binaries, procfs};

/// Env var naming the `autofs-scenario` binary explicitly.
pub const SCENARIO_BIN_ENV: &str = binaries::SCENARIO.env;

/// Fails with a clear message when real-kernel scenarios cannot run here.
///
/// # Errors
///
/// An error saying why: the effective user is not root, or `/proc/filesystems` lists no `autofs`.
pub fn preflight() -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(bad(
            "real-kernel autofs tests must run as root (they mount autofs and unshare namespaces)",
        ));
    }
    if !procfs::autofs_available() {
        return Err(bad(
            "the kernel has no autofs filesystem (/proc/filesystems); load autofs4 or enable CONFIG_AUTOFS_FS",
        ));
    }
    Ok(())
}

/// Locates the `autofs-scenario` binary: `$AUTOFS_SCENARIO_BIN`; else the one next to the
/// running test binary (if newer than this crate's sources); else builds it. The flag says
/// whether it was just built.
///
/// # Errors
///
/// Those of [`binaries::WorkspaceBinary::locate`]: `$AUTOFS_SCENARIO_BIN` is not a file, or
/// building the binary failed (the error says how, and names the variable).
pub fn scenario_binary() -> io::Result<(PathBuf, bool)> {
    binaries::SCENARIO.locate()
}

/// Builds `autofs-scenario` with cargo (once per process).
///
/// # Errors
///
/// Those of [`binaries::WorkspaceBinary::build`]: cargo cannot be run, fails, or leaves no binary;
/// the first failure is returned again on later calls.
pub fn build_scenario_binary() -> io::Result<PathBuf> {
    binaries::SCENARIO.build()
}

/// Removes empty work dirs left by test processes that were killed (best effort; only
/// dirs of dead pids, and `remove_dir` only succeeds on empty ones).
pub(crate) fn remove_stale_work_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("autofs-testkit-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if procfs::process_state(pid).is_none() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
