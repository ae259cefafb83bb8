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
