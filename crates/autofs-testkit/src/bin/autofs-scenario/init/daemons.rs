//! Talking to the fake daemons over their control sockets: forwarded commands (read a
//! packet, close an end), exit, delegation of the read end, and signals to any named process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use autofs_testkit::procfs;
use autofs_testkit::proto::{self, Fields};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{DaemonLink, Init, Proc, Reply};

impl Init {
    pub(super) fn link(&mut self, name: &str) -> Result<&mut DaemonLink, String> {
        match self.daemons.get_mut(name) {
            Some(l) if l.alive => Ok(l),
            Some(_) => Err(format!("daemon `{name}` has exited")),
            None => Err(format!("no daemon named `{name}`")),
        }
    }

    pub(super) fn ask_daemon(&mut self, name: &str, line: &str) -> Reply {
        let link = self.link(name)?;
        let s = link.ctl.get_mut();
        writeln!(s, "{line}")
            .and_then(|_| s.flush())
            .map_err(|e| format!("talking to daemon `{name}`: {e}"))?;
        read_reply(&mut link.ctl)
    }

    pub(super) fn forward(&mut self, cmd: &str, f: &Fields) -> Reply {
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

    pub(super) fn daemon_left(&mut self, name: &str) -> Result<(), String> {
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

    pub(super) fn cmd_exit_daemon(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        self.ask_daemon(&name, "exit")?;
        self.daemon_left(&name)?;
        Ok(Fields::default())
    }

    pub(super) fn cmd_delegate(&mut self, f: &Fields) -> Reply {
        let name = f.req("name")?.to_string();
        let mut rest = f.clone();
        rest.0.retain(|(k, _)| k != "name");
        let mut rep = self.ask_daemon(&name, &format!("delegate{}", rest.render()))?;
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

    pub(super) fn cmd_kill(&mut self, f: &Fields) -> Reply {
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
}

pub(super) fn read_reply(ctl: &mut BufReader<UnixStream>) -> Reply {
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
