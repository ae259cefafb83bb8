//! The real `automount` daemon in the scenario: master and map files in the work dir, a
//! pid file in the scenario's private `/run`, and the host pid found through /proc.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{Pid, setsid};

use super::{Init, Proc, Reply};
use crate::sys;

const DEFAULT_MAP: &str = "foo -fstype=tmpfs,size=1m :tmpfs\n";

impl Init {
    pub(super) fn cmd_automount(&mut self, f: &Fields) -> Reply {
        // `restart=1`: the named automount, gone, is started again with the same master map,
        // pid file and log; it finds its mounts still there and takes them over.
        let restart = f.get("restart").is_some_and(|v| v == "1");
        let (name, before) = if restart {
            let name = f.req("name")?.to_string();
            if !self.procs.contains_key(&name) || !self.is_automount(&name) {
                return Err(format!("no automount named `{name}` to restart"));
            }
            let vpid = self.procs[&name].vpid;
            (name, Some(vpid))
        } else {
            (self.new_name(f, "auto")?, None)
        };
        if self
            .procs
            .iter()
            .any(|(k, p)| self.is_automount(k) && procfs::process_alive(p.host_pid))
        {
            return Err("one automount per scenario: they share /run".into());
        }
        let mp = self.work.join(&name);
        let master = self.work.join(format!(".{name}.master"));
        let mapfile = self.work.join(format!(".{name}.map"));
        let log = self.work.join(format!(".{name}.log"));
        let pidfile = PathBuf::from(format!("/run/autofs-testkit-{name}.pid"));
        let io = |e: std::io::Error| e.to_string();
        if !restart {
            let timeout: u64 = f.parse_opt("timeout")?.unwrap_or(60);
            let map = match f.get("map_hex") {
                Some(h) => String::from_utf8(proto::hex_decode(h)?).map_err(|e| e.to_string())?,
                None => DEFAULT_MAP.to_string(),
            };
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
        }
        let logf = File::options()
            .create(true)
            .append(restart)
            .write(true)
            .truncate(!restart)
            .open(&log)
            .map_err(io)?;
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
        let deadline = Instant::now() + autofs_testkit::HANG_GUARD;
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
        // A SIGKILLed automount leaves its pid file behind; a restarted one has a new pid,
        // and its mount shows that pid as pgrp= once it has taken the mount over.
        let taken_over = |l: &procfs::MountInfoLine, vpid: i32| {
            l.fstype == "autofs"
                && (before.is_none() || l.option("pgrp") == Some(&vpid.to_string()))
        };
        while Instant::now() < deadline {
            if vpid.is_none() {
                vpid = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .filter(|&p| Some(p) != before);
            }
            line = procfs::read_mountinfo_self()
                .ok()
                .and_then(|v| v.into_iter().rev().find(|l| l.mount_point == mp));
            if let Some(v) = vpid
                && line.as_ref().is_some_and(|l| taken_over(l, v))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let vpid = vpid.ok_or_else(|| format!("no pid file; log: {}", read_log().trim()))?;
        let line = line
            .filter(|l| taken_over(l, vpid))
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
        if !restart {
            self.mounts.push(mp.clone());
        }
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

    pub(super) fn is_automount(&self, name: &str) -> bool {
        !self.daemons.contains_key(name) && self.procs[name].mount_point.is_some()
    }
}
