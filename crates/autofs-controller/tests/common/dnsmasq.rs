//! A real `dnsmasq` (Debian package) on loopback, answering only from a hosts file the test
//! writes — and rewrites: dnsmasq reads it again on SIGHUP, as a cluster's DNS follows a
//! headless Service's endpoints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::HANG_GUARD;

/// A dnsmasq answering only from `hosts`, on 127.0.0.1:<port>; killed on drop.
pub struct Dnsmasq {
    child: Child,
    /// Where it answers.
    pub addr: SocketAddr,
    hosts: PathBuf,
    /// Its log lines (stderr), read by a thread.
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

/// Whether `line` is dnsmasq saying it has read a hosts file.
fn read_hosts(line: &str) -> bool {
    line.contains("read ") && line.contains(" names")
}

impl Dnsmasq {
    /// Starts one serving `hosts` (the text of a hosts file) and waits until it has read it.
    #[track_caller]
    pub fn start(hosts: &str) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, hosts).unwrap();
        for _ in 0..5 {
            // A port that was free a moment ago; dnsmasq fails fast if it was taken since.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut cmd = Command::new("dnsmasq");
            cmd.args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                "--log-queries",
                "--no-resolv",
                "--no-hosts",
                // Answer for the test domain itself: NXDOMAIN / no data, never REFUSED.
                "--local=/autofs.test/",
                // UDP answers of at most 512 bytes whatever EDNS size the client offers, so
                // that a long answer comes truncated and must be asked again over TCP.
                "--edns-packet-max=512",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            autofs_testkit::child::die_with_parent(&mut cmd);
            let mut child = cmd
                .spawn()
                .expect("dnsmasq must be installed (scripts/install-controller-test-deps)");
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let deadline = Instant::now() + HANG_GUARD;
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if read_hosts(&line) {
                    return Dnsmasq {
                        child,
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        hosts: file,
                        log: rx,
                        _dir: dir,
                    };
                }
                if line.contains("failed to create listening socket") {
                    break;
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }

    /// Replaces the hosts file with `hosts` and makes dnsmasq read it again (SIGHUP, which
    /// also empties its cache); returns once it says it has.
    #[track_caller]
    pub fn set_hosts(&mut self, hosts: &str) {
        let next = self.hosts.with_extension("next");
        std::fs::write(&next, hosts).unwrap();
        std::fs::rename(&next, &self.hosts).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if read_hosts(&line) => return,
                Ok(_) => {}
                Err(e) => panic!("dnsmasq did not read its hosts file again: {e}"),
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
