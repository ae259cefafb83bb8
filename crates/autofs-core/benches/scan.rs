//! Benchmark of one full scan of a node with M real autofs mounts whose daemons hold F extra
//! open fds, against two references measured in the same run on the same node state:
//!
//! * `floor`: the /proc reads the scan performs, with no parsing at all;
//! * `criu`: CRIU's per-mount algorithm (reference §3.4–3.7), which rescans the master's
//!   `/proc/<pgrp>/fd` once per mount.
//!
//! Run as root: `cargo bench -p autofs-core --bench scan`. Restrict the matrix with
//! `AUTOFS_BENCH_M=10,100` and `AUTOFS_BENCH_F=100`; `AUTOFS_BENCH_ITERS` (default 21) sets the
//! iterations per measurement and `AUTOFS_BENCH_DAEMONS` (default 10) the number of daemons.
//! See `benches/README.md` for the layout of the node and how to read the table.
//!
//! Nothing is mounted in the bench's own mount namespace: a forked "node builder" unshares a
//! private mount namespace, mounts a tmpfs over its /tmp (the host never sees it) and forks the
//! daemons, which create the pipes and the autofs mounts under /tmp/autofs-bench. Tearing the node down (also on panic, and through `PR_SET_PDEATHSIG` when the
//! bench is killed) kills that process tree, and the namespace disappears with its mounts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autofs_core::{MountState, Scan, Scanner};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::libc;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid, pipe2, setpgid};

// ---------------------------------------------------------------------------------------------
// Heap accounting: a counting wrapper around the system allocator.

/// Counts live heap bytes and their high-water mark; every call is forwarded to `System`.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is exactly the system allocator's; the wrapper only updates counters.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Configuration.

struct Config {
    ms: Vec<usize>,
    fs: Vec<usize>,
    iters: usize,
    daemons: usize,
    /// Wall-time budget per measurement series; slow series run fewer iterations (at least 1).
    budget: Duration,
    /// `AUTOFS_BENCH_VERBOSE=1`: print the floor's per-phase breakdown.
    verbose: bool,
    /// `AUTOFS_BENCH_ONLY=scan|floor|criu`: only run that measurement, `ITERS` times, for
    /// profiling under `valgrind --tool=callgrind` or `strace -c`.
    only: Option<String>,
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("{name}: '{t}' is not a number")))
            })
            .collect(),
        _ => default.to_vec(),
    }
}

impl Config {
    fn from_env() -> Self {
        let one = |name, default| env_list(name, &[default])[0];
        let config = Self {
            ms: env_list("AUTOFS_BENCH_M", &[10, 100, 1000]),
            fs: env_list("AUTOFS_BENCH_F", &[100, 10000]),
            iters: one("AUTOFS_BENCH_ITERS", 21).max(1),
            daemons: one("AUTOFS_BENCH_DAEMONS", 10).max(1),
            budget: Duration::from_secs(6),
            verbose: std::env::var("AUTOFS_BENCH_VERBOSE").is_ok_and(|v| v == "1"),
            only: std::env::var("AUTOFS_BENCH_ONLY")
                .ok()
                .filter(|v| !v.is_empty()),
        };
        if let Some(only) = &config.only
            && !["scan", "floor", "criu"].contains(&only.as_str())
        {
            fail(&format!(
                "AUTOFS_BENCH_ONLY: '{only}' is not scan, floor or criu"
            ));
        }
        if config.ms.contains(&0) {
            fail("AUTOFS_BENCH_M: M must be at least 1");
        }
        config
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("scan bench: {msg}");
    std::process::exit(1);
}

// ---------------------------------------------------------------------------------------------
// The node: a private mount namespace with M autofs mounts served by D daemons.

/// A running node. Dropping it kills the builder and the daemons and reaps them; the private
/// mount namespace (tmpfs and autofs mounts) vanishes with its last member.
struct Node {
    builder: Pid,
    daemons: Vec<Pid>,
    mnt_ns: u64,
}

impl Drop for Node {
    fn drop(&mut self) {
        for &pid in &self.daemons {
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
fn child_exit(body: impl FnOnce() -> Result<(), String>, report: RawFd) -> ! {
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
fn send(fd: RawFd, line: &str) {
    // SAFETY: `fd` is the readiness pipe's write end, open in this process for the call.
    let fd = unsafe_borrow(fd);
    let _ = nix::unistd::write(fd, line.as_bytes());
}

fn unsafe_borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: callers pass fds that stay open for as long as the borrow is used (the readiness
    // pipe in a child, or a `Dir`'s fd while the `Dir` is alive).
    #[allow(unsafe_code)]
    unsafe {
        BorrowedFd::borrow_raw(fd)
    }
}

/// Dies with the parent (SIGKILL) and checks the parent is still the expected one.
fn die_with_parent(parent: Pid) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if getppid() != parent {
        return Err("parent died during setup".into());
    }
    Ok(())
}

fn build_node(m: usize, f: usize, daemons: usize) -> Result<Node, String> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let bench = getpid();
    let d = daemons.min(m);
    // SAFETY: the bench is single-threaded here (a harness = false main that spawns no
    // threads), so the child may run arbitrary code; it never returns (`child_exit`).
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_r);
            let w = ready_w.into_raw_fd();
            child_exit(|| builder_main(bench, m, f, d, w), w)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut node = Node {
                builder: child,
                daemons: Vec::new(),
                mnt_ns: 0,
            };
            wait_ready(ready_r, d, &mut node)?;
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

/// Reads readiness lines: one `builder <pid>` and `d` times `ok <pid>`.
fn wait_ready(ready: OwnedFd, d: usize, node: &mut Node) -> Result<(), String> {
    let mut file = File::from(ready);
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut builder_ok = false;
    while !(builder_ok && node.daemons.len() == d) {
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
            if let Some(msg) = line.strip_prefix("err ") {
                return Err(msg.to_owned());
            } else if line.starts_with("builder ") {
                builder_ok = true;
            } else if let Some(pid) = line.strip_prefix("ok ") {
                let pid = pid.parse().map_err(|_| format!("bad line {line:?}"))?;
                node.daemons.push(Pid::from_raw(pid));
            } else {
                return Err(format!("unexpected readiness line {line:?}"));
            }
        }
    }
    Ok(())
}

/// Where the autofs mounts live, inside the node's private tmpfs on /tmp.
const NODE_ROOT: &str = "/tmp/autofs-bench";

/// The node builder: private mount namespace, tmpfs, then `d` daemons; then it waits.
fn builder_main(bench: Pid, m: usize, f: usize, d: usize, ready: RawFd) -> Result<(), String> {
    die_with_parent(bench)?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / rprivate: {e}"))?;
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
    let me = getpid();
    let mut first_mount = 0;
    for k in 0..d {
        let mounts = first_mount..first_mount + share(m, d, k);
        first_mount = mounts.end;
        let extra = share(f, d, k);
        let dir = root.join(format!("d{k}"));
        // SAFETY: the builder is single-threaded (forked from a single-threaded bench).
        #[allow(unsafe_code)]
        let forked = unsafe { fork() };
        match forked.map_err(|e| format!("fork daemon: {e}"))? {
            ForkResult::Child => child_exit(|| daemon_main(me, &dir, mounts, extra, ready), ready),
            ForkResult::Parent { .. } => {}
        }
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

fn ns_inode(link: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(link).ok()?;
    s.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Measurement 1: the full scan.

fn full_scan() -> (Duration, Scan) {
    let start = Instant::now();
    let scan = Scanner::new("/proc", "bench")
        .and_then(|s| s.scan())
        .unwrap_or_else(|e| fail(&format!("scan failed: {e}")));
    (start.elapsed(), scan)
}

fn check_scan(scan: &Scan, node: &Node, m: usize) {
    let ours: Vec<_> = scan
        .reports
        .iter()
        .filter(|r| r.mnt_ns == node.mnt_ns)
        .collect();
    let active = ours
        .iter()
        .filter(|r| r.state == MountState::Active)
        .count();
    if ours.len() != m || active != m {
        let sample = ours
            .iter()
            .find(|r| r.state != MountState::Active)
            .map(|r| format!("{} {}: {}", r.mount_point, r.state, r.message))
            .unwrap_or_default();
        // A panic (not `fail`, which exits) so the node is torn down by `Node::drop`.
        panic!(
            "sanity check: expected {m} ACTIVE mounts in the node's namespace, found {} mounts, {active} ACTIVE ({sample})",
            ours.len()
        );
    }
}

/// Peak heap growth (bytes) while one scan runs, the result included.
fn scan_heap() -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let (_, scan) = full_scan();
    let peak = PEAK.load(Ordering::Relaxed);
    drop(scan);
    peak.saturating_sub(before)
}

// ---------------------------------------------------------------------------------------------
// Measurement 2: the floor — the scan's /proc reads, no parsing.

/// What the scan read beyond the census, taken from one scan's result and a census done once
/// outside the timing, so the floor issues exactly the scan's reads for this node state.
struct FloorPlan {
    /// `(pid, fd)` whose fdinfo the census reads: every fd on a pipe some mount uses.
    fdinfo: Vec<(i32, i32)>,
    /// Members of namespaces with autofs mounts: `stat` + `status` (namespace owner choice).
    members: Vec<i32>,
    /// Owners of namespaces with autofs mounts: `cgroup` and `ns/pid`.
    owners: Vec<i32>,
    /// First member of every namespace without autofs mounts: `cgroup` (attribution).
    attributed: Vec<i32>,
    /// Masters translated into the owner's pid namespace: `ns/pid`.
    masters: Vec<i32>,
    /// Read ends measured with FIONREAD: readlink, open, fstat, ioctl.
    probes: Vec<(i32, i32)>,
}

fn plan_floor(scan: &Scan) -> FloorPlan {
    let wanted: HashSet<u64> = scan
        .reports
        .iter()
        .map(|r| r.pipe_ino)
        .filter(|&i| i != 0)
        .collect();
    let namespaces: HashSet<u64> = scan.reports.iter().map(|r| r.mnt_ns).collect();
    let mut fdinfo = Vec::new();
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let name = entry.expect("/proc entry").file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            && ns_inode(link.as_os_str().as_bytes()).is_some_and(|ns| namespaces.contains(&ns))
        {
            members.push(pid);
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let ino = target
                .to_str()
                .and_then(|t| t.strip_prefix("pipe:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if ino.is_some_and(|i| wanted.contains(&i))
                && let Some(fd) = fd.file_name().to_str().and_then(|s| s.parse().ok())
            {
                fdinfo.push((pid, fd));
            }
        }
    }
    let owners: BTreeSet<i32> = scan
        .reports
        .iter()
        .map(|r| r.owner_pid)
        .filter(|&p| p > 0)
        .collect();
    let attributed = scan
        .namespaces
        .iter()
        .filter(|n| n.autofs_mounts == 0 && n.owner_pid > 0)
        .map(|n| n.owner_pid)
        .collect();
    let masters: BTreeSet<i32> = scan
        .reports
        .iter()
        .filter(|r| r.read_end_fd >= 0 && r.owner_pid > 0)
        .map(|r| r.host_pgrp)
        .collect();
    let probes = scan
        .reports
        .iter()
        .filter(|r| r.read_end_fd >= 0)
        .map(|r| (r.read_end_pid, r.read_end_fd))
        .collect();
    FloorPlan {
        fdinfo,
        members,
        owners: owners.into_iter().collect(),
        attributed,
        masters: masters.into_iter().collect(),
        probes,
    }
}

/// A reusable NUL-terminated path buffer.
struct CPath(String);

impl CPath {
    fn set(&mut self, args: std::fmt::Arguments<'_>) -> &CStr {
        self.0.clear();
        let _ = self.0.write_fmt(args);
        self.0.push('\0');
        CStr::from_bytes_with_nul(self.0.as_bytes()).expect("no interior NUL")
    }
}

/// `readlinkat` into a caller's buffer (no allocation).
fn readlink_raw(dir: BorrowedFd<'_>, path: &CStr, buf: &mut [u8]) -> isize {
    // SAFETY: `path` is NUL-terminated and `buf` is valid for `buf.len()` bytes.
    #[allow(unsafe_code)]
    unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    }
}

/// Reads `path` (relative to `dir`) whole into `buf`: `openat`, `read` until EOF, `close` —
/// no `statx`/`lseek` size probe (proc files report size 0) and no allocation once `buf` is
/// large enough.
fn read_rel(dir: BorrowedFd<'_>, path: &CStr, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let Ok(fd) = openat(
        dir,
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return false;
    };
    loop {
        let len = buf.len();
        buf.resize(len + 16384, 0);
        match nix::unistd::read(fd.as_fd(), &mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return true;
            }
            Ok(n) => buf.truncate(len + n),
            Err(Errno::EINTR) => buf.truncate(len),
            Err(_) => {
                buf.truncate(len);
                return false;
            }
        }
    }
}

/// Phases of the floor, for the breakdown printed with `AUTOFS_BENCH_VERBOSE=1`.
const FLOOR_PHASES: [&str; 6] = [
    "readdir /proc",
    "ns/mnt + mountinfo",
    "fd census",
    "fdinfo",
    "stat/status/cgroup/ns",
    "FIONREAD probes",
];

/// Adds the time since the previous mark to `spent[phase]`.
fn mark(last: &mut Instant, spent: &mut [Duration; 6], phase: usize) {
    let now = Instant::now();
    spent[phase] += now - *last;
    *last = now;
}

fn floor(plan: &FloorPlan, spent: &mut [Duration; 6]) -> Duration {
    let start = Instant::now();
    let mut last = start;
    let mut path = CPath(String::with_capacity(64));
    let mut link = [0u8; 256];
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = nix::fcntl::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("/proc");
    // readdir /proc.
    let mut pids: Vec<i32> = Vec::with_capacity(1024);
    let mut root = Dir::openat(
        proc.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("/proc");
    for entry in root.iter().flatten() {
        let name = entry.file_name().to_bytes();
        if name.first().is_some_and(u8::is_ascii_digit) {
            // Needed only to name paths; the scan parses it too.
            pids.push(name.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')));
        }
    }
    mark(&mut last, spent, 0);
    // ns/mnt of every process; the first member of each namespace reads its mountinfo.
    let mut first_of_ns: HashMap<Vec<u8>, i32> = HashMap::new();
    for &pid in &pids {
        let n = readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/ns/mnt")),
            &mut link,
        );
        if let Ok(n) = usize::try_from(n)
            && !first_of_ns.contains_key(&link[..n])
        {
            first_of_ns.insert(link[..n].to_vec(), pid);
        }
    }
    for &pid in first_of_ns.values() {
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/mountinfo")),
            &mut buf,
        );
    }
    mark(&mut last, spent, 1);
    // The fd census: readdir of every fd dir, readlink of every fd.
    for &pid in &pids {
        let Ok(mut dir) = Dir::openat(
            proc.as_fd(),
            path.set(format_args!("{pid}/fd")),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let dir_fd = unsafe_borrow(dir.as_raw_fd());
        for entry in dir.iter().flatten() {
            let name = entry.file_name();
            if name.to_bytes().first().is_some_and(u8::is_ascii_digit) {
                readlink_raw(dir_fd, name, &mut link);
            }
        }
    }
    mark(&mut last, spent, 2);
    // fdinfo of the pipes of interest.
    for &(pid, fd) in &plan.fdinfo {
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/fdinfo/{fd}")),
            &mut buf,
        );
    }
    mark(&mut last, spent, 3);
    // stat + status of the members of namespaces with autofs mounts; cgroup of every
    // namespace's owner; ns/pid of the owners and masters.
    for &pid in &plan.members {
        read_rel(proc.as_fd(), path.set(format_args!("{pid}/stat")), &mut buf);
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/status")),
            &mut buf,
        );
    }
    for &pid in &plan.attributed {
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/cgroup")),
            &mut buf,
        );
    }
    for &pid in &plan.owners {
        read_rel(
            proc.as_fd(),
            path.set(format_args!("{pid}/cgroup")),
            &mut buf,
        );
        readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/ns/pid")),
            &mut link,
        );
    }
    for &pid in &plan.masters {
        readlink_raw(
            proc.as_fd(),
            path.set(format_args!("{pid}/ns/pid")),
            &mut link,
        );
    }
    mark(&mut last, spent, 4);
    // The queue probe of every read end: readlink, open, fstat, FIONREAD.
    for &(pid, fd) in &plan.probes {
        let p = path.set(format_args!("{pid}/fd/{fd}"));
        readlink_raw(proc.as_fd(), p, &mut link);
        let Ok(end) = openat(
            proc.as_fd(),
            p,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let _ = nix::sys::stat::fstat(end.as_fd());
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through a pointer valid for the call.
        #[allow(unsafe_code)]
        unsafe {
            libc::ioctl(end.as_raw_fd(), libc::FIONREAD, &mut queued);
        }
    }
    mark(&mut last, spent, 5);
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Measurement 3: CRIU's per-mount algorithm (reference §3.2, §3.4, §3.5, §3.7), reimplemented.

/// `flags:` of `<pid>/fdinfo/<fd>` (octal), as CRIU's `parse_fdinfo_pid` reads it.
fn fdinfo_flags(
    proc: BorrowedFd<'_>,
    path: &mut CPath,
    buf: &mut Vec<u8>,
    pid: i32,
    fd: i32,
) -> u32 {
    if !read_rel(proc, path.set(format_args!("{pid}/fdinfo/{fd}")), buf) {
        return u32::MAX;
    }
    std::str::from_utf8(buf)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("flags:")))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(u32::MAX)
}

fn criu(builder: Pid, m: usize) -> Duration {
    const O_WRONLY: u32 = 0o1;
    let start = Instant::now();
    let mut path = CPath(String::with_capacity(64));
    let mut buf = Vec::with_capacity(1 << 16);
    let proc = nix::fcntl::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .expect("/proc");
    // §3.1/3.2: the options of every autofs mount, from mountinfo read once.
    let mut mountinfo = Vec::new();
    read_rel(
        proc.as_fd(),
        path.set(format_args!("{builder}/mountinfo")),
        &mut mountinfo,
    );
    let text = std::str::from_utf8(&mountinfo).expect("mountinfo is UTF-8");
    let mut mounts: Vec<(i32, i32, u64)> = Vec::new(); // (fd, pgrp, pipe_ino)
    for line in text.lines() {
        let Some((_, tail)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = tail.split(' ');
        if tail.next() != Some("autofs") {
            continue;
        }
        let options = tail.nth(1).unwrap_or_default();
        let (mut fd, mut pgrp, mut ino) = (None, None, None);
        for token in options.split(',') {
            if let Some(v) = token.strip_prefix("fd=") {
                fd = v.parse().ok();
            } else if let Some(v) = token.strip_prefix("pgrp=") {
                pgrp = v.parse().ok();
            } else if let Some(v) = token.strip_prefix("pipe_ino=") {
                ino = v.parse().ok();
            }
        }
        if let (Some(fd), Some(pgrp), Some(ino)) = (fd, pgrp, ino) {
            mounts.push((fd, pgrp, ino));
        }
    }
    let mut found = 0;
    for &(write_fd, pgrp, ino) in &mounts {
        // §3.4: rescan the leader's fds until the first read end of this pipe.
        let Ok(mut dir) = Dir::openat(
            proc.as_fd(),
            path.set(format_args!("{pgrp}/fd")),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let dir_fd = unsafe_borrow(dir.as_raw_fd());
        let mut read_fd = -1;
        for entry in dir.iter().flatten() {
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let Ok(st) = nix::sys::stat::fstatat(dir_fd, name, nix::fcntl::AtFlags::empty()) else {
                break;
            };
            let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok()) else {
                break;
            };
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
                && st.st_ino == ino
                && fdinfo_flags(proc.as_fd(), &mut path, &mut buf, pgrp, fd) & O_WRONLY == 0
            {
                read_fd = fd;
                break;
            }
        }
        drop(dir);
        if read_fd < 0 {
            continue;
        }
        // §3.5: reopen the read end and poll it for queued data.
        let p = format!("/proc/{pgrp}/fd/{read_fd}");
        if let Ok(end) = nix::fcntl::open(
            p.as_str(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            let mut pfd = libc::pollfd {
                fd: end.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            #[allow(unsafe_code)]
            let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
            assert_eq!(ready, 0, "an idle bench pipe has no data");
        }
        // §3.7: is the write end fd= still held?
        let p = format!("/proc/{pgrp}/fd/{write_fd}");
        let alive = nix::sys::stat::stat(p.as_str()).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
                && st.st_ino == ino
                && fdinfo_flags(proc.as_fd(), &mut path, &mut buf, pgrp, write_fd) & 0o3 == O_WRONLY
        });
        if alive {
            found += 1;
        }
    }
    let elapsed = start.elapsed();
    assert!(
        found >= m,
        "CRIU's algorithm found {found} live masters, expected at least {m}"
    );
    elapsed
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table.

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
    runs: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and minimum of a series.
fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort_unstable();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        runs: times.len(),
    }
}

struct Row {
    m: usize,
    f: usize,
    fds: usize,
    processes: usize,
    scan: Stats,
    floor: Stats,
    criu: Stats,
    heap: usize,
}

fn run_one(config: &Config, m: usize, f: usize) -> Row {
    let setup = Instant::now();
    let node = build_node(m, f, config.daemons)
        .unwrap_or_else(|e| fail(&format!("building the node (M={m}, F={f}): {e}")));
    let setup = setup.elapsed();

    let (_, first) = full_scan();
    check_scan(&first, &node, m);
    let plan = plan_floor(&first);
    let processes = first.stats.processes;
    let fds = first.stats.fds;
    drop(first);

    // All three series are interleaved (scan, floor, and CRIU every few iterations) so they
    // see the same cache and machine state and their ratios do not drift with the machine.
    let mut spent = [Duration::ZERO; 6];
    floor(&plan, &mut spent); // warm-up (the first scan above warmed the scan's path)
    spent = [Duration::ZERO; 6];
    let mut criu_times = vec![criu(node.builder, m)];
    // CRIU's algorithm is slow at large M×F: fewer runs (at least one) within the budget.
    let criu_runs = usize::try_from(config.budget.as_nanos() / criu_times[0].as_nanos().max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, config.iters);
    let criu_every = config.iters.div_ceil(criu_runs);
    let mut scan_times = Vec::new();
    let mut floor_times = Vec::new();
    let mut last_scan = None;
    for i in 0..config.iters {
        let (t, s) = full_scan();
        scan_times.push(t);
        last_scan = Some(s);
        floor_times.push(floor(&plan, &mut spent));
        if criu_times.len() < criu_runs && i % criu_every == criu_every - 1 {
            criu_times.push(criu(node.builder, m));
        }
    }
    check_scan(last_scan.as_ref().expect("at least one scan"), &node, m);
    drop(last_scan);
    let (scan, floor, criu) = (stats(scan_times), stats(floor_times), stats(criu_times));
    if config.verbose {
        let runs = u32::try_from(floor.runs).unwrap_or(1);
        let parts: Vec<String> = FLOOR_PHASES
            .iter()
            .zip(spent)
            .map(|(name, t)| format!("{name} {:.2}", ms(t / runs)))
            .collect();
        eprintln!(
            "  M={m} F={f}: floor breakdown (ms, mean): {}",
            parts.join(", ")
        );
    }
    let heap = {
        scan_heap(); // warm any lazily allocated state
        (0..3).map(|_| scan_heap()).min().unwrap_or(0)
    };
    drop(node);
    eprintln!(
        "  M={m} F={f}: node built in {:.0} ms; scan {}x, floor {}x, criu {}x",
        ms(setup),
        scan.runs,
        floor.runs,
        criu.runs
    );
    Row {
        m,
        f,
        fds,
        processes,
        scan,
        floor,
        criu,
        heap,
    }
}

/// Runs one measurement `iters` times on a fresh node (for profilers); prints the median.
fn profile_one(config: &Config, m: usize, f: usize, only: &str) {
    let node = build_node(m, f, config.daemons)
        .unwrap_or_else(|e| fail(&format!("building the node (M={m}, F={f}): {e}")));
    let (_, first) = full_scan();
    check_scan(&first, &node, m);
    let plan = plan_floor(&first);
    drop(first);
    let mut spent = [Duration::ZERO; 6];
    let mut times: Vec<Duration> = (0..config.iters)
        .map(|_| match only {
            "scan" => full_scan().0,
            "floor" => floor(&plan, &mut spent),
            _ => criu(node.builder, m),
        })
        .collect();
    times.sort_unstable();
    println!(
        "M={m} F={f}: {only} median {:.2} ms over {} runs",
        ms(times[times.len() / 2]),
        times.len()
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        fail(
            "must run as root: it creates autofs mounts in a private mount namespace (try `sudo -E cargo bench -p autofs-core --bench scan`)",
        );
    }
    let config = Config::from_env();
    // Orphaned daemons (if the builder dies first) are reparented to us, so we reap them.
    nix::sys::prctl::set_child_subreaper(true)
        .unwrap_or_else(|e| fail(&format!("PR_SET_CHILD_SUBREAPER: {e}")));
    eprintln!(
        "autofs-core scan bench: M in {:?}, F in {:?}, {} daemons, up to {} iterations",
        config.ms, config.fs, config.daemons, config.iters
    );
    let total = Instant::now();
    let mut rows = Vec::new();
    for &f in &config.fs {
        for &m in &config.ms {
            match config.only.as_deref() {
                Some(only) => profile_one(&config, m, f, only),
                None => rows.push(run_one(&config, m, f)),
            }
        }
    }
    if config.only.is_some() {
        return;
    }
    print_table(&config, &rows);
    eprintln!("total bench time {:.1} s", total.elapsed().as_secs_f64());
}

fn print_table(config: &Config, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let processes = rows.iter().map(|r| r.processes).max().unwrap_or(0);
    println!();
    println!(
        "autofs-core full scan vs. floor vs. CRIU per-mount ({cores} cores, {processes} processes on the machine incl. {} daemons + builder)",
        config.daemons
    );
    println!(
        "{:>5} {:>6} {:>6} | {:>17} | {:>17} | {:>19} | {:>17} {:>17} | {:>8} {:>7}",
        "M",
        "F",
        "fds",
        "scan ms med (min)",
        "floor ms med (min)",
        "criu ms med (min)",
        "scan/floor (min)",
        "criu/scan (min)",
        "heap KiB",
        "B/mount"
    );
    for r in rows {
        println!(
            "{:>5} {:>6} {:>6} | {:>8.2} ({:>6.2}) | {:>8.2} ({:>6.2}) | {:>9.1} ({:>7.1}) | {:>9.2} ({:>5.2}) {:>9.1} ({:>5.1}) | {:>8.1} {:>7}",
            r.m,
            r.f,
            r.fds,
            ms(r.scan.median),
            ms(r.scan.min),
            ms(r.floor.median),
            ms(r.floor.min),
            ms(r.criu.median),
            ms(r.criu.min),
            r.scan.median.as_secs_f64() / r.floor.median.as_secs_f64(),
            r.scan.min.as_secs_f64() / r.floor.min.as_secs_f64(),
            r.criu.median.as_secs_f64() / r.scan.median.as_secs_f64(),
            r.criu.min.as_secs_f64() / r.scan.min.as_secs_f64(),
            r.heap as f64 / 1024.0,
            r.heap / r.m,
        );
    }
    // Marginal heap per mount between consecutive M at the same F: flat means linear in M.
    for &f in &config.fs {
        let same: Vec<_> = rows.iter().filter(|r| r.f == f).collect();
        let slopes: Vec<String> = same
            .windows(2)
            .filter(|w| w[1].m > w[0].m)
            .map(|w| {
                let delta = w[1].heap as f64 - w[0].heap as f64;
                format!(
                    "M {}→{}: {:.0} B/mount",
                    w[0].m,
                    w[1].m,
                    delta / (w[1].m - w[0].m) as f64
                )
            })
            .collect();
        if !slopes.is_empty() {
            println!("heap growth at F={f}: {}", slopes.join(", "));
        }
    }
    if let Some(r) = rows.iter().find(|r| r.m == 1000 && r.f == 10000) {
        let scan = ms(r.scan.median);
        let vs_floor = r.scan.median.as_secs_f64() / r.floor.median.as_secs_f64();
        let vs_criu = r.criu.median.as_secs_f64() / r.scan.median.as_secs_f64();
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        println!(
            "targets at M=1000 F=10000: scan {scan:.1} ms < 100 ms: {}; scan/floor {vs_floor:.2} <= 1.5: {}; criu/scan {vs_criu:.1} >= 20: {}",
            verdict(scan < 100.0),
            verdict(vs_floor <= 1.5),
            verdict(vs_criu >= 20.0)
        );
    }
}
