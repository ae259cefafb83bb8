//! An autofs daemon of the host's pid namespace two levels below the owner of a mount
//! namespace of its own, as in a `--pid=host` container: owner → middle → daemon, the mount
//! made by the daemon in the owner's namespace (a private copy of a scenario's). The tree CRIU
//! dumps for that namespace is the owner's; when the middle process dies, the kernel re-parents
//! the daemon out of it (to the test process's nearest subreaper or the host's pid 1).
//!
//! A scenario cannot build this: everything it forks lives in its own pid namespace, whose
//! init would adopt the daemon, inside the tree. So the test process starts it, with
//! `nsenter --mount` into the scenario's namespace, `unshare --mount`, and a short Python
//! program (the owner) that forks the middle process, which forks the daemon.

use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Scenario;
use crate::procfs;

/// The owner (this program), the middle process and the daemon. The daemon mounts autofs with
/// its own pipe (both ends kept, as `automount` does), reports, and then reads its stdin until
/// the test closes it or dies: it has no parent-death signal, so that it outlives the middle
/// process, but never the test. The owner and the middle process die with their parents and
/// reap their children.
const PROGRAM: &str = r#"
import ctypes, os, signal, sys
mount_point = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1

def reap_forever():
    while True:
        try:
            os.wait()
        except ChildProcessError:
            signal.pause()

def daemon():
    os.setpgid(0, 0)
    os.makedirs(mount_point, exist_ok=True)
    r, w = os.pipe()
    opts = f"fd={w},pgrp={os.getpgrp()},minproto=5,maxproto=5,indirect".encode()
    if libc.mount(b"autofs-testkit", mount_point.encode(), b"autofs", 0, opts) != 0:
        raise OSError(ctypes.get_errno(), "mount autofs")
    mount_id = next(l.split()[0] for l in open("/proc/self/mountinfo") if l.split()[4] == mount_point)
    print(f"ready {owner} {os.getppid()} {os.getpid()} {mount_id}", flush=True)

owner = os.getpid()
if os.fork() == 0:
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.fork() == 0:
        try:
            daemon()
        except BaseException as e:
            print(f"error {e!r}", flush=True)
            os._exit(1)
        sys.stdin.read()
        os._exit(0)
    os.close(1)
    reap_forever()
os.close(1)
reap_forever()
"#;

/// The processes and the mount of a host-level aside daemon; everything is killed on drop
/// (the mount goes with its namespace).
#[derive(Debug)]
pub struct HostAside {
    /// Host pid of the mount namespace's owner (the root of its process tree).
    pub owner: i32,
    /// Host pid of the middle process (the owner's child, the daemon's parent).
    pub middle: i32,
    /// Host pid of the daemon: the mount's `pgrp=` leader, holding both pipe ends.
    pub daemon: i32,
    /// The owner's mount namespace (inode).
    pub mnt_ns: u64,
    /// The mount point, `<scenario work dir>/<name>`.
    pub mount_point: PathBuf,
    /// Mount id of the autofs mount.
    pub mount_id: u32,
    owner_process: Child,
    /// The daemon's stdin: it exits when this closes.
    _lifeline: ChildStdin,
}

impl HostAside {
    /// Starts the three processes in a copy of `sc`'s mount namespace, the mount on
    /// `<work dir>/<name>`, and returns once the daemon has mounted.
    ///
    /// # Errors
    ///
    /// When `nsenter`, `unshare` or `python3` cannot be started, or the program reports an
    /// error (the mount failed) or exits before it reports.
    pub fn start(sc: &Scenario, name: &str) -> io::Result<HostAside> {
        let mount_point = sc.work_dir().join(name);
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &sc.init_host_pid().to_string(), "-m", "--"])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["python3", "-c", PROGRAM])
            .arg(&mount_point)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = crate::child::spawn_detached(cmd)?;
        let lifeline = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match (read, fields.as_slice()) {
            (Ok(_), ["ready", owner, middle, daemon, mount_id]) => (|| {
                Some((
                    owner.parse().ok()?,
                    middle.parse().ok()?,
                    daemon.parse().ok()?,
                    mount_id.parse().ok()?,
                ))
            })(),
            _ => None,
        };
        let Some((owner, middle, daemon, mount_id)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "the host-level aside daemon did not start: {:?}",
                line.trim()
            )));
        };
        let mnt_ns = match procfs::ns_inode(owner, "mnt") {
            Ok(mnt_ns) => mnt_ns,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(HostAside {
            owner,
            middle,
            daemon,
            mnt_ns,
            mount_point,
            mount_id,
            owner_process: child,
            _lifeline: lifeline,
        })
    }

    /// Kills the middle process and returns once the owner has reaped it: the kernel has then
    /// re-parented the daemon.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent, or the middle process is still there after
    /// [`crate::HANG_GUARD`].
    pub fn kill_middle(&mut self) -> io::Result<()> {
        kill(Pid::from_raw(self.middle), Signal::SIGKILL).map_err(io::Error::from)?;
        if procfs::wait_until(crate::HANG_GUARD, || {
            procfs::process_state(self.middle).is_none()
        }) {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the middle process {} did not go away",
                self.middle
            )))
        }
    }
}

impl Drop for HostAside {
    fn drop(&mut self) {
        // The daemon is still ours: it exits only when its stdin, held here, closes. The
        // middle process dies with the owner (its parent-death signal).
        let _ = kill(Pid::from_raw(self.daemon), Signal::SIGKILL);
        let _ = self.owner_process.kill();
        let _ = self.owner_process.wait();
    }
}
