//! A container made inside a scenario: a new mount namespace (a private copy of the
//! scenario's, with every autofs mount and bind in it) and a new pid namespace, whose init is
//! `sleep`. The scenario's daemons live outside it: to the container, the host's automount
//! serving a hostPath volume.
//!
//! Cleanup: dropping it kills `unshare`, which kills its forked init (`--kill-child`), whose
//! death ends the pid namespace and frees the mount namespace. If the test process dies,
//! the parent-death signal of [`crate::child::spawn_detached`] does the same.

use std::io;
use std::time::Duration;

use crate::Scenario;
use crate::child::Reaped;

/// How long the container may take to start.
const START: Duration = Duration::from_secs(10);

/// A running container (see the module docs).
pub struct Container {
    /// Host pid of `unshare`, a member of the container's mount namespace (outside its pid
    /// namespace).
    pub pid: i32,
    /// Host pid of the container's init (`sleep`, pid 1 of its pid namespace).
    pub init: i32,
    /// The container's mount namespace (inode).
    pub mnt_ns: u64,
    _process: Reaped,
}

impl Container {
    /// Starts a container from the scenario's mount namespace (`nsenter` into it, then
    /// `unshare --mount --propagation private --pid --fork --kill-child sleep 600`) and waits
    /// until its init runs.
    ///
    /// # Errors
    ///
    /// The spawn's error, or [`io::ErrorKind::TimedOut`] when the init does not run within
    /// 10 s.
    pub fn start(sc: &Scenario) -> io::Result<Self> {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &sc.init_host_pid().to_string(), "-m", "--"])
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["--pid", "--fork", "--kill-child", "--", "sleep", "600"]);
        let process = Reaped(crate::child::spawn_detached(cmd)?);
        let pid = i32::try_from(process.0.id()).map_err(io::Error::other)?;
        let mut init = None;
        let running = crate::wait_until(START, || {
            init = crate::procfs::descendants(pid).into_iter().find(|&child| {
                std::fs::read_link(format!("/proc/{child}/exe"))
                    .is_ok_and(|exe| exe.ends_with("sleep"))
            });
            init.is_some()
        });
        let Some(init) = init.filter(|_| running) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the container's init (a child of pid {pid}) did not start"),
            ));
        };
        let mnt_ns = crate::procfs::ns_inode(init, "mnt")?;
        if mnt_ns == sc.mnt_ns() || crate::procfs::ns_inode(pid, "mnt")? != mnt_ns {
            return Err(io::Error::other(format!(
                "pid {pid} and its init {init} are not in one new mount namespace"
            )));
        }
        Ok(Self {
            pid,
            init,
            mnt_ns,
            _process: process,
        })
    }
}
