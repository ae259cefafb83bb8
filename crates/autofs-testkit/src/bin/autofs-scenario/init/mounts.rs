//! Autofs mounts the init makes and removes: a fake daemon's autofs mount (in the
//! scenario's pid namespace or a nested one), plain tmpfs mounts, lazy unmounts.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use autofs_testkit::proto::{self, Fields};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::daemons::read_reply;
use super::{DaemonLink, Init, Proc, Reply};
use crate::{daemon, sys};

impl Init {
    pub(super) fn cmd_mount(&mut self, f: &Fields) -> Reply {
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

    /// A tmpfs on `<work>/<dir_hex>` (an ordinary mount, e.g. with a name that is not UTF-8).
    pub(super) fn cmd_tmpfs(&mut self, f: &Fields) -> Reply {
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

    pub(super) fn cmd_umount(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?;
        let mp = self
            .proc(name)?
            .mount_point
            .clone()
            .ok_or_else(|| format!("`{name}` has no mount"))?;
        umount2(&mp, MntFlags::MNT_DETACH).map_err(|e| format!("umount {}: {e}", mp.display()))?;
        Ok(Fields::default())
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
