//! Helper processes that never outlive the test that started them.

use std::process::Command;

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
