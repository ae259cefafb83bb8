//! Real autofs states for real-kernel tests, built inside private mount + pid namespaces
//! and always cleaned up.
//!
//! A [`Scenario`] starts the `autofs-scenario` binary (this crate's bin), which unshares a
//! new mount and pid namespace, becomes pid 1 there, mounts a private tmpfs on a fresh
//! temp dir ([`Scenario::work_dir`]) and on `/run`, and then builds states on command:
//! fake daemons with raw autofs mounts ([`Scenario::mount`]), requesters that spring a
//! trap ([`Scenario::trigger`]), packet reads, closed pipe ends, dead daemons, delegated
//! read ends and the real `automount` daemon. The host's procfs stays mounted, so tests
//! read `/proc/<pid>/mountinfo` etc. from the host (see [`procfs`]) and compare with the
//! ids a command returned (host pids, fd numbers, pipe inodes, mount ids).
//!
//! Cleanup: dropping a [`Scenario`] kills everything in it and waits for it; the mounts
//! live only in the scenario's mount namespace and vanish with it. If the test process
//! dies instead, `PR_SET_PDEATHSIG(SIGKILL)` kills the scenario's outer process, whose
//! death kills the scenario's pid 1 (same signal), whose death kills its whole pid
//! namespace, which frees the mount namespace. (The parent-death signal follows the
//! *thread* that forked; the library forks from one thread that lives as long as the
//! process, so a scenario may outlive the thread that started it.) A killed test process
//! leaves only an empty directory in the temp dir, removed by the next `start`.
//!
//! Real-kernel tests must fail, not skip, when they cannot run: [`Scenario::start`]
//! returns an error naming the reason (not root, no autofs, binary not found), and
//! [`Scenario::start_or_panic`] panics with it.
//!
//! Never `stat`/`open` a path inside a live autofs mount from the test process: it would
//! trigger (and block on) the mount. Reading `/proc` is always safe.
//!
//! ```no_run
//! use autofs_testkit::{MountSpec, Scenario};
//! let mut sc = Scenario::start_or_panic();
//! let d = sc.mount(MountSpec::indirect().timeout(30)).unwrap();
//! let line = sc.mount_line(d.mount_id).unwrap();
//! assert_eq!(line.option("fd"), Some(d.write_fd.to_string().as_str()));
//! ```

pub mod binaries;
pub mod cgroup;
pub mod child;
pub mod packet;
pub mod pki;
pub mod procfs;
pub mod proto;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

pub use packet::Packet;
pub use procfs::{MountInfoLine, wait_until};
use proto::Fields;

/// Env var naming the `autofs-scenario` binary explicitly.
pub const SCENARIO_BIN_ENV: &str = binaries::SCENARIO.env;

/// Type of an autofs mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `indirect`: lookups of missing names in the root trigger (type 3 packets).
    Indirect,
    /// `direct`: a walk onto the root triggers (type 5 packets).
    Direct,
    /// `offset`: like direct (used by automount for multi-mount offsets).
    Offset,
}

impl Mode {
    /// The mount option / mountinfo flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Indirect => "indirect",
            Mode::Direct => "direct",
            Mode::Offset => "offset",
        }
    }

    fn parse(s: &str) -> io::Result<Mode> {
        match s {
            "indirect" => Ok(Mode::Indirect),
            "direct" => Ok(Mode::Direct),
            "offset" => Ok(Mode::Offset),
            _ => Err(bad(format!("unknown mode `{s}`"))),
        }
    }
}

/// What [`Scenario::mount`] should build. Start from [`MountSpec::indirect`],
/// [`MountSpec::direct`] or [`MountSpec::offset`] and chain the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Name of the mount and its daemon; the mount point is `<work_dir>/<name>`.
    /// `None`: the scenario picks `m1`, `m2`, ...
    pub name: Option<String>,
    /// Mount type.
    pub mode: Mode,
    /// `uid=` mount option (root inode owner).
    pub uid: Option<u32>,
    /// `gid=` mount option.
    pub gid: Option<u32>,
    /// Timeout in seconds set with `AUTOFS_IOC_SETTIMEOUT` after mounting (mountinfo
    /// shows `timeout=0` without it).
    pub timeout: Option<u64>,
    /// `strictexpire` mount option.
    pub strictexpire: bool,
    /// The daemon closes its write end right after mounting (systemd-like).
    pub close_write: bool,
    /// The daemon runs in a further nested pid namespace (as pid 2 there, under a
    /// reaper that is pid 1), so its pids differ at every level.
    pub nested_pidns: bool,
    /// Renumber the write end to this fd before mounting (so `fd=` shows it).
    pub write_fd: Option<i32>,
    /// Mount source (mountinfo field after the fs type); default `autofs-testkit`.
    pub source: Option<String>,
    /// The mount point's directory name as bytes (below the work dir), instead of the
    /// name: Linux paths need not be UTF-8.
    pub dir: Option<Vec<u8>>,
}

impl MountSpec {
    /// A spec of the given mode with every option off.
    pub fn new(mode: Mode) -> MountSpec {
        MountSpec {
            name: None,
            mode,
            uid: None,
            gid: None,
            timeout: None,
            strictexpire: false,
            close_write: false,
            nested_pidns: false,
            write_fd: None,
            source: None,
            dir: None,
        }
    }
    /// An indirect mount.
    pub fn indirect() -> MountSpec {
        MountSpec::new(Mode::Indirect)
    }
    /// A direct mount.
    pub fn direct() -> MountSpec {
        MountSpec::new(Mode::Direct)
    }
    /// An offset mount.
    pub fn offset() -> MountSpec {
        MountSpec::new(Mode::Offset)
    }
    /// Sets [`MountSpec::name`].
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// Sets [`MountSpec::uid`].
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }
    /// Sets [`MountSpec::gid`].
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }
    /// Sets [`MountSpec::timeout`].
    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Some(secs);
        self
    }
    /// Sets [`MountSpec::strictexpire`].
    pub fn strictexpire(mut self) -> Self {
        self.strictexpire = true;
        self
    }
    /// Sets [`MountSpec::close_write`].
    pub fn close_write(mut self) -> Self {
        self.close_write = true;
        self
    }
    /// Sets [`MountSpec::nested_pidns`].
    pub fn nested_pidns(mut self) -> Self {
        self.nested_pidns = true;
        self
    }
    /// Sets [`MountSpec::write_fd`].
    pub fn write_fd(mut self, fd: i32) -> Self {
        self.write_fd = Some(fd);
        self
    }
    /// Sets [`MountSpec::source`].
    pub fn source(mut self, source: &str) -> Self {
        self.source = Some(source.to_string());
        self
    }
    /// Sets [`MountSpec::dir`].
    pub fn dir(mut self, dir: &[u8]) -> Self {
        self.dir = Some(dir.to_vec());
        self
    }
}

/// A process in a mount namespace of its own and its child ([`Scenario::ns_member`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsMember {
    /// Host pid of the namespace's owner (its parent is outside the namespace).
    pub owner_host_pid: i32,
    /// Host pid of its child, in the same mount namespace.
    pub child_host_pid: i32,
    /// The mount namespace inode.
    pub mnt_ns: u64,
}

/// A fake daemon and the autofs mount it made, as reported right after mounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Name (also the last component of the mount point).
    pub name: String,
    /// Mount type.
    pub mode: Mode,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:` (host first; three levels for a nested daemon).
    pub nspid: Vec<i32>,
    /// Process group in the host pid namespace (what host mountinfo shows as `pgrp=`).
    pub host_pgrp: i32,
    /// Process group in the scenario's pid namespace.
    pub vpgrp: i32,
    /// Process group in the daemon's own pid namespace (the `pgrp=` it mounted with).
    pub ns_pgrp: i32,
    /// Fd number of the read end in the daemon.
    pub read_fd: i32,
    /// Fd number of the write end at mount time (the `fd=` value).
    pub write_fd: i32,
    /// Whether the daemon closed its write end right after mounting.
    pub write_closed: bool,
    /// Absolute mount point (same path on the host, in another mount namespace).
    pub mount_point: PathBuf,
    /// Mount id (first mountinfo field).
    pub mount_id: u32,
    /// Inode of the pipe (`pipe_ino=`).
    pub pipe_ino: u64,
    /// Whether the daemon lives in a nested pid namespace.
    pub nested_pidns: bool,
}

/// A process blocked (or finished) in a lookup started by [`Scenario::trigger`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Scenario-local id for [`Scenario::wait_requester`].
    pub id: u32,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:` (host first).
    pub nspid: Vec<i32>,
    /// The path it looked up.
    pub path: PathBuf,
}

/// How a requester's lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequesterOutcome {
    /// Still blocked (or running) when the wait gave up.
    Running,
    /// The lookup succeeded.
    Succeeded,
    /// The lookup failed with this errno (e.g. `libc::ENOENT`).
    Failed(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// How the daemon answers a packet it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `AUTOFS_IOC_FAIL` (the requester gets ENOENT).
    Fail,
    /// `AUTOFS_IOC_READY`.
    Ready,
    /// No answer: the requester stays blocked.
    None,
}

/// The child that holds a read end after [`Scenario::delegate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegate {
    /// Name usable with [`Scenario::kill`] (`<daemon>.delegate`).
    pub name: String,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace.
    pub vpid: i32,
    /// `NSpid:`.
    pub nspid: Vec<i32>,
    /// Its own process group (host numbering) — not the mount's pgrp.
    pub host_pgrp: i32,
    /// Fd number of the read end it kept.
    pub read_fd: i32,
}

/// What [`Scenario::start_automount`] should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomountSpec {
    /// Name; the indirect mount point is `<work_dir>/<name>`. `None`: `auto1`, ...
    pub name: Option<String>,
    /// `--timeout=` in the master map.
    pub timeout: u64,
    /// Map file content (one entry a line).
    pub map: String,
}

impl Default for AutomountSpec {
    fn default() -> Self {
        AutomountSpec {
            name: None,
            timeout: 60,
            map: "foo -fstype=tmpfs,size=1m :tmpfs\n".to_string(),
        }
    }
}

/// A running real `automount` daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automount {
    /// Name usable with [`Scenario::kill`] and [`Scenario::trigger`].
    pub name: String,
    /// Pid in the host pid namespace.
    pub host_pid: i32,
    /// Pid in the scenario's pid namespace (from its pid file).
    pub vpid: i32,
    /// Process group (host numbering); automount is its own session and pgrp leader.
    pub host_pgrp: i32,
    /// Process group in the scenario's pid namespace.
    pub vpgrp: i32,
    /// Its indirect mount point.
    pub mount_point: PathBuf,
    /// Mount id of its autofs mount.
    pub mount_id: u32,
    /// Its stdout/stderr log (inside the scenario's tmpfs; read it with
    /// [`Scenario::read_file`]).
    pub log: PathBuf,
}

/// One scenario: a private mount + pid namespace with its own pid 1.
///
/// Dropping it kills everything in it (see the crate docs).
pub struct Scenario {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: LineReader,
    init_host_pid: i32,
    init_nspid: Vec<i32>,
    mnt_ns: u64,
    pid_ns: u64,
    work_dir: PathBuf,
    timeout: Duration,
    broken: Option<String>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("init_host_pid", &self.init_host_pid)
            .field("mnt_ns", &self.mnt_ns)
            .field("pid_ns", &self.pid_ns)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn num<T: std::str::FromStr>(f: &Fields, key: &str) -> io::Result<T> {
    f.parse(key).map_err(bad)
}

impl Scenario {
    /// Starts a scenario, or says clearly why it cannot (not root, no autofs, no binary).
    pub fn start() -> io::Result<Scenario> {
        preflight()?;
        let (bin, fresh) = scenario_binary()?;
        match Scenario::start_with(&bin) {
            Err(e) if !fresh && e.to_string().contains("protocol version") => {
                let bin = build_scenario_binary()?;
                Scenario::start_with(&bin)
            }
            r => r,
        }
    }

    /// [`Scenario::start`], panicking with the reason on failure (real-kernel tests must
    /// fail, not skip, when they cannot run).
    #[track_caller]
    pub fn start_or_panic() -> Scenario {
        match Scenario::start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start a real-kernel autofs scenario: {e}"),
        }
    }

    /// Starts a scenario with an explicit `autofs-scenario` binary.
    pub fn start_with(bin: &Path) -> io::Result<Scenario> {
        preflight()?;
        remove_stale_work_dirs();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let work_dir = std::env::temp_dir().join(format!(
            "autofs-testkit-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&work_dir)
            .map_err(|e| bad(format!("creating {}: {e}", work_dir.display())))?;
        let r = Scenario::spawn(bin, &work_dir);
        if r.is_err() {
            let _ = std::fs::remove_dir(&work_dir);
        }
        r
    }

    fn spawn(bin: &Path, work_dir: &Path) -> io::Result<Scenario> {
        let mut cmd = Command::new(bin);
        cmd.arg("--work-dir")
            .arg(work_dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        child::die_with_parent(&mut cmd);
        let mut child =
            spawn_detached(cmd).map_err(|e| bad(format!("spawning {}: {e}", bin.display())))?;
        let stdin = child.stdin.take();
        let stdout = LineReader::new(child.stdout.take().expect("piped stdout"))?;
        let mut sc = Scenario {
            child: Some(child),
            stdin,
            stdout,
            init_host_pid: 0,
            init_nspid: Vec::new(),
            mnt_ns: 0,
            pid_ns: 0,
            work_dir: work_dir.to_path_buf(),
            timeout: Duration::from_secs(30),
            broken: None,
        };
        let line = sc
            .stdout
            .read_line(Instant::now() + Duration::from_secs(20))?;
        let (head, f) = proto::parse_line(&line).map_err(bad)?;
        match head.as_str() {
            "ready" => {}
            "error" => {
                return Err(bad(format!(
                    "the scenario did not start: {}",
                    f.get("message").unwrap_or("")
                )));
            }
            _ => return Err(bad(format!("unexpected banner `{}`", line.trim()))),
        }
        let version: u32 = num(&f, "version")?;
        if version != proto::PROTOCOL_VERSION {
            return Err(bad(format!(
                "{} speaks protocol version {version}, this library {} (stale binary?)",
                bin.display(),
                proto::PROTOCOL_VERSION
            )));
        }
        sc.init_host_pid = num(&f, "host_pid")?;
        sc.init_nspid = f.int_list("nspid").map_err(bad)?;
        sc.mnt_ns = num(&f, "mnt_ns")?;
        sc.pid_ns = num(&f, "pid_ns")?;
        Ok(sc)
    }

    /// Host pid of the scenario's pid 1.
    pub fn init_host_pid(&self) -> i32 {
        self.init_host_pid
    }

    /// `NSpid:` of the scenario's pid 1 (`[host pid, 1]`).
    pub fn init_nspid(&self) -> &[i32] {
        &self.init_nspid
    }

    /// Inode of the scenario's mount namespace (`mnt:[N]`).
    pub fn mnt_ns(&self) -> u64 {
        self.mnt_ns
    }

    /// Inode of the scenario's pid namespace (`pid:[N]`).
    pub fn pid_ns(&self) -> u64 {
        self.pid_ns
    }

    /// The scenario's work dir (a private tmpfs inside the scenario; an empty temp dir on
    /// the host, removed on drop). Mount points live right under it.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Changes the per-command reply timeout (default 30 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends one command and returns the `ok` fields, or the `error` text as an error.
    /// Low-level: prefer the typed methods.
    pub fn request(&mut self, cmd: &str, fields: &Fields) -> io::Result<Fields> {
        if let Some(b) = &self.broken {
            return Err(bad(format!("the scenario is unusable: {b}")));
        }
        let line = format!("{cmd}{}\n", fields.render());
        let stdin = self.stdin.as_mut().ok_or_else(|| bad("scenario stopped"))?;
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()) {
            self.broken = Some(format!("writing `{cmd}`: {e}"));
            return Err(bad(format!("sending `{cmd}` to the scenario: {e}")));
        }
        let reply = match self.stdout.read_line(Instant::now() + self.timeout) {
            Ok(l) => l,
            Err(e) => {
                self.broken = Some(format!("`{cmd}`: {e}"));
                return Err(bad(format!("waiting for the reply to `{cmd}`: {e}")));
            }
        };
        let (head, f) = proto::parse_line(&reply).map_err(bad)?;
        match head.as_str() {
            "ok" => Ok(f),
            "error" => Err(bad(format!(
                "scenario: {}",
                f.get("message").unwrap_or("(no message)")
            ))),
            _ => Err(bad(format!("unexpected reply `{}`", reply.trim()))),
        }
    }

    /// Forks a fake daemon that mounts autofs as `spec` says (see [`Daemon`]).
    pub fn mount(&mut self, spec: MountSpec) -> io::Result<Daemon> {
        let mut f = Fields::default();
        if let Some(n) = &spec.name {
            proto::check_plain("name", n).map_err(bad)?;
            f.push("name", n);
        }
        f.push("mode", spec.mode.as_str());
        if let Some(u) = spec.uid {
            f.push("uid", u);
        }
        if let Some(g) = spec.gid {
            f.push("gid", g);
        }
        if let Some(t) = spec.timeout {
            f.push("timeout", t);
        }
        if let Some(w) = spec.write_fd {
            f.push("write_fd", w);
        }
        if let Some(s) = &spec.source {
            proto::check_plain("source", s).map_err(bad)?;
            f.push("source", s);
        }
        if let Some(d) = &spec.dir {
            f.push("dir_hex", proto::hex_encode(d));
        }
        f.push("strictexpire", u8::from(spec.strictexpire))
            .push("close_write", u8::from(spec.close_write))
            .push("nested", u8::from(spec.nested_pidns));
        let r = self.request("mount", &f)?;
        let mount_point = match &spec.dir {
            Some(d) => self
                .work_dir()
                .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(d)),
            None => PathBuf::from(r.req("mount_point").map_err(bad)?),
        };
        Ok(Daemon {
            name: r.req("name").map_err(bad)?.to_string(),
            mode: Mode::parse(r.req("mode").map_err(bad)?)?,
            host_pid: num(&r, "host_pid")?,
            vpid: num(&r, "vpid")?,
            nspid: r.int_list("nspid").map_err(bad)?,
            host_pgrp: num(&r, "host_pgrp")?,
            vpgrp: num(&r, "vpgrp")?,
            ns_pgrp: num(&r, "ns_pgrp")?,
            read_fd: num(&r, "read_fd")?,
            write_fd: num(&r, "write_fd")?,
            write_closed: r.flag("write_closed").map_err(bad)?,
            mount_point,
            mount_id: num(&r, "mount_id")?,
            pipe_ino: num(&r, "pipe_ino")?,
            nested_pidns: r.flag("nested").map_err(bad)?,
        })
    }

    /// Mounts a small tmpfs (not autofs) on `<work dir>/<dir>`, `dir` given as bytes.
    pub fn tmpfs(&mut self, dir: &[u8]) -> io::Result<PathBuf> {
        let mut f = Fields::default();
        f.push("dir_hex", proto::hex_encode(dir));
        self.request("tmpfs", &f)?;
        Ok(self
            .work_dir()
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir)))
    }

    /// Starts a process in a mount namespace of its own (a copy of the scenario's, made
    /// with `unshare(CLONE_NEWNS)`, no new pid namespace: a `--pid=host`-like container)
    /// and a child of it in the same namespace. The owner chroots into `<work dir>/<chroot>`
    /// when `chroot` is given (so it sees only part of the mount table); with `chroot_all`
    /// the child does too.
    pub fn ns_member(&mut self, chroot: Option<&[u8]>, chroot_all: bool) -> io::Result<NsMember> {
        let mut f = Fields::default();
        if let Some(c) = chroot {
            f.push("chroot_hex", proto::hex_encode(c));
        }
        f.push("chroot_all", u8::from(chroot_all));
        let r = self.request("ns-member", &f)?;
        Ok(NsMember {
            owner_host_pid: num(&r, "owner_host_pid")?,
            child_host_pid: num(&r, "child_host_pid")?,
            mnt_ns: num(&r, "mnt_ns")?,
        })
    }

    /// Starts a requester (child of the scenario's pid 1, own process group, SIGPIPE
    /// ignored, in the daemon's pid namespace) that `statx`es `<mount point>/<rel>`
    /// (`rel` empty: the mount root itself). Returns once it is about to look up; it then
    /// blocks in the kernel until the daemon answers.
    ///
    /// `target` is a daemon or automount name (e.g. [`Daemon::name`]).
    pub fn trigger(&mut self, target: &str, rel: &str) -> io::Result<Requester> {
        self.trigger_impl(target, rel, false)
    }

    /// Like [`Scenario::trigger`], but the requester always stays in the scenario's pid
    /// namespace. For a nested daemon it is then invisible in the daemon's namespace: the
    /// kernel fails the lookup with ENOENT and writes nothing.
    pub fn trigger_outside(&mut self, target: &str, rel: &str) -> io::Result<Requester> {
        self.trigger_impl(target, rel, true)
    }

    fn trigger_impl(&mut self, target: &str, rel: &str, outside: bool) -> io::Result<Requester> {
        let mut f = Fields::default();
        f.push("name", target).push("outside", u8::from(outside));
        if !rel.is_empty() {
            proto::check_plain("path", rel).map_err(bad)?;
            f.push("path", rel);
        }
        let r = self.request("trigger", &f)?;
        Ok(Requester {
            id: num(&r, "id")?,
            host_pid: num(&r, "host_pid")?,
            vpid: num(&r, "vpid")?,
            nspid: r.int_list("nspid").map_err(bad)?,
            path: PathBuf::from(r.req("path").map_err(bad)?),
        })
    }

    /// Waits up to `timeout` for a requester to finish.
    pub fn wait_requester(
        &mut self,
        req: &Requester,
        timeout: Duration,
    ) -> io::Result<RequesterOutcome> {
        let mut f = Fields::default();
        f.push("id", req.id).push("timeout_ms", timeout.as_millis());
        let r = self.request("wait-requester", &f)?;
        match r.req("state").map_err(bad)? {
            "running" => Ok(RequesterOutcome::Running),
            "exited" => match num::<i32>(&r, "errno")? {
                0 => Ok(RequesterOutcome::Succeeded),
                e => Ok(RequesterOutcome::Failed(e)),
            },
            "signaled" => Ok(RequesterOutcome::Signaled(num(&r, "signal")?)),
            s => Err(bad(format!("unknown requester state `{s}`"))),
        }
    }

    /// The daemon reads exactly one packet (waiting up to 5 s) and answers it with
    /// `AUTOFS_IOC_FAIL`, so the requester unblocks with ENOENT.
    pub fn read_packet(&mut self, daemon: &Daemon) -> io::Result<Packet> {
        self.read_packet_with(&daemon.name, Answer::Fail, Duration::from_secs(5))
    }

    /// [`Scenario::read_packet`] with an explicit answer and wait bound.
    pub fn read_packet_with(
        &mut self,
        daemon: &str,
        answer: Answer,
        timeout: Duration,
    ) -> io::Result<Packet> {
        let mut f = Fields::default();
        f.push("name", daemon)
            .push("timeout_ms", timeout.as_millis())
            .push(
                "answer",
                match answer {
                    Answer::Fail => "fail",
                    Answer::Ready => "ready",
                    Answer::None => "none",
                },
            );
        let r = self.request("read-packet", &f)?;
        let raw = proto::hex_decode(r.req("hex").map_err(bad)?).map_err(bad)?;
        Packet::decode(&raw).map_err(bad)
    }

    fn named(&mut self, cmd: &str, name: &str) -> io::Result<Fields> {
        let mut f = Fields::default();
        f.push("name", name);
        self.request(cmd, &f)
    }

    /// The daemon closes its write end now.
    pub fn close_write(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("close-write", &daemon.name).map(drop)
    }

    /// The daemon closes its read end now (it stays alive).
    pub fn close_read(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("close-read", &daemon.name).map(drop)
    }

    /// The daemon closes both ends and exits; returns once it is reaped. The mount stays
    /// ("hidden catatonic" until the next lookup).
    pub fn exit_daemon(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("exit-daemon", &daemon.name).map(drop)
    }

    /// Sends `signal` to the daemon and waits until it is gone.
    pub fn kill_daemon(&mut self, daemon: &Daemon, signal: i32) -> io::Result<()> {
        self.kill(&daemon.name, signal, true)
    }

    /// Sends `signal` to a named process (daemon, delegate, automount); with `wait`,
    /// returns only once it is gone (error if it survives 5 s).
    pub fn kill(&mut self, name: &str, signal: i32, wait: bool) -> io::Result<()> {
        let mut f = Fields::default();
        f.push("name", name)
            .push("signal", signal)
            .push("wait", u8::from(wait));
        self.request("kill", &f).map(drop)
    }

    /// The daemon forks a child in another process group that keeps only the read end,
    /// then closes its own ends and exits (returns once it is reaped).
    pub fn delegate(&mut self, daemon: &Daemon) -> io::Result<Delegate> {
        let r = self.named("delegate", &daemon.name)?;
        Ok(Delegate {
            name: r.req("name").map_err(bad)?.to_string(),
            host_pid: num(&r, "host_pid")?,
            vpid: num(&r, "vpid")?,
            nspid: r.int_list("nspid").map_err(bad)?,
            host_pgrp: num(&r, "host_pgrp")?,
            read_fd: num(&r, "read_fd")?,
        })
    }

    /// Lazily unmounts (`MNT_DETACH`) a daemon's or automount's mount.
    pub fn umount(&mut self, name: &str) -> io::Result<()> {
        self.named("umount", name).map(drop)
    }

    /// Starts the real `/usr/sbin/automount` in daemon mode with a one-line master map
    /// (`<work_dir>/<name> <map> --timeout=N`) and waits until its mount appears.
    pub fn start_automount(&mut self, spec: AutomountSpec) -> io::Result<Automount> {
        let mut f = Fields::default();
        if let Some(n) = &spec.name {
            proto::check_plain("name", n).map_err(bad)?;
            f.push("name", n);
        }
        f.push("timeout", spec.timeout)
            .push("map_hex", proto::hex_encode(spec.map.as_bytes()));
        let r = self.request("automount", &f)?;
        Ok(Automount {
            name: r.req("name").map_err(bad)?.to_string(),
            host_pid: num(&r, "host_pid")?,
            vpid: num(&r, "vpid")?,
            host_pgrp: num(&r, "host_pgrp")?,
            vpgrp: num(&r, "vpgrp")?,
            mount_point: PathBuf::from(r.req("mount_point").map_err(bad)?),
            mount_id: num(&r, "mount_id")?,
            log: PathBuf::from(r.req("log").map_err(bad)?),
        })
    }

    /// Reads a regular file as the scenario sees it (through `/proc/<init>/root`). Do not
    /// use it on a path inside an autofs mount.
    pub fn read_file(&self, path: &Path) -> io::Result<String> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        std::fs::read_to_string(Path::new(&format!("/proc/{}/root", self.init_host_pid)).join(rel))
    }

    /// The scenario's mount table, read from the host (`/proc/<init>/mountinfo`).
    pub fn mountinfo(&self) -> io::Result<Vec<MountInfoLine>> {
        procfs::read_mountinfo(self.init_host_pid)
    }

    /// The mount table as a process *inside* the scenario reads it: in the scenario's pid
    /// namespace (`daemon` `None`) or in a nested daemon's one. `pgrp=` is printed in the
    /// reader's pid namespace, so it differs from the host view.
    pub fn mountinfo_inside(&mut self, daemon: Option<&Daemon>) -> io::Result<Vec<MountInfoLine>> {
        let mut f = Fields::default();
        if let Some(d) = daemon {
            f.push("name", &d.name);
        }
        let r = self.request("mountinfo", &f)?;
        let raw = proto::hex_decode(r.req("hex").map_err(bad)?).map_err(bad)?;
        procfs::parse_table(&raw)
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

    /// Stops the scenario now: everything in it is killed and reaped, the namespaces go
    /// away and the work dir is removed. Drop does the same, ignoring errors.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.broken.is_none() {
            // A polite quit: the init kills and reaps everything, then exits.
            let quit = self.stdin.as_mut().map(|s| s.write_all(b"quit\n"));
            if matches!(quit, Some(Ok(()))) {
                let _ = self
                    .stdout
                    .read_line(Instant::now() + Duration::from_secs(10));
            }
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut err = None;
        if status.is_none() {
            // Kill pid 1 first so its parent (our child) reaps it, then our child.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init_host_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            std::thread::sleep(Duration::from_millis(50));
            let _ = child.kill();
            let _ = child.wait();
            err = Some(bad("the scenario did not quit; killed it"));
        }
        // The init's parent (our child) reaped it, so it is gone now; double-check.
        let init = self.init_host_pid;
        if init > 0
            && !wait_until(Duration::from_secs(5), || {
                procfs::process_state(init).is_none()
            })
        {
            err.get_or_insert(bad(format!("scenario init {init} is still in /proc")));
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work_dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            err.get_or_insert(bad(format!("removing {}: {e}", self.work_dir.display())));
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked the child exits; spawning from a thread that lives as long as the process
/// makes the scenario die with the test process, not with the test's thread.
fn spawn_detached(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
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
    let (rtx, rrx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, rtx))
        .map_err(|_| bad("the spawner thread is gone"))?;
    rrx.recv().map_err(|_| bad("the spawner thread is gone"))?
}

/// Removes empty work dirs left by test processes that were killed (best effort; only
/// dirs of dead pids, and `remove_dir` only succeeds on empty ones).
fn remove_stale_work_dirs() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("autofs-testkit-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if procfs::process_state(pid).is_none() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Fails with a clear message when real-kernel scenarios cannot run here.
pub fn preflight() -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(bad(
            "real-kernel autofs tests must run as root (they mount autofs and unshare namespaces)",
        ));
    }
    if !procfs::autofs_available() {
        return Err(bad(
            "the kernel has no autofs filesystem (/proc/filesystems); load autofs4 or enable CONFIG_AUTOFS_FS",
        ));
    }
    Ok(())
}

/// Locates the `autofs-scenario` binary: `$AUTOFS_SCENARIO_BIN`; else the one next to the
/// running test binary (if newer than this crate's sources); else builds it. The flag says
/// whether it was just built.
pub fn scenario_binary() -> io::Result<(PathBuf, bool)> {
    binaries::SCENARIO.locate()
}

/// Builds `autofs-scenario` with cargo (once per process).
pub fn build_scenario_binary() -> io::Result<PathBuf> {
    binaries::SCENARIO.build()
}

/// Reads lines from the init's stdout with a deadline (non-blocking fd + short sleeps).
struct LineReader {
    out: ChildStdout,
    buf: Vec<u8>,
}

impl LineReader {
    fn new(out: ChildStdout) -> io::Result<LineReader> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let fl = fcntl(&out, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        fcntl(
            &out,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        Ok(LineReader {
            out,
            buf: Vec::new(),
        })
    }

    fn read_line(&mut self, deadline: Instant) -> io::Result<String> {
        let mut sleep = Duration::from_micros(100);
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            let mut tmp = [0u8; 4096];
            match self.out.read(&mut tmp) {
                Ok(0) => return Err(bad("the scenario exited (EOF on its stdout)")),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    sleep = Duration::from_micros(100);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no reply from the scenario in time",
                ));
            }
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(Duration::from_millis(5));
        }
    }
}
