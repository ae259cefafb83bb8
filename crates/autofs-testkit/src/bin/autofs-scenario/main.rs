//! `autofs-scenario`: the init of one real-kernel autofs scenario.
//!
//! Usage: `autofs-scenario --work-dir DIR [--parent-pid PID]` (started by
//! `autofs_testkit::Scenario::start`, not meant to be run by hand).
//!
//! The process unshares a new mount and pid namespace (mount propagation made private),
//! forks the namespace's pid 1 and waits for it. Pid 1 mounts a private tmpfs on DIR and
//! on `/run`, prints a `ready` banner and then answers one line per command read on
//! stdin (see `autofs_testkit::proto` and the crate docs for the commands). The host's
//! procfs stays mounted on `/proc`, so `/proc/self` gives host pids.

mod daemon;
mod sys;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getppid, setsid};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut work = None;
    let mut parent = None;
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--work-dir", Some(v)) => work = Some(PathBuf::from(v)),
            ("--parent-pid", Some(v)) => parent = v.parse::<i32>().ok(),
            _ => fatal(&format!("bad arguments: {args:?}")),
        }
        i += 2;
    }
    let Some(work) = work else {
        fatal("missing --work-dir")
    };
    if let Err(e) = outer(&work, parent) {
        fatal(&e);
    }
}

/// Reports a startup failure on the protocol stdout (instead of the banner) and exits.
fn fatal(msg: &str) -> ! {
    println!("error autofs-scenario: {msg}");
    eprintln!("autofs-scenario: {msg}");
    std::process::exit(1);
}

/// The process the library spawned: unshares, forks pid 1, waits for it.
fn outer(work: &Path, parent: Option<i32>) -> Result<(), String> {
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
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare(CLONE_NEWNS|CLONE_NEWPID): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Fork::Child => {
            let code = match Init::boot(work) {
                Ok(mut init) => init.serve(),
                Err(e) => {
                    println!("error autofs-scenario init: {e}");
                    1
                }
            };
            let _ = std::io::stdout().flush();
            sys::exit_now(code);
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

/// A process the init knows by name (daemon, delegate, automount).
struct Proc {
    host_pid: i32,
    vpid: i32,
    mount_point: Option<PathBuf>,
    /// Pid namespace to enter to trigger this process's mount (nested daemons).
    pidns: Option<File>,
}

struct DaemonLink {
    ctl: BufReader<UnixStream>,
    alive: bool,
}

struct Requester {
    vpid: i32,
}

struct Init {
    work: PathBuf,
    own_pidns: File,
    procs: BTreeMap<String, Proc>,
    daemons: HashMap<String, DaemonLink>,
    requesters: BTreeMap<u32, Requester>,
    reaped: HashMap<i32, WaitStatus>,
    next_id: u32,
    mounts: Vec<PathBuf>,
}

type Reply = Result<Fields, String>;

const DEFAULT_MAP: &str = "foo -fstype=tmpfs,size=1m :tmpfs\n";

impl Init {
    fn boot(work: &Path) -> Result<Init, String> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
        // Own session and process group, visible in this pid namespace (pgrp 1), so
        // nothing started here inherits an invisible pgrp (getpgrp() would return 0).
        setsid().map_err(|e| format!("setsid: {e}"))?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(
            Some("autofs-testkit"),
            work,
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=64m"),
        )
        .map_err(|e| format!("tmpfs on {}: {e}", work.display()))?;
        mount(
            Some("autofs-testkit-run"),
            "/run",
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=16m"),
        )
        .map_err(|e| format!("tmpfs on /run: {e}"))?;
        let own_pidns = File::open("/proc/self/ns/pid").map_err(|e| format!("pid ns: {e}"))?;
        Ok(Init {
            work: work.to_path_buf(),
            own_pidns,
            procs: BTreeMap::new(),
            daemons: HashMap::new(),
            requesters: BTreeMap::new(),
            reaped: HashMap::new(),
            next_id: 1,
            mounts: Vec::new(),
        })
    }

    fn serve(&mut self) -> i32 {
        let banner = (|| -> Result<Fields, String> {
            let nspid = procfs::nspid_self().map_err(|e| e.to_string())?;
            let mut f = Fields::default();
            f.push("version", proto::PROTOCOL_VERSION)
                .push("host_pid", nspid[0])
                .push("nspid", proto::int_list(&nspid))
                .push(
                    "mnt_ns",
                    procfs::ns_inode("self", "mnt").map_err(|e| e.to_string())?,
                )
                .push(
                    "pid_ns",
                    procfs::ns_inode("self", "pid").map_err(|e| e.to_string())?,
                )
                .push("work_dir", self.work.display());
            Ok(f)
        })();
        match banner {
            Ok(f) => say(&format!("ready{}", f.render())),
            Err(e) => {
                say(&format!("error {e}"));
                return 1;
            }
        }
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => {
                    self.teardown();
                    return 0;
                }
                Ok(_) => {}
            }
            self.reap_all();
            let (cmd, f) = match proto::parse_line(&line) {
                Ok(x) => x,
                Err(e) => {
                    say(&format!("error {e}"));
                    continue;
                }
            };
            if cmd == "quit" {
                self.teardown();
                say("ok");
                return 0;
            }
            match self.dispatch(&cmd, &f) {
                Ok(f) => say(&format!("ok{}", f.render())),
                Err(e) => say(&format!("error {cmd}: {}", e.replace('\n', " | "))),
            }
        }
    }

    fn dispatch(&mut self, cmd: &str, f: &Fields) -> Reply {
        match cmd {
            "ping" => Ok(Fields::default()),
            "mount" => self.cmd_mount(f),
            "trigger" => self.cmd_trigger(f),
            "wait-requester" => self.cmd_wait_requester(f),
            "read-packet" | "close-write" | "close-read" => self.forward(cmd, f),
            "exit-daemon" => self.cmd_exit_daemon(f),
            "delegate" => self.cmd_delegate(f),
            "kill" => self.cmd_kill(f),
            "automount" => self.cmd_automount(f),
            "umount" => self.cmd_umount(f),
            "mountinfo" => self.cmd_mountinfo(f),
            "tmpfs" => self.cmd_tmpfs(f),
            "ns-member" => self.cmd_ns_member(f),
            _ => Err(format!("unknown command `{cmd}`")),
        }
    }

    fn reap_all(&mut self) {
        loop {
            match waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    if let Some(p) = st.pid() {
                        self.reaped.insert(p.as_raw(), st);
                    }
                }
            }
        }
    }

    /// Polls (reaping) until `/proc/<host_pid>` is gone; a reaped process has no entry.
    fn wait_gone(&mut self, host_pid: i32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap_all();
            if !Path::new(&format!("/proc/{host_pid}")).exists() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn forked(&mut self, vpid: i32) {
        self.reaped.remove(&vpid);
    }

    fn proc(&self, name: &str) -> Result<&Proc, String> {
        self.procs
            .get(name)
            .ok_or_else(|| format!("no process named `{name}`"))
    }

    fn new_name(&self, f: &Fields, prefix: &str) -> Result<String, String> {
        let name = match f.get("name") {
            Some(n) => n.to_string(),
            None => {
                let mut i = 1;
                while self.procs.contains_key(&format!("{prefix}{i}")) {
                    i += 1;
                }
                format!("{prefix}{i}")
            }
        };
        proto::check_plain("name", &name)?;
        if name.contains('/') || name.starts_with('.') || name.contains(',') {
            return Err(format!(
                "name `{name}` must not contain `/` or `,` nor start with `.`"
            ));
        }
        // Never stat the path: it may be a live direct mount root, which would trigger.
        let mp = self.work.join(&name);
        let mounted = procfs::read_mountinfo_self()
            .map(|v| v.iter().any(|l| l.mount_point == mp))
            .unwrap_or(false);
        if self.procs.contains_key(&name) || mounted {
            return Err(format!("name `{name}` is already used"));
        }
        Ok(name)
    }

    fn cmd_mount(&mut self, f: &Fields) -> Reply {
        let name = self.new_name(f, "m")?;
        let mode = f.get("mode").unwrap_or("indirect");
        if !matches!(mode, "indirect" | "direct" | "offset") {
            return Err(format!("mode must be indirect|direct|offset, not `{mode}`"));
        }
        let mount_point = match f.get("dir_hex") {
            Some(hex) => self
                .work
                .join(std::ffi::OsStr::from_bytes(&proto::hex_decode(hex)?)),
            None => self.work.join(&name),
        };
        let cfg = daemon::Config {
            mount_point: mount_point.clone(),
            source: f.get("source").unwrap_or("autofs-testkit").to_string(),
            mode: mode.to_string(),
            uid: f.parse_opt("uid")?,
            gid: f.parse_opt("gid")?,
            timeout: f.parse_opt("timeout")?,
            strictexpire: f.flag("strictexpire")?,
            close_write: f.flag("close_write")?,
            write_fd: f.parse_opt("write_fd")?,
        };
        let nested = f.flag("nested")?;
        let (mine, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut nested_ns = None;
        if nested {
            unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare(NEWPID): {e}"))?;
        }
        let forked = sys::fork();
        if nested {
            // The first child became pid 1 of the new namespace; keep a handle on it and
            // send later children back into our own namespace.
            if matches!(forked, Ok(sys::Fork::Parent(_))) {
                nested_ns = File::open("/proc/self/ns/pid_for_children").ok();
            }
            if !matches!(forked, Ok(sys::Fork::Child))
                && let Err(e) = setns(&self.own_pidns, CloneFlags::CLONE_NEWPID)
            {
                return Err(format!("setns back to the scenario pid ns: {e}"));
            }
        }
        let pid = match forked.map_err(|e| format!("fork: {e}"))? {
            sys::Fork::Child => {
                if nested {
                    nested_init(mine, theirs, cfg)
                }
                drop(mine);
                daemon::run(theirs, cfg)
            }
            sys::Fork::Parent(pid) => pid,
        };
        self.forked(pid);
        drop(theirs);
        let _ = mine.set_read_timeout(Some(Duration::from_secs(15)));
        let mut link = DaemonLink {
            ctl: BufReader::new(mine),
            alive: true,
        };
        let mut f = match read_reply(&mut link.ctl) {
            Ok(f) => f,
            Err(e) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(e);
            }
        };
        let nspid = f.int_list("nspid")?;
        let vpid = *nspid.get(1).ok_or("daemon reported a short NSpid")?;
        self.mounts.push(mount_point.clone());
        self.procs.insert(
            name.clone(),
            Proc {
                host_pid: nspid[0],
                vpid,
                mount_point: Some(mount_point),
                pidns: nested_ns,
            },
        );
        self.daemons.insert(name.clone(), link);
        f.push("name", &name)
            .push("vpid", vpid)
            .push("vpgrp", vpid)
            .push("mode", mode)
            .push("nested", u8::from(nested));
        Ok(f)
    }

    fn link(&mut self, name: &str) -> Result<&mut DaemonLink, String> {
        match self.daemons.get_mut(name) {
            Some(l) if l.alive => Ok(l),
            Some(_) => Err(format!("daemon `{name}` has exited")),
            None => Err(format!("no daemon named `{name}`")),
        }
    }

    fn ask_daemon(&mut self, name: &str, line: &str) -> Reply {
        let link = self.link(name)?;
        let s = link.ctl.get_mut();
        writeln!(s, "{line}")
            .and_then(|_| s.flush())
            .map_err(|e| format!("talking to daemon `{name}`: {e}"))?;
        read_reply(&mut link.ctl)
    }

    fn forward(&mut self, cmd: &str, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        let mut rest = f.clone();
        rest.0.retain(|(k, _)| k != "name");
        if let Some(t) = rest.parse_opt::<u64>("timeout_ms")? {
            let _ = self
                .link(&name)?
                .ctl
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(t + 10_000)));
        }
        self.ask_daemon(&name, &format!("{cmd}{}", rest.render()))
    }

    fn daemon_left(&mut self, name: &str) -> Result<(), String> {
        let host_pid = self.proc(name)?.host_pid;
        if let Some(l) = self.daemons.get_mut(name) {
            l.alive = false;
        }
        if !self.wait_gone(host_pid, Duration::from_secs(5)) {
            return Err(format!(
                "daemon `{name}` (host pid {host_pid}) did not go away"
            ));
        }
        Ok(())
    }

    fn cmd_exit_daemon(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        self.ask_daemon(&name, "exit")?;
        self.daemon_left(&name)?;
        Ok(Fields::default())
    }

    fn cmd_delegate(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        let mut rep = self.ask_daemon(&name, "delegate")?;
        self.daemon_left(&name)?;
        let nspid = rep.int_list("nspid")?;
        let vpid = *nspid.get(1).ok_or("delegate reported a short NSpid")?;
        let dname = format!("{name}.delegate");
        self.forked(vpid);
        self.procs.insert(
            dname.clone(),
            Proc {
                host_pid: nspid[0],
                vpid,
                mount_point: None,
                pidns: None,
            },
        );
        rep.push("name", dname).push("vpid", vpid);
        Ok(rep)
    }

    fn cmd_kill(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        let sig: i32 = f.parse_opt("signal")?.unwrap_or(9);
        let sig = Signal::try_from(sig).map_err(|e| format!("signal {sig}: {e}"))?;
        let wait = f.get("wait").map(|w| w != "0").unwrap_or(true);
        let (vpid, host_pid) = {
            let p = self.proc(&name)?;
            (p.vpid, p.host_pid)
        };
        if !procfs::process_alive(host_pid) {
            return Err(format!("`{name}` (host pid {host_pid}) is not running"));
        }
        kill(Pid::from_raw(vpid), sig).map_err(|e| format!("kill({vpid}, {sig}): {e}"))?;
        if let Some(l) = self.daemons.get_mut(&name)
            && wait
        {
            l.alive = false;
        }
        if wait && !self.wait_gone(host_pid, Duration::from_secs(5)) {
            return Err(format!("`{name}` survived {sig}"));
        }
        Ok(Fields::default())
    }

    fn cmd_umount(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?;
        let mp = self
            .proc(name)?
            .mount_point
            .clone()
            .ok_or_else(|| format!("`{name}` has no mount"))?;
        umount2(&mp, MntFlags::MNT_DETACH).map_err(|e| format!("umount {}: {e}", mp.display()))?;
        Ok(Fields::default())
    }

    fn cmd_trigger(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?;
        let rel = f.get("path").unwrap_or("");
        if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
            return Err(format!("path `{rel}` must be relative without `..`"));
        }
        let outside = f.flag("outside")?;
        let (target, pidns) = {
            let p = self.proc(name)?;
            let mp = p
                .mount_point
                .clone()
                .ok_or_else(|| format!("`{name}` has no mount"))?;
            let target = if rel.is_empty() { mp } else { mp.join(rel) };
            let ns = match (&p.pidns, outside) {
                (Some(ns), false) => Some(ns.try_clone().map_err(|e| e.to_string())?),
                _ => None,
            };
            (target, ns)
        };
        let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut r = File::from(r);
        let mut w = File::from(w);
        let forked = self.fork_in(pidns.as_ref());
        let vpid = match forked? {
            sys::Fork::Child => {
                use std::os::fd::AsRawFd;
                drop(r);
                sys::close_all_except(&[w.as_raw_fd()]);
                let _ = sys::stdio_to_devnull();
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
                sys::ignore_sigpipe();
                let nspid = procfs::nspid_self().unwrap_or_default();
                let _ = writeln!(w, "{}", proto::int_list(&nspid));
                drop(w);
                let code = match sys::statx_triggering(&target) {
                    Ok(()) => 0,
                    Err(errno) => errno.clamp(1, 255),
                };
                sys::exit_now(code);
            }
            sys::Fork::Parent(pid) => pid,
        };
        self.forked(vpid);
        drop(w);
        let mut s = String::new();
        r.read_to_string(&mut s)
            .map_err(|e| format!("requester report: {e}"))?;
        let nspid: Vec<i32> = s.trim().split(',').filter_map(|x| x.parse().ok()).collect();
        if nspid.is_empty() {
            return Err("the requester died before reporting its pid".into());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.requesters.insert(id, Requester { vpid });
        let mut out = Fields::default();
        out.push("id", id)
            .push("host_pid", nspid[0])
            .push("vpid", vpid)
            .push("nspid", proto::int_list(&nspid))
            .push("path", target.display());
        Ok(out)
    }

    /// Forks, with the child in `pidns` (a pid namespace below ours) if given.
    fn fork_in(&self, pidns: Option<&File>) -> Result<sys::Fork, String> {
        if let Some(ns) = pidns {
            setns(ns, CloneFlags::CLONE_NEWPID)
                .map_err(|e| format!("setns into the daemon's pid ns: {e}"))?;
        }
        let forked = sys::fork();
        if pidns.is_some()
            && !matches!(forked, Ok(sys::Fork::Child))
            && let Err(e) = setns(&self.own_pidns, CloneFlags::CLONE_NEWPID)
        {
            return Err(format!("setns back to the scenario pid ns: {e}"));
        }
        forked.map_err(|e| format!("fork: {e}"))
    }

    /// A tmpfs on `<work>/<dir_hex>` (an ordinary mount, e.g. with a name that is not UTF-8).
    fn cmd_tmpfs(&mut self, f: &Fields) -> Reply {
        let dir = self
            .work
            .join(std::ffi::OsStr::from_bytes(&proto::hex_decode(
                f.req("dir_hex")?,
            )?));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir: {e}"))?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=64k"),
        )
        .map_err(|e| format!("mount tmpfs: {e}"))?;
        self.mounts.push(dir);
        Ok(Fields::default())
    }

    /// A process in a copy of this mount namespace (no new pid namespace) and its child;
    /// `chroot_hex` makes the owner (and with `chroot_all` the child) chroot there.
    fn cmd_ns_member(&mut self, f: &Fields) -> Reply {
        let chroot = match f.get("chroot_hex") {
            Some(hex) => Some(
                self.work
                    .join(std::ffi::OsStr::from_bytes(&proto::hex_decode(hex)?)),
            ),
            None => None,
        };
        if let Some(dir) = &chroot {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir: {e}"))?;
        }
        let chroot_all = f.flag("chroot_all")?;
        let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut r = File::from(r);
        let w = File::from(w);
        let pid = match sys::fork().map_err(|e| format!("fork: {e}"))? {
            sys::Fork::Child => {
                drop(r);
                ns_member(w, chroot, chroot_all)
            }
            sys::Fork::Parent(pid) => pid,
        };
        self.forked(pid);
        drop(w);
        let mut text = String::new();
        r.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, fields) = proto::parse_line(&text)?;
        if head != "ok" {
            return Err(format!("ns-member: {}", text.trim()));
        }
        self.procs.insert(
            self.new_name(&Fields::default(), "ns")?,
            Proc {
                host_pid: fields.parse("owner_host_pid")?,
                vpid: pid,
                mount_point: None,
                pidns: None,
            },
        );
        Ok(fields)
    }

    /// `/proc/self/mountinfo` as read by a process of this pid namespace, or of the
    /// nested one of daemon `name` (the kernel prints `pgrp=` in the reader's pid ns).
    fn cmd_mountinfo(&mut self, f: &Fields) -> Reply {
        let pidns = match f.get("name") {
            None => None,
            Some(n) => match &self.proc(n)?.pidns {
                Some(ns) => Some(ns.try_clone().map_err(|e| e.to_string())?),
                None => None,
            },
        };
        let text = match pidns {
            None => std::fs::read("/proc/self/mountinfo").map_err(|e| e.to_string())?,
            Some(ns) => {
                let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
                let mut r = File::from(r);
                let mut w = File::from(w);
                let pid = match self.fork_in(Some(&ns))? {
                    sys::Fork::Child => {
                        use std::os::fd::AsRawFd;
                        drop(r);
                        sys::close_all_except(&[w.as_raw_fd()]);
                        let t = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
                        let _ = w.write_all(&t);
                        drop(w);
                        sys::exit_now(0);
                    }
                    sys::Fork::Parent(pid) => pid,
                };
                self.forked(pid);
                drop(w);
                let mut t = Vec::new();
                r.read_to_end(&mut t).map_err(|e| e.to_string())?;
                t
            }
        };
        let mut out = Fields::default();
        out.push("hex", proto::hex_encode(&text));
        Ok(out)
    }

    fn cmd_wait_requester(&mut self, f: &Fields) -> Reply {
        let id: u32 = f.parse("id")?;
        let timeout = Duration::from_millis(f.parse_opt("timeout_ms")?.unwrap_or(5000));
        let vpid = self
            .requesters
            .get(&id)
            .ok_or_else(|| format!("no requester {id}"))?
            .vpid;
        let deadline = Instant::now() + timeout;
        let mut out = Fields::default();
        loop {
            self.reap_all();
            match self.reaped.get(&vpid) {
                Some(WaitStatus::Exited(_, c)) => {
                    out.push("state", "exited").push("errno", c);
                    return Ok(out);
                }
                Some(WaitStatus::Signaled(_, s, _)) => {
                    out.push("state", "signaled").push("signal", *s as i32);
                    return Ok(out);
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                out.push("state", "running");
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn cmd_automount(&mut self, f: &Fields) -> Reply {
        let name = self.new_name(f, "auto")?;
        if self
            .procs
            .iter()
            .any(|(k, p)| self.is_automount(k) && procfs::process_alive(p.host_pid))
        {
            return Err("one automount per scenario: they share /run".into());
        }
        let timeout: u64 = f.parse_opt("timeout")?.unwrap_or(60);
        let map = match f.get("map_hex") {
            Some(h) => String::from_utf8(proto::hex_decode(h)?).map_err(|e| e.to_string())?,
            None => DEFAULT_MAP.to_string(),
        };
        let mp = self.work.join(&name);
        let master = self.work.join(format!(".{name}.master"));
        let mapfile = self.work.join(format!(".{name}.map"));
        let log = self.work.join(format!(".{name}.log"));
        let pidfile = PathBuf::from(format!("/run/autofs-testkit-{name}.pid"));
        let io = |e: std::io::Error| e.to_string();
        std::fs::create_dir_all(&mp).map_err(io)?;
        std::fs::write(&mapfile, map).map_err(io)?;
        std::fs::write(
            &master,
            format!(
                "{} {} --timeout={timeout}\n",
                mp.display(),
                mapfile.display()
            ),
        )
        .map_err(io)?;
        let logf = File::create(&log).map_err(io)?;
        let bin = f.get("binary").unwrap_or("/usr/sbin/automount");
        let argv = [
            "automount".to_string(),
            "-p".into(),
            pidfile.display().to_string(),
            master.display().to_string(),
        ];
        let cbin = std::ffi::CString::new(bin).map_err(|e| e.to_string())?;
        let cargv: Vec<std::ffi::CString> = argv
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).expect("no NUL"))
            .collect();
        let child = match sys::fork().map_err(|e| format!("fork: {e}"))? {
            sys::Fork::Child => {
                use std::os::fd::AsRawFd;
                sys::close_all_except(&[logf.as_raw_fd()]);
                let _ = sys::stdio_to_devnull();
                let _ = sys::dup2(logf.as_raw_fd(), 1);
                let _ = sys::dup2(logf.as_raw_fd(), 2);
                // automount passes getpgrp() as pgrp= in its probe mount: it must be visible.
                let _ = setsid();
                sys::default_sigpipe();
                let _ = nix::unistd::execv(&cbin, &cargv);
                sys::exit_now(127);
            }
            sys::Fork::Parent(pid) => pid,
        };
        self.forked(child);
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        // The foreground automount exits once the daemon reports it started.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.reap_all();
            match self.reaped.get(&child) {
                Some(WaitStatus::Exited(_, 0)) => break,
                Some(st) => {
                    return Err(format!("automount failed ({st:?}): {}", read_log().trim()));
                }
                None if Instant::now() >= deadline => {
                    let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
                    return Err(format!("automount did not start: {}", read_log().trim()));
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let mut vpid = None;
        let mut line = None;
        while Instant::now() < deadline {
            if vpid.is_none() {
                vpid = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
            }
            line = procfs::read_mountinfo_self()
                .ok()
                .and_then(|v| v.into_iter().rev().find(|l| l.mount_point == mp));
            if vpid.is_some() && line.as_ref().is_some_and(|l| l.fstype == "autofs") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let vpid = vpid.ok_or_else(|| format!("no pid file; log: {}", read_log().trim()))?;
        let line = line
            .filter(|l| l.fstype == "autofs")
            .ok_or_else(|| format!("no autofs mount appeared; log: {}", read_log().trim()))?;
        let own_ns = procfs::ns_inode("self", "pid").map_err(io)?;
        let host_pid = procfs::all_pids()
            .into_iter()
            .find(|&p| {
                procfs::ns_inode(p, "pid").ok() == Some(own_ns)
                    && procfs::nspid(p).ok().and_then(|n| n.last().copied()) == Some(vpid)
            })
            .ok_or_else(|| format!("cannot find automount (pid {vpid} here) in /proc"))?;
        let host_pgrp = procfs::host_pgrp(host_pid).map_err(io)?;
        self.forked(vpid);
        self.procs.insert(
            name.clone(),
            Proc {
                host_pid,
                vpid,
                mount_point: Some(mp.clone()),
                pidns: None,
            },
        );
        self.mounts.push(mp.clone());
        let mut out = Fields::default();
        out.push("name", &name)
            .push("host_pid", host_pid)
            .push("vpid", vpid)
            .push("host_pgrp", host_pgrp)
            .push(
                "vpgrp",
                procfs::nspid(host_pgrp)
                    .ok()
                    .and_then(|n| n.get(1).copied())
                    .unwrap_or(-1),
            )
            .push("mount_point", mp.display())
            .push("mount_id", line.mount_id)
            .push("log", log.display())
            .push("master", master.display())
            .push("map", mapfile.display());
        Ok(out)
    }

    fn is_automount(&self, name: &str) -> bool {
        !self.daemons.contains_key(name) && self.procs[name].mount_point.is_some()
    }

    /// Kills everything else in the namespace, reaps it, lazily unmounts what we mounted.
    fn teardown(&mut self) {
        // As pid 1 of this pid namespace, kill(-1) reaches every other process in it
        // (including nested namespaces) and nothing outside.
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Err(Errno::ECHILD) => break,
                Ok(WaitStatus::StillAlive) => {
                    if Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => {}
            }
        }
        for mp in self.mounts.iter().rev() {
            let _ = umount2(mp, MntFlags::MNT_DETACH);
        }
    }
}

/// Pid 1 of a nested pid namespace: forks the daemon (pid 2 there) and reaps forever, so
/// the daemon's delegates survive it.
fn nested_init(mine: UnixStream, theirs: UnixStream, cfg: daemon::Config) -> ! {
    drop(mine);
    match sys::fork() {
        Ok(sys::Fork::Child) => daemon::run(theirs, cfg),
        Ok(sys::Fork::Parent(_)) => {}
        Err(e) => {
            let mut t = theirs;
            let _ = writeln!(t, "error fork in the nested pid ns: {e}");
            sys::exit_now(1);
        }
    }
    drop(theirs);
    sys::close_all_except(&[]);
    let _ = sys::stdio_to_devnull();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Err(Errno::ECHILD) => sys::pause_forever(),
            _ => continue,
        }
    }
}

fn read_reply(ctl: &mut BufReader<UnixStream>) -> Reply {
    let mut line = String::new();
    match ctl.read_line(&mut line) {
        Ok(0) => return Err("the daemon exited without answering".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("no answer from the daemon: {e}")),
    }
    let (head, f) = proto::parse_line(&line)?;
    match head.as_str() {
        "ok" => Ok(f),
        "error" => Err(f.get("message").unwrap_or("").to_string()),
        other => Err(format!("unexpected daemon reply `{other}`")),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The `ns-member` process: unshares a mount namespace (a private copy of the scenario's),
/// forks a child there, optionally chroots, reports both host pids on `w`, then waits to be
/// killed with the scenario's pid namespace.
fn ns_member(w: File, chroot: Option<PathBuf>, chroot_all: bool) -> ! {
    use std::os::fd::AsRawFd;
    sys::close_all_except(&[w.as_raw_fd()]);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let report = |w: &mut File, line: String| {
        let _ = w.write_all(line.as_bytes());
    };
    let mut w = w;
    let result = (|| -> Result<String, String> {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(NEWNS): {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
        let (cr, cw) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
        match sys::fork().map_err(|e| format!("fork: {e}"))? {
            sys::Fork::Child => {
                drop(cr);
                // The reply pipe must see EOF once the owner has answered.
                sys::close_all_except(&[cw.as_raw_fd()]);
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                // Read before a chroot hides /proc.
                let host = procfs::nspid_self().map(|p| p[0]).unwrap_or(0);
                if chroot_all && let Some(dir) = &chroot {
                    let _ = nix::unistd::chroot(dir);
                }
                let mut cw = File::from(cw);
                let _ = cw.write_all(host.to_string().as_bytes());
                drop(cw);
                sys::pause_forever()
            }
            sys::Fork::Parent(_) => {}
        }
        drop(cw);
        let mut child_host = String::new();
        let _ = File::from(cr).read_to_string(&mut child_host);
        let own = procfs::nspid_self().map_err(|e| format!("NSpid: {e}"))?;
        let ns = procfs::ns_inode("self", "mnt").map_err(|e| format!("ns/mnt: {e}"))?;
        if let Some(dir) = &chroot {
            nix::unistd::chroot(dir).map_err(|e| format!("chroot: {e}"))?;
            nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
        }
        Ok(format!(
            "ok owner_host_pid={} child_host_pid={} mnt_ns={ns}\n",
            own[0],
            child_host.trim()
        ))
    })();
    match result {
        Ok(line) => report(&mut w, line),
        Err(e) => report(&mut w, format!("error {e}\n")),
    }
    drop(w);
    sys::pause_forever()
}
