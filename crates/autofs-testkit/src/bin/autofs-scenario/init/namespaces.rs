//! Views from other namespaces: a process in a mount namespace of its own (`ns-member`),
//! and the mount table as a reader in the scenario's or a nested pid namespace prints it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use super::{Init, Proc, Reply};
use crate::sys;

impl Init {
    /// A process in a copy of this mount namespace (no new pid namespace) and its child;
    /// `chroot_hex` makes the owner (and with `chroot_all` the child) chroot there.
    pub(super) fn cmd_ns_member(&mut self, f: &Fields) -> Reply {
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
    pub(super) fn cmd_mountinfo(&mut self, f: &Fields) -> Reply {
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
        autofs_testkit::mount_ns::unshare_private_mounts(CloneFlags::empty())?;
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
