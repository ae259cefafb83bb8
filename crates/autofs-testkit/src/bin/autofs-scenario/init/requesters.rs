//! Requesters: processes that look up a path in an autofs mount (and block there until the
//! daemon answers), and waiting for how their lookup ended.

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{Init, Reply, Requester};
use crate::sys;

impl Init {
    pub(super) fn cmd_trigger(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?;
        let rel = f.get("path").unwrap_or("");
        if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
            return Err(format!("path `{rel}` must be relative without `..`"));
        }
        let outside = f.flag("outside")?;
        // `thread=1`: a second thread of the requester looks the path up while its first
        // (the thread-group leader) waits for it.
        let in_thread = f.flag("thread")?;
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
                // The `NSpid:` of the task that looks up, on the second line.
                let look_up = move || {
                    let tid = procfs::nspid_of_task("thread-self").unwrap_or_default();
                    let _ = writeln!(w, "{}", proto::int_list(&tid));
                    drop(w);
                    match sys::statx_triggering(&target) {
                        Ok(()) => 0,
                        Err(errno) => errno.clamp(1, 255),
                    }
                };
                let code = if in_thread {
                    std::thread::spawn(look_up).join().unwrap_or(255)
                } else {
                    look_up()
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
        let mut lines = s.lines().map(|l| {
            l.trim()
                .split(',')
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<i32>>()
        });
        let nspid = lines.next().unwrap_or_default();
        let tid = lines.next().unwrap_or_default();
        if nspid.is_empty() || tid.is_empty() {
            return Err(
                "the requester died before reporting its pid and the tid that looks up".into(),
            );
        }
        let id = self.next_id;
        self.next_id += 1;
        self.requesters.insert(id, Requester { vpid });
        let mut out = Fields::default();
        out.push("id", id)
            .push("host_pid", nspid[0])
            .push("host_tid", tid[0])
            .push("vpid", vpid)
            .push("nspid", proto::int_list(&nspid))
            .push("path", target.display());
        Ok(out)
    }

    pub(super) fn cmd_wait_requester(&mut self, f: &Fields) -> Reply {
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
}
