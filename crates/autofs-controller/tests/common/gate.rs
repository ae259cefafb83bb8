//! The migration gate (`check --wait`) as a test drives it: the real `autofs-controller` read
//! line by line, a real INTERIM autofs mount as the blocker, and agents on loopback addresses
//! that share a port, as a DaemonSet's pods do.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use autofs_testkit::{Answer, MountSpec, Scenario};

use super::{HANG_GUARD, controller_command};

/// How long a test waits for the controller's next expected line before failing (a bound
/// on a hung test, never a deadline the controller races: its wait is 10 minutes).
pub const LINE_BOUND: Duration = Duration::from_secs(120);

/// A running `autofs-controller check --wait`, its stdout read line by line; killed on drop.
pub struct Gate {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Text no stdout line may contain.
    pub forbidden: Option<String>,
}

impl Gate {
    pub fn start(args: &[&str]) -> Gate {
        let mut child = controller_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Gate {
            child,
            lines,
            seen: Vec::new(),
            forbidden: None,
        }
    }

    /// Reads lines until one satisfies `want`; returns it.
    #[track_caller]
    pub fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_BOUND;
        loop {
            let line = match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => line,
                Err(e) => panic!(
                    "no line {what} ({e}); stdout so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            };
            eprintln!("controller: {line}");
            self.seen.push(line.clone());
            if let Some(bad) = &self.forbidden {
                assert!(
                    !line.contains(bad.as_str()),
                    "a line contains {bad:?}:\n{}",
                    self.seen.join("\n")
                );
            }
            if want(&line) {
                return line;
            }
        }
    }

    /// Every stdout line up to the exit, and the exit code (`None` when it had to be killed:
    /// no line and no exit within [`LINE_BOUND`]).
    pub fn finish(self) -> (Option<i32>, Vec<String>) {
        let (code, lines, _) = self.finish_with_stderr();
        (code, lines)
    }

    /// [`Gate::finish`], and stderr.
    pub fn finish_with_stderr(mut self) -> (Option<i32>, Vec<String>, String) {
        while let Ok(line) = self.lines.recv_timeout(LINE_BOUND) {
            eprintln!("controller: {line}");
            self.seen.push(line);
        }
        if self.child.try_wait().unwrap().is_none() {
            eprintln!("the controller neither printed nor exited: killed");
            let _ = self.child.kill();
        }
        let status = self.child.wait().unwrap();
        let stderr = self.stderr();
        eprintln!("stderr:\n{stderr}");
        (status.code(), std::mem::take(&mut self.seen), stderr)
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on every local address a moment ago (the agents of one test share it, each on
/// its own loopback address, as pods share the DaemonSet's port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scenario whose init process is blocked by an INTERIM mount (a request its daemon has not
/// answered yet): the gate waits for it.
pub struct Blocked {
    pub sc: Scenario,
    daemon: autofs_testkit::Daemon,
    _request: autofs_testkit::Requester,
}

pub fn blocked() -> Blocked {
    let mut sc = Scenario::start_or_panic();
    let daemon = sc.mount(MountSpec::indirect()).unwrap();
    let request = sc.make_interim(&daemon, "key", HANG_GUARD).unwrap();
    Blocked {
        sc,
        daemon,
        _request: request,
    }
}

impl Blocked {
    /// The daemon answers: nothing blocks any more.
    pub fn unblock(&mut self) {
        self.sc
            .read_packet_with(&self.daemon.name, Answer::Ready, HANG_GUARD)
            .unwrap();
    }
}
