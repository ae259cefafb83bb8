//! The scenario process the library spawned: unshares a mount and pid namespace, forks
//! the namespace's pid 1 (the [`Init`](crate::init::Init)) and exits with its status.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;

use autofs_testkit::procfs;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, getppid};

use crate::sys;

/// The process the library spawned: unshares, forks pid 1, waits for it.
pub(crate) fn run(work: &Path, parent: Option<i32>) -> Result<(), String> {
    // Die with the test process (also set by the library before exec; set again because
    // exec may clear it), and close the race where the parent died before this line.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if let Some(p) = parent
        && getppid().as_raw() != p
    {
        return Err("the parent died before the scenario started".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (real-kernel autofs scenarios need CAP_SYS_ADMIN)".into());
    }
    if !procfs::autofs_available() {
        return Err("the autofs filesystem is not available (/proc/filesystems)".into());
    }
    if !work.is_absolute() || !work.is_dir() {
        return Err(format!(
            "work dir {} must be an existing absolute directory",
            work.display()
        ));
    }
    autofs_testkit::mount_ns::unshare_private_mounts(CloneFlags::CLONE_NEWPID)?;
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Fork::Child => {
            let e = reexec_as_pid1(work);
            println!("error autofs-scenario init: {e}");
            let _ = std::io::stdout().flush();
            sys::exit_now(1);
        }
        sys::Fork::Parent(pid) => {
            // Only pid 1 talks on the protocol pipes.
            let _ = sys::stdio_to_devnull();
            loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Ok(WaitStatus::Exited(_, c)) => std::process::exit(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => std::process::exit(128 + s as i32),
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// Pid 1 execs this binary again (`--pid1`) by its path, which now resolves in the new mount
/// namespace, so that its executable and libraries are mapped from the namespace's own mounts
/// as in a container whose init was exec'd inside it: a checkpointer that dumps the namespace
/// (CRIU) finds every mapped file on a mount it dumps. Returns only on failure, with the reason.
fn reexec_as_pid1(work: &Path) -> String {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return format!("locating this binary to exec it as pid 1: {e}"),
    };
    let err = std::process::Command::new(&exe)
        .arg("--pid1")
        .arg("--work-dir")
        .arg(work)
        .exec();
    format!("exec {} as pid 1: {err}", exe.display())
}

/// Pid 1 after [`reexec_as_pid1`]: closes every fd but the protocol's stdio (fds the test
/// process leaked would point at the host's mounts), boots the init, moves into the work
/// dir's private tmpfs and serves; returns the exit code.
///
/// The working directory matters to CRIU: its parasite mounts a procfs of the task's pid
/// namespace on `proc.crtools` relative to the task's cwd, which must not be a directory
/// on the host's disk that other scenarios share (the test process's cwd, inherited).
pub(crate) fn run_pid1(work: &Path) -> i32 {
    sys::close_from(3);
    let booted = crate::init::Init::boot(work).and_then(|init| {
        std::env::set_current_dir(work)
            .map(|()| init)
            .map_err(|e| format!("chdir {}: {e}", work.display()))
    });
    let code = match booted {
        Ok(mut init) => init.serve(),
        Err(e) => {
            println!("error autofs-scenario init: {e}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    code
}
