//! A container made inside a scenario: a new mount namespace (a private copy of the
//! scenario's, with every autofs mount and bind in it) and a new pid namespace, whose init is
//! `sleep`. The scenario's daemons live outside it: to the container, the host's automount
//! serving a hostPath volume.
//!
//! Cleanup: dropping it kills `unshare`, which kills its forked init (`--kill-child`), whose
//! death ends the pid namespace and frees the mount namespace. If the test process dies,
//! the parent-death signal of [`crate::child::spawn_detached`] does the same.

use std::io;

use crate::Scenario;
use crate::child::Reaped;

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
    /// [`crate::HANG_GUARD`].
    pub fn start(sc: &Scenario) -> io::Result<Self> {
        let mut cmd = std::process::Command::new("nsenter");
        // The init leads a session of its own, as a container's does (runc calls setsid):
        // CRIU refuses a tree whose session leader is outside its pid namespace. Its stdio is
        // opened inside its mount namespace and its working directory is the scenario's
        // private work dir (where CRIU's parasite may mount): CRIU can dump it.
        cmd.args(["-t", &sc.init_host_pid().to_string(), "-m", "--"])
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["--pid", "--fork", "--kill-child", "--", "sh", "-c"])
            .arg("exec setsid sleep 600 </dev/null >/dev/null 2>&1")
            .current_dir(sc.work_dir());
        // Nor does it inherit the test process's other fds (a harness may leak some, opened
        // in the host's mount namespace): marked close-on-exec, the spawn's own error pipe
        // included, which is close-on-exec already.
        // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on fds; it is
        // async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)] // pre_exec is the only way to run it in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                // The raw syscall: musl's libc has no close_range wrapper, and autofs-core's
                // unit tests also run against musl (scripts/check-image).
                if libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) == 0
                {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let process = Reaped(crate::child::spawn_detached(cmd)?);
        let pid = i32::try_from(process.0.id()).map_err(io::Error::other)?;
        let mut init = None;
        let running = crate::wait_until(crate::HANG_GUARD, || {
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
