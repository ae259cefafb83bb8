//! The node: a private mount namespace with M autofs mounts served by D daemons.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe2, setpgid};

use super::sys::unsafe_borrow;

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec {
    /// Autofs mounts.
    pub mounts: usize,
    /// Extra fds (dups of /dev/null) held by the daemons together.
    pub daemon_fds: usize,
    /// Daemons (process groups) sharing the mounts; at most `mounts`.
    pub daemons: usize,
    /// Bystander processes: no autofs, `bystander_fds` open fds each (pipe ends).
    pub bystanders: usize,
    /// Open fds per bystander.
    pub bystander_fds: usize,
    /// Where the bystanders live.
    pub place: Place,
}

/// The mount namespace of the bystanders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The node's namespace, with the autofs mounts (a host namespace with systemd's
    /// `binfmt_misc`, `/net` and `/home` among every host process).
    Node,
    /// The bench's own namespace, which has no autofs mounts (workloads elsewhere).
    Host,
}

impl NodeSpec {
    /// The M × F matrix's node: no bystanders.
    pub fn matrix(mounts: usize, daemon_fds: usize, daemons: usize) -> Self {
        Self {
            mounts,
            daemon_fds,
            daemons: daemons.min(mounts),
            bystanders: 0,
            bystander_fds: 0,
            place: Place::Node,
        }
    }
}

/// A running node. Dropping it kills the builder, the daemons and the bystanders and reaps
/// them; the private mount namespace (tmpfs and autofs mounts) vanishes with its last member.
pub struct Node {
    pub builder: Pid,
    pub daemons: Vec<Pid>,
    pub bystanders: Vec<Pid>,
    pub mnt_ns: u64,
}

impl Drop for Node {
    fn drop(&mut self) {
        for &pid in self.daemons.iter().chain(&self.bystanders) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = kill(self.builder, Signal::SIGKILL);
        reap_all();
    }
}

/// Waits for every child of the bench (the builder, and the daemons it leaves to us as their
/// subreaper). The daemons die with the builder through `PR_SET_PDEATHSIG`.
fn reap_all() {
    // Stops at ECHILD: nothing left.
    while let Ok(_) | Err(Errno::EINTR) = waitpid(None::<Pid>, None) {}
}

/// Splits `total` into `parts` near-equal shares; returns share `i`.
fn share(total: usize, parts: usize, i: usize) -> usize {
    total * (i + 1) / parts - total * i / parts
}

/// What a forked child runs: never returns into the bench's code, whatever happens.
pub fn child_exit(body: impl FnOnce() -> Result<(), String>, report: RawFd) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            send(report, &format!("err {msg}\n"));
            1
        }
        Err(_) => {
            send(report, "err panic in a node process\n");
            2
        }
    };
    // SAFETY: `_exit` ends the process without running the parent's destructors or atexit
    // handlers, which belong to the bench (a forked child must not run them).
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

/// One line on the readiness pipe (lines < PIPE_BUF are atomic).
pub fn send(fd: RawFd, line: &str) {
    // SAFETY: `fd` is the readiness pipe's write end, open in this process for the call.
    let fd = unsafe_borrow(fd);
    let _ = nix::unistd::write(fd, line.as_bytes());
}

/// Dies with the parent (SIGKILL) and checks the parent is still the expected one.
pub fn die_with_parent(parent: Pid) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if getppid() != parent {
        return Err("parent died during setup".into());
    }
    Ok(())
}

/// Builds the node and waits until every process in it is ready.
pub fn build_node(spec: NodeSpec) -> Result<Node, String> {
    check_pid_room(spec.bystanders + spec.daemons + 1)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let bench = getpid();
    // SAFETY: the bench is single-threaded here (a harness = false main that spawns no
    // threads), so the child may run arbitrary code; it never returns (`child_exit`).
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_r);
            let w = ready_w.into_raw_fd();
            child_exit(|| builder_main(bench, spec, w), w)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut node = Node {
                builder: child,
                daemons: Vec::new(),
                bystanders: Vec::with_capacity(spec.bystanders),
                mnt_ns: 0,
            };
            wait_ready(ready_r, spec, &mut node)?;
            let link = std::fs::read_link(format!("/proc/{child}/ns/mnt"))
                .map_err(|e| format!("read ns/mnt of the builder: {e}"))?;
            node.mnt_ns = ns_inode(link.as_os_str().as_bytes())
                .ok_or_else(|| format!("bad ns/mnt link {link:?}"))?;
            let own = std::fs::read_link("/proc/self/ns/mnt").map_err(|e| e.to_string())?;
            if ns_inode(own.as_os_str().as_bytes()) == Some(node.mnt_ns) {
                return Err("the node shares the bench's mount namespace".into());
            }
            Ok(node)
        }
    }
}

/// Refuses a node that would not fit under `kernel.pid_max` with room to spare (the machine's
/// own processes, the builds running next to the bench).
fn check_pid_room(wanted: usize) -> Result<(), String> {
    let read = |p: &str| -> Option<usize> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(32768);
    let running = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .as_bytes()
                        .first()
                        .is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(0);
    if running + wanted + 1000 > pid_max {
        return Err(format!(
            "{wanted} node processes do not fit: {running} running, kernel.pid_max {pid_max}"
        ));
    }
    Ok(())
}

/// Reads readiness lines: one `builder <pid>`, one `ok <pid>` per daemon and one `by <pid>`
/// per bystander.
fn wait_ready(ready: OwnedFd, spec: NodeSpec, node: &mut Node) -> Result<(), String> {
    let mut file = File::from(ready);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut builder_ok = false;
    while !(builder_ok
        && node.daemons.len() == spec.daemons
        && node.bystanders.len() == spec.bystanders)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for the node".into());
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        let got = file
            .read(&mut buf)
            .map_err(|e| format!("readiness pipe: {e}"))?;
        if got == 0 {
            return Err(format!("node died during setup; it said: {text:?}"));
        }
        text.push_str(&String::from_utf8_lossy(&buf[..got]));
        while let Some(end) = text.find('\n') {
            let line: String = text.drain(..=end).collect();
            let line = line.trim_end();
            let pid = |s: &str| -> Result<Pid, String> {
                s.parse()
                    .map(Pid::from_raw)
                    .map_err(|_| format!("bad line {line:?}"))
            };
            if let Some(msg) = line.strip_prefix("err ") {
                return Err(msg.to_owned());
            } else if line.starts_with("builder ") {
                builder_ok = true;
            } else if let Some(p) = line.strip_prefix("ok ") {
                node.daemons.push(pid(p)?);
            } else if let Some(p) = line.strip_prefix("by ") {
                node.bystanders.push(pid(p)?);
            } else {
                return Err(format!("unexpected readiness line {line:?}"));
            }
        }
    }
    Ok(())
}

/// Where the autofs mounts live, inside the node's private tmpfs on /tmp.
const NODE_ROOT: &str = "/tmp/autofs-bench";

/// The node builder: bystanders (first, in the bench's namespace, when they live there),
/// private mount namespace, tmpfs, the daemons, bystanders (in the node's namespace); then it
/// waits.
fn builder_main(bench: Pid, spec: NodeSpec, ready: RawFd) -> Result<(), String> {
    die_with_parent(bench)?;
    let me = getpid();
    if spec.place == Place::Host {
        spawn_bystanders(me, spec, ready)?;
    }
    autofs_testkit::mount_ns::unshare_private_mounts(CloneFlags::empty())?;
    // A tmpfs over /tmp, visible in this namespace only: the node leaves nothing on the host,
    // even when the bench is killed.
    mount(
        Some("autofs-bench"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=16m,mode=01777"),
    )
    .map_err(|e| format!("mount tmpfs on /tmp: {e}"))?;
    let root = Path::new(NODE_ROOT);
    std::fs::create_dir(root).map_err(|e| format!("mkdir {NODE_ROOT}: {e}"))?;
    let (m, d) = (spec.mounts, spec.daemons);
    let mut first_mount = 0;
    for k in 0..d {
        let mounts = first_mount..first_mount + share(m, d, k);
        first_mount = mounts.end;
        let extra = share(spec.daemon_fds, d, k);
        let dir = root.join(format!("d{k}"));
        // SAFETY: the builder is single-threaded (forked from a single-threaded bench).
        #[allow(unsafe_code)]
        let forked = unsafe { fork() };
        match forked.map_err(|e| format!("fork daemon: {e}"))? {
            ForkResult::Child => child_exit(|| daemon_main(me, &dir, mounts, extra, ready), ready),
            ForkResult::Parent { .. } => {}
        }
    }
    if spec.place == Place::Node {
        spawn_bystanders(me, spec, ready)?;
    }
    send(ready, &format!("builder {me}\n"));
    // SAFETY: the write end is ours and not used after this.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(ready);
    }
    loop {
        nix::unistd::pause();
    }
}

/// Forks the bystanders: each dies with the builder, opens its fds and reports `by <pid>`.
fn spawn_bystanders(builder: Pid, spec: NodeSpec, ready: RawFd) -> Result<(), String> {
    for _ in 0..spec.bystanders {
        // SAFETY: the builder is single-threaded (forked from a single-threaded bench).
        #[allow(unsafe_code)]
        let forked = unsafe { fork() };
        match forked.map_err(|e| format!("fork bystander: {e}"))? {
            ForkResult::Child => {
                child_exit(|| bystander_main(builder, spec.bystander_fds, ready), ready)
            }
            ForkResult::Parent { .. } => {}
        }
    }
    Ok(())
}

/// One bystander: `fds` open fds, all ends of its own pipes (a census must readlink each and
/// parse `pipe:[ino]`, as on a node of shells, JVMs and databases), then it waits.
fn bystander_main(builder: Pid, fds: usize, ready: RawFd) -> Result<(), String> {
    die_with_parent(builder)?;
    if fds > 900 {
        raise_nofile()?;
    }
    let mut open = 0;
    while open < fds {
        let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let _ = r.into_raw_fd(); // held until the bystander dies
        open += 1;
        if open < fds {
            let _ = w.into_raw_fd();
            open += 1;
        }
    }
    send(ready, &format!("by {}\n", getpid()));
    // SAFETY: the write end is ours and not used after this.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(ready);
    }
    loop {
        nix::unistd::pause();
    }
}

/// One daemon: its own process group, `mounts` autofs mounts with one pipe each, and `extra`
/// dups of /dev/null spread evenly between the pipes (so the read ends sit throughout the fd
/// table, as in a daemon that opened files between mounts).
fn daemon_main(
    builder: Pid,
    dir: &Path,
    mounts: std::ops::Range<usize>,
    extra: usize,
    ready: RawFd,
) -> Result<(), String> {
    die_with_parent(builder)?;
    setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(|e| format!("setpgid: {e}"))?;
    raise_nofile()?;
    let pgrp = getpid();
    std::fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let n = mounts.len();
    let dup_extra = |count: usize| -> Result<(), String> {
        for _ in 0..count {
            let fd = nix::unistd::dup(devnull.as_fd()).map_err(|e| format!("dup: {e}"))?;
            let _ = fd.into_raw_fd(); // held until the daemon dies
        }
        Ok(())
    };
    for (j, id) in mounts.enumerate() {
        dup_extra(share(extra, n + 1, j))?;
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let point = dir.join(format!("m{id}"));
        std::fs::create_dir(&point).map_err(|e| format!("mkdir {}: {e}", point.display()))?;
        let options = format!(
            "fd={},pgrp={pgrp},minproto=5,maxproto=5,indirect",
            w.as_raw_fd()
        );
        mount(
            Some("bench"),
            &point,
            Some("autofs"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("mount autofs on {} ({options}): {e}", point.display()))?;
        let _ = (r.into_raw_fd(), w.into_raw_fd()); // both ends held, like automount
    }
    dup_extra(share(extra, n + 1, n))?;
    send(ready, &format!("ok {pgrp}\n"));
    // SAFETY: the write end is ours and not used after this.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(ready);
    }
    loop {
        nix::unistd::pause();
    }
}

fn raise_nofile() -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read/write one valid rlimit struct.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    ok.then_some(())
        .ok_or_else(|| format!("RLIMIT_NOFILE: {}", Errno::last()))
}

pub fn ns_inode(link: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(link).ok()?;
    s.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}
