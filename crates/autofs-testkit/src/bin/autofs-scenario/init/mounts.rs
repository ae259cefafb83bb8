//! Autofs mounts the init makes and removes: a fake daemon's autofs mount (in the
//! scenario's pid namespace or a nested one; in the scenario's mount namespace or, aside, in
//! one of its own two levels below its owner), plain tmpfs mounts, lazy unmounts.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use autofs_testkit::procfs;
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
            minproto: f.parse_opt("minproto")?,
            timeout: f.parse_opt("timeout")?,
            strictexpire: f.flag("strictexpire")?,
            close_write: f.flag("close_write")?,
            write_fd: f.parse_opt("write_fd")?,
        };
        let nested = f.flag("nested")?;
        let aside = f.flag("aside")?;
        if nested && aside {
            return Err("`nested` and `aside` do not combine".into());
        }
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
                if aside {
                    aside_owner(mine, theirs, cfg)
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
        if aside {
            // The mount is in the owner's namespace: the init neither unmounts it (it goes
            // with the namespace) nor triggers it.
            let (middle, owner) = self.register_aside(&name, nspid[0])?;
            f.push("owner_host_pid", owner.host_pid)
                .push("middle_host_pid", middle.host_pid)
                .push(
                    "mnt_ns",
                    procfs::ns_inode(owner.host_pid, "mnt")
                        .map_err(|e| format!("the owner's ns/mnt: {e}"))?,
                );
        } else {
            self.mounts.push(mount_point.clone());
        }
        self.procs.insert(
            name.clone(),
            Proc {
                host_pid: nspid[0],
                vpid,
                mount_point: (!aside).then_some(mount_point),
                pidns: nested_ns,
            },
        );
        self.daemons.insert(name.clone(), link);
        f.push("name", &name)
            .push("vpid", vpid)
            .push("vpgrp", vpid)
            .push("mode", mode)
            .push("nested", u8::from(nested))
            .push("aside", u8::from(aside));
        Ok(f)
    }

    /// Names the middle process and the owner above the aside daemon `name` (host pid
    /// `daemon`) `<name>.middle` and `<name>.owner`; returns their (host, scenario) pids.
    fn register_aside(&mut self, name: &str, daemon: i32) -> Result<(Above, Above), String> {
        let above = |pid: i32, what: &str| -> Result<Above, String> {
            let host_pid = procfs::ppid(pid).ok_or_else(|| format!("no parent of the {what}"))?;
            let nspid = procfs::nspid(host_pid).map_err(|e| format!("NSpid: {e}"))?;
            let vpid = *nspid.get(1).ok_or("a short NSpid above the daemon")?;
            Ok(Above { host_pid, vpid })
        };
        let middle = above(daemon, "daemon")?;
        let owner = above(middle.host_pid, "middle process")?;
        for (suffix, p) in [("middle", middle), ("owner", owner)] {
            self.procs.insert(
                format!("{name}.{suffix}"),
                Proc {
                    host_pid: p.host_pid,
                    vpid: p.vpid,
                    mount_point: None,
                    pidns: None,
                },
            );
        }
        Ok((middle, owner))
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

/// A process above an aside daemon: host pid and pid in the scenario's pid namespace.
#[derive(Clone, Copy)]
struct Above {
    host_pid: i32,
    vpid: i32,
}

/// Pid 1 of a nested pid namespace: forks the daemon (pid 2 there) and reaps forever, so
/// the daemon's delegates survive it.
fn nested_init(mine: UnixStream, theirs: UnixStream, cfg: daemon::Config) -> ! {
    drop(mine);
    fork_daemon_and_reap(theirs, cfg, "in the nested pid ns")
}

/// The owner of an aside daemon: unshares a mount namespace of its own (a private copy of
/// the scenario's), forks the middle process, which forks the daemon; both reap forever, so
/// that a killed middle process goes away and the daemon is re-parented to the scenario's
/// pid 1.
fn aside_owner(mine: UnixStream, theirs: UnixStream, cfg: daemon::Config) -> ! {
    drop(mine);
    if let Err(e) = autofs_testkit::mount_ns::unshare_private_mounts(CloneFlags::empty()) {
        fail(theirs, &format!("the aside owner: {e}"))
    }
    match sys::fork() {
        Ok(sys::Fork::Child) => fork_daemon_and_reap(theirs, cfg, "in the middle process"),
        Ok(sys::Fork::Parent(_)) => reap_forever(theirs),
        Err(e) => fail(theirs, &format!("fork in the aside owner: {e}")),
    }
}

/// Forks the daemon, then reaps forever.
fn fork_daemon_and_reap(theirs: UnixStream, cfg: daemon::Config, place: &str) -> ! {
    match sys::fork() {
        Ok(sys::Fork::Child) => daemon::run(theirs, cfg),
        Ok(sys::Fork::Parent(_)) => reap_forever(theirs),
        Err(e) => fail(theirs, &format!("fork {place}: {e}")),
    }
}

/// Answers the init with an error in the daemon's place and exits.
fn fail(theirs: UnixStream, message: &str) -> ! {
    let mut t = theirs;
    let _ = writeln!(t, "error {message}");
    sys::exit_now(1);
}

/// Closes everything (the daemon's control socket among them) and reaps children forever.
fn reap_forever(theirs: UnixStream) -> ! {
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
