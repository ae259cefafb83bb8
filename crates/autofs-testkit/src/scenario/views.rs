//! What the host sees of a [`Scenario`] without asking its init: its files, mount table,
//! queued packet bytes and processes, all read through the host's `/proc`.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::Scenario;
use crate::procfs::{self, MountInfoLine};
use crate::reports::Daemon;

impl Scenario {
    /// Reads a regular file as the scenario sees it (through `/proc/<init>/root`). Do not
    /// use it on a path inside an autofs mount.
    ///
    /// # Errors
    ///
    /// The error of reading `/proc/<init>/root/<path>` (`NotFound` also when the scenario is gone).
    pub fn read_file(&self, path: &Path) -> io::Result<String> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        std::fs::read_to_string(Path::new(&format!("/proc/{}/root", self.init_host_pid)).join(rel))
    }

    /// The scenario's mount table, read from the host (`/proc/<init>/mountinfo`).
    ///
    /// # Errors
    ///
    /// Those of [`procfs::read_mountinfo`] (`NotFound` when the scenario's init is gone).
    pub fn mountinfo(&self) -> io::Result<Vec<MountInfoLine>> {
        procfs::read_mountinfo(self.init_host_pid)
    }

    /// The mountinfo line with this mount id, if mounted.
    pub fn mount_line(&self, mount_id: u32) -> Option<MountInfoLine> {
        self.mountinfo()
            .ok()?
            .into_iter()
            .find(|l| l.mount_id == mount_id)
    }

    /// The topmost mountinfo line at `path`, if any.
    pub fn mount_line_at(&self, path: &Path) -> Option<MountInfoLine> {
        procfs::mount_at(self.init_host_pid, path).ok().flatten()
    }

    /// Bytes queued in the daemon's autofs pipe (`FIONREAD` on a reopened read end,
    /// never read). Needs the daemon to still hold its read end.
    ///
    /// # Errors
    ///
    /// Those of [`procfs::queued_bytes`]: `NotFound` when the daemon or its read end is gone.
    pub fn queued_bytes(&self, daemon: &Daemon) -> io::Result<usize> {
        procfs::queued_bytes(daemon.host_pid, daemon.read_fd)
    }

    /// Host pids of the scenario's pid 1 and every process under it (nested pid
    /// namespaces included), zombies included.
    pub fn processes(&self) -> Vec<i32> {
        procfs::pids_in_ns("pid", self.pid_ns)
            .into_iter()
            .chain(std::iter::once(self.init_host_pid))
            .chain(procfs::descendants(self.init_host_pid))
            .filter(|&p| procfs::process_state(p).is_some())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Polls `pred` (given this scenario) every 10 ms up to `timeout`.
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&Scenario) -> bool) -> bool {
        procfs::wait_until(timeout, || pred(self))
    }
}
