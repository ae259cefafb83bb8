//! The init: pid 1 of the scenario's pid namespace. It boots (private tmpfs on the work dir
//! and `/run`), prints the `ready` banner, then answers one command line per stdin line,
//! reaping every child, and on `quit` or EOF kills and reaps everything and unmounts.

mod automount;
mod daemons;
mod mounts;
mod namespaces;
mod requesters;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, setsid};

use crate::sys;

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

pub(crate) struct Init {
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

impl Init {
    pub(crate) fn boot(work: &Path) -> Result<Init, String> {
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

    pub(crate) fn serve(&mut self) -> i32 {
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
            "read-packet" | "close-write" | "close-read" | "bind-subdir" | "bind-root"
            | "cover" | "mount-another" => self.forward(cmd, f),
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

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
