//! Helper processes that never outlive the test that started them.

use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, OnceLock, mpsc};

/// Makes the child get SIGKILL when the thread that spawns it exits (`PR_SET_PDEATHSIG`), so
/// an agent, DNS server or Prometheus started by a test dies with the test even when the test
/// process is killed before any `Drop` runs. Returns `cmd` for chaining.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes one prctl(2)
    // syscall, which is async-signal-safe and allocates nothing.
    #[allow(unsafe_code)] // pre_exec is the only way to set PR_SET_PDEATHSIG before exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

/// Spawns `cmd` with [`die_with_parent`] from one long-lived thread. `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked the child exits; spawning from a thread that lives as long as
/// the process makes the child die with the test process, not with the thread (a tokio worker,
/// a scoped thread) that asked for it.
///
/// # Errors
///
/// The error of [`Command::spawn`], or an error saying the spawner thread is gone.
///
/// # Panics
///
/// When the spawner thread cannot be started (the first call only).
pub fn spawn_detached(mut cmd: Command) -> io::Result<Child> {
    type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    die_with_parent(&mut cmd);
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("autofs-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the autofs-testkit spawner thread");
        Mutex::new(tx)
    });
    let gone = || io::Error::other("the autofs-testkit spawner thread is gone");
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, rtx))
        .map_err(|_| gone())?;
    rrx.recv().map_err(|_| gone())?
}

/// A helper process that is killed (SIGKILL) and reaped when dropped, however the test ends.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sleep infinity` with `clone3(2)` under chosen pids: `set_tid` gives its pid in
/// each pid namespace, innermost first (with `new_pid_ns` it is the init of a new pid
/// namespace, so `[1, pid]`; without, `[pid]`). With `mnt_ns` it joins that mount namespace
/// before the exec. Returns its pid in the caller's pid namespace; the caller kills and reaps
/// it. Needs `CAP_SYS_ADMIN` (`set_tid`).
///
/// # Errors
///
/// `clone3`'s errno: `EEXIST` when one of the pids is taken (another process of the machine
/// may take a free pid first: callers retry with another), `EPERM` without the capability.
pub fn clone_sleep_at(
    set_tid: &[libc::pid_t],
    new_pid_ns: bool,
    mnt_ns: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<i32, nix::errno::Errno> {
    /// `struct clone_args` (linux/sched.h, up to `cgroup`: `CLONE_ARGS_SIZE_VER2`).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    use std::os::fd::AsRawFd;
    // Everything the child touches is prepared before the fork.
    let sleep = c"/usr/bin/sleep";
    let argv = [c"sleep".as_ptr(), c"infinity".as_ptr(), std::ptr::null()];
    let mnt_ns = mnt_ns.map(|fd| fd.as_raw_fd());
    let args = CloneArgs {
        flags: if new_pid_ns {
            libc::CLONE_NEWPID as u64
        } else {
            0
        },
        exit_signal: libc::SIGCHLD as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: set_tid.len() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM forks, with a fully initialised `clone_args` of the size
    // passed and a `set_tid` array that outlives the call. The child of this (multi-threaded)
    // process only calls async-signal-safe functions (setns, execv, _exit) on data prepared
    // before the call.
    #[allow(unsafe_code)]
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        #[allow(unsafe_code)]
        // SAFETY: as above, in the child.
        unsafe {
            if mnt_ns.is_none_or(|fd| libc::setns(fd, libc::CLONE_NEWNS) == 0) {
                libc::execv(sleep.as_ptr(), argv.as_ptr());
            }
            libc::_exit(127);
        }
    }
    if ret < 0 {
        return Err(nix::errno::Errno::last());
    }
    i32::try_from(ret).map_err(|_| nix::errno::Errno::EOVERFLOW)
}
