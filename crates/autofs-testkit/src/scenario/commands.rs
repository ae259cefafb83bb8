//! The typed commands of a [`Scenario`]: each builds one request line, sends it to the
//! scenario's init and turns the reply into a typed report.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::Scenario;
use crate::packet::Packet;
use crate::procfs::{self, MountInfoLine};
use crate::proto::{self, Fields};
use crate::reports::{
    Aside, Automount, Daemon, Delegate, NsMember, Requester, RequesterOutcome, WriteEndKeeper,
};
use crate::spec::{Answer, AutomountSpec, Mode, MountSpec};
use crate::{bad, num};

impl Scenario {
    /// Forks a fake daemon that mounts autofs as `spec` says (see [`Daemon`]).
    ///
    /// # Errors
    ///
    /// An error before sending when the name or source holds whitespace; those of
    /// [`Scenario::request`], the init's reply saying e.g. that the name is taken or invalid, or
    /// which step of the mount failed (`mkdir`, `pipe`, a `write_fd` in use, the mount itself); or
    /// an error naming a field of the reply that is missing or malformed.
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
        if let Some(m) = spec.minproto {
            f.push("minproto", m);
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
            .push("nested", u8::from(spec.nested_pidns))
            .push("aside", u8::from(spec.aside));
        let r = self.request("mount", &f)?;
        let aside = if r.flag("aside").map_err(bad)? {
            Some(Aside {
                owner_host_pid: num(&r, "owner_host_pid")?,
                middle_host_pid: num(&r, "middle_host_pid")?,
                mnt_ns: num(&r, "mnt_ns")?,
            })
        } else {
            None
        };
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
            aside,
        })
    }

    /// Mounts a small tmpfs (not autofs) on `<work dir>/<dir>`, `dir` given as bytes.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`] (the init's reply when the dir or the mount fails).
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
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`] (the init's reply when the chroot dir cannot be made, the
    /// fork fails, or the process cannot unshare or chroot), or an error naming a field of the
    /// reply that is missing or malformed.
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
    ///
    /// # Errors
    ///
    /// An error before sending when `rel` holds whitespace; those of [`Scenario::request`], the
    /// init's reply saying e.g. that `target` is unknown or `rel` is not relative or holds `..`; or
    /// an error naming a field of the reply that is missing or malformed.
    pub fn trigger(&mut self, target: &str, rel: &str) -> io::Result<Requester> {
        self.trigger_with(target, rel, false, false)
    }

    /// Like [`Scenario::trigger`], but the requester always stays in the scenario's pid
    /// namespace. For a nested daemon it is then invisible in the daemon's namespace: the
    /// kernel fails the lookup with ENOENT and writes nothing.
    ///
    /// # Errors
    ///
    /// As [`Scenario::trigger`].
    pub fn trigger_outside(&mut self, target: &str, rel: &str) -> io::Result<Requester> {
        self.trigger_with(target, rel, true, false)
    }

    /// Like [`Scenario::trigger`], but a second thread of the requester looks the path up
    /// (its `host_tid` is not its `host_pid`) while the thread-group leader waits for it.
    ///
    /// # Errors
    ///
    /// As [`Scenario::trigger`].
    pub fn trigger_from_thread(&mut self, target: &str, rel: &str) -> io::Result<Requester> {
        self.trigger_with(target, rel, false, true)
    }

    fn trigger_with(
        &mut self,
        target: &str,
        rel: &str,
        outside: bool,
        thread: bool,
    ) -> io::Result<Requester> {
        let mut f = Fields::default();
        f.push("name", target)
            .push("outside", u8::from(outside))
            .push("thread", u8::from(thread));
        if !rel.is_empty() {
            proto::check_plain("path", rel).map_err(bad)?;
            f.push("path", rel);
        }
        let r = self.request("trigger", &f)?;
        Ok(Requester {
            id: num(&r, "id")?,
            host_pid: num(&r, "host_pid")?,
            host_tid: num(&r, "host_tid")?,
            vpid: num(&r, "vpid")?,
            nspid: r.int_list("nspid").map_err(bad)?,
            path: PathBuf::from(r.req("path").map_err(bad)?),
        })
    }

    /// Waits up to `timeout` for a requester to finish.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`] (the init's reply for an unknown requester id), an error for
    /// a `state` other than running, exited or signaled, or an error naming a field of the reply
    /// that is missing or malformed. A requester still running at `timeout` is
    /// `Ok(RequesterOutcome::Running)`, not an error.
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
    ///
    /// # Errors
    ///
    /// As [`Scenario::read_packet_with`].
    pub fn read_packet(&mut self, daemon: &Daemon) -> io::Result<Packet> {
        self.read_packet_with(&daemon.name, Answer::Fail, Duration::from_secs(5))
    }

    /// [`Scenario::read_packet`] with an explicit answer and wait bound.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the daemon's reply saying e.g. that no packet arrived within
    /// `timeout`, that the daemon is unknown or has exited, or that the read or the answer failed;
    /// or an error when the reply's `hex` field is missing, is not hex, or holds fewer than 300
    /// bytes ([`Packet::decode`]).
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
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the daemon's reply saying e.g. that the end is already
    /// closed or the daemon has exited.
    pub fn close_write(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("close-write", &daemon.name).map(drop)
    }

    /// The daemon closes its read end now (it stays alive).
    ///
    /// # Errors
    ///
    /// As [`Scenario::close_write`].
    pub fn close_read(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("close-read", &daemon.name).map(drop)
    }

    /// The daemon makes directory `sub` in its mount's root (as the mount's process group,
    /// which triggers nothing), binds it onto `target` (created, in the scenario's mount
    /// namespace), and with `detach` detaches its own mount: what is left of the superblock is
    /// then a mount of a directory inside it.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the daemon's reply saying which step failed.
    pub fn bind_subdir(
        &mut self,
        daemon: &Daemon,
        sub: &str,
        target: &std::path::Path,
        detach: bool,
    ) -> io::Result<()> {
        let mut f = Fields::default();
        f.push("name", &daemon.name)
            .push("sub", sub)
            .push(
                "target_hex",
                proto::hex_encode(target.as_os_str().as_encoded_bytes()),
            )
            .push("detach", u8::from(detach));
        self.request("bind-subdir", &f).map(drop)
    }

    /// The daemon binds its mount's root onto `target` (an absolute path, created, in the
    /// scenario's mount namespace): a second mount of the superblock's root, listed after the
    /// first in the mount table. The daemon is the mount's process group ("oz mode"), so the
    /// walk onto a direct mount's root triggers nothing. Returns the bind's mount id.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the daemon's reply saying which step failed; or an error
    /// when the reply's `mount_id` is missing or malformed.
    pub fn bind_root(&mut self, daemon: &Daemon, target: &std::path::Path) -> io::Result<u32> {
        self.daemon_mounts("bind-root", daemon, target)
    }

    /// The daemon makes a further indirect autofs mount on `target` (an absolute path,
    /// created, in the scenario's mount namespace) with a pipe of its own, both ends kept: one
    /// daemon, one process group, leading two mounts, as an `automount` serving several maps.
    /// [`Scenario::umount`] of the daemon's name still unmounts its first mount. Returns the
    /// new mount's id.
    ///
    /// # Errors
    ///
    /// As [`Scenario::bind_root`].
    pub fn mount_another(&mut self, daemon: &Daemon, target: &std::path::Path) -> io::Result<u32> {
        self.daemon_mounts("mount-another", daemon, target)
    }

    /// The daemon mounts a small tmpfs on `target` (an absolute path: an existing directory,
    /// e.g. its own mount point or a bind of its root made by [`Scenario::bind_root`]), as the
    /// mount's process group, so that covering a direct mount's root triggers nothing. Returns
    /// the tmpfs's mount id.
    ///
    /// # Errors
    ///
    /// As [`Scenario::bind_root`].
    pub fn cover(&mut self, daemon: &Daemon, target: &std::path::Path) -> io::Result<u32> {
        self.daemon_mounts("cover", daemon, target)
    }

    fn daemon_mounts(
        &mut self,
        cmd: &str,
        daemon: &Daemon,
        target: &std::path::Path,
    ) -> io::Result<u32> {
        let mut f = Fields::default();
        f.push("name", &daemon.name).push(
            "target_hex",
            proto::hex_encode(target.as_os_str().as_encoded_bytes()),
        );
        let r = self.request(cmd, &f)?;
        num(&r, "mount_id")
    }

    /// The daemon closes both ends and exits; returns once it is reaped. The mount stays
    /// ("hidden catatonic" until the next lookup).
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the init's reply saying e.g. that the daemon is unknown, has
    /// exited already, or did not go away within 5 s.
    pub fn exit_daemon(&mut self, daemon: &Daemon) -> io::Result<()> {
        self.named("exit-daemon", &daemon.name).map(drop)
    }

    /// Sends `signal` to the daemon and waits until it is gone.
    ///
    /// # Errors
    ///
    /// As [`Scenario::kill`] with `wait`.
    pub fn kill_daemon(&mut self, daemon: &Daemon, signal: i32) -> io::Result<()> {
        self.kill(&daemon.name, signal, true)
    }

    /// Sends `signal` to a named process (daemon, delegate, automount); with `wait`,
    /// returns only once it is gone (error if it survives 5 s).
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the init's reply saying e.g. that `name` is unknown or not
    /// running, that `signal` is not a signal, or (with `wait`) that the process survived it
    /// for 5 s.
    pub fn kill(&mut self, name: &str, signal: i32, wait: bool) -> io::Result<()> {
        let mut f = Fields::default();
        f.push("name", name)
            .push("signal", signal)
            .push("wait", u8::from(wait));
        self.request("kill", &f).map(drop)
    }

    /// The daemon forks a child in another process group that keeps only the read end,
    /// then closes its own ends and exits (returns once it is reaped).
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the init's reply saying e.g. that the daemon is unknown or
    /// has exited, that the fork failed, or that the daemon did not go away within 5 s; or an error
    /// naming a field of the reply that is missing or malformed.
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

    /// The daemon forks a child that stays in its process group and keeps only the write end,
    /// then closes its own ends and exits (returns once it is reaped): the group outlives its
    /// leader, as an automount's helper that inherited the pipe does.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::delegate`], and the daemon's reply when it no longer holds the
    /// write end.
    pub fn hand_write_end(&mut self, daemon: &Daemon) -> io::Result<WriteEndKeeper> {
        let mut f = Fields::default();
        f.push("name", &daemon.name).push("keep", "write");
        let r = self.request("delegate", &f)?;
        Ok(WriteEndKeeper {
            name: r.req("name").map_err(bad)?.to_string(),
            host_pid: num(&r, "host_pid")?,
            vpid: num(&r, "vpid")?,
            host_pgrp: num(&r, "host_pgrp")?,
            write_fd: num(&r, "write_fd")?,
        })
    }

    /// Lazily unmounts (`MNT_DETACH`) a daemon's or automount's mount.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`] (the init's reply for an unknown name, a name with no mount,
    /// or a failed `umount2`).
    pub fn umount(&mut self, name: &str) -> io::Result<()> {
        self.named("umount", name).map(drop)
    }

    /// Starts the real `/usr/sbin/automount` in daemon mode with a one-line master map
    /// (`<work_dir>/<name> <map> --timeout=N`) and waits until its mount appears.
    ///
    /// # Errors
    ///
    /// An error before sending when the name holds whitespace; those of [`Scenario::request`], the
    /// init's reply saying e.g. that automount failed or did not start (with its log); or an error
    /// naming a field of the reply that is missing or malformed.
    pub fn start_automount(&mut self, spec: AutomountSpec) -> io::Result<Automount> {
        let mut f = Fields::default();
        if let Some(n) = &spec.name {
            proto::check_plain("name", n).map_err(bad)?;
            f.push("name", n);
        }
        f.push("timeout", spec.timeout)
            .push("map_hex", proto::hex_encode(spec.map.as_bytes()));
        automount_reply(&self.request("automount", &f)?)
    }

    /// Starts the automount `gone` again (after [`Scenario::kill`]) with the same master map,
    /// pid file and log, as `systemctl restart autofs` does: the new daemon finds its mount
    /// still there and takes it over (`AUTOFS_DEV_IOCTL_CATATONIC`, then `SETPIPEFD` with a
    /// pipe of its own). Returns once the mount shows the new daemon's pgrp.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`], the init's reply when `gone` is no automount of this
    /// scenario, still runs, or the new one failed to start or to take the mount over (with
    /// its log); or an error naming a field of the reply that is missing or malformed.
    pub fn restart_automount(&mut self, gone: &Automount) -> io::Result<Automount> {
        let mut f = Fields::default();
        f.push("name", &gone.name).push("restart", 1);
        automount_reply(&self.request("automount", &f)?)
    }

    /// The mount table as a process *inside* the scenario reads it: in the scenario's pid
    /// namespace (`daemon` `None`) or in a nested daemon's one. `pgrp=` is printed in the
    /// reader's pid namespace, so it differs from the host view.
    ///
    /// # Errors
    ///
    /// Those of [`Scenario::request`] (the init's reply when the daemon is unknown or the table
    /// cannot be read), or an error when the reply's `hex` field is missing or not hex.
    pub fn mountinfo_inside(&mut self, daemon: Option<&Daemon>) -> io::Result<Vec<MountInfoLine>> {
        let mut f = Fields::default();
        if let Some(d) = daemon {
            f.push("name", &d.name);
        }
        let r = self.request("mountinfo", &f)?;
        let raw = proto::hex_decode(r.req("hex").map_err(bad)?).map_err(bad)?;
        procfs::parse_table(&raw)
    }
}

/// The automount an `automount` command's reply describes.
fn automount_reply(r: &Fields) -> io::Result<Automount> {
    Ok(Automount {
        name: r.req("name").map_err(bad)?.to_string(),
        host_pid: num(r, "host_pid")?,
        vpid: num(r, "vpid")?,
        host_pgrp: num(r, "host_pgrp")?,
        vpgrp: num(r, "vpgrp")?,
        mount_point: PathBuf::from(r.req("mount_point").map_err(bad)?),
        mount_id: num(r, "mount_id")?,
        log: PathBuf::from(r.req("log").map_err(bad)?),
    })
}
