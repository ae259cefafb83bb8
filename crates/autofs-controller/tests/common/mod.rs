//! Harness of the controller's tests: network namespaces as nodes, real `autofs-agent`
//! processes inside them (started by the testkit's agent builder), and the real
//! `autofs-controller` binary.
//!
//! A [`Node`] is one network namespace joined to the host by a veth pair (host side
//! `10.99.N.1/24`, node side `10.99.N.2/24`), with an agent serving on `10.99.N.2:50051`. `N` is
//! taken from lock files under `/run/autofs-controller-tests`, so test processes running in
//! parallel never share a subnet; a lock left by a dead process is reclaimed together with its
//! namespace. Everything is removed on drop, also when the test fails, and agents get
//! `PR_SET_PDEATHSIG` so they die with the test process.
//!
//! All agents read the same host /proc, so every node reports every autofs mount of the
//! machine (including other tests'): assertions filter by the scenarios' mount namespaces.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod dnsmasq;
pub mod fake_agent;
pub mod gate;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use autofs_testkit::HANG_GUARD;
pub use autofs_testkit::agent::{AgentBuilder, AgentProcess as Agent};
use serde_json::Value;

/// The agents' port inside their namespaces.
pub const AGENT_PORT: u16 = 50051;
const LOCK_DIR: &str = "/run/autofs-controller-tests";

/// Runs a command, panicking with its stderr when it fails.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes a free subnet index 1..=250; reclaims indexes whose owner process is gone.
fn take_index() -> u8 {
    std::fs::create_dir_all(LOCK_DIR).expect("create the lock dir");
    let me = std::process::id();
    let start = (me as usize * 7 + SEQ.fetch_add(1, Ordering::Relaxed) as usize) % 250;
    for k in 0..250 {
        let n = ((start + k) % 250 + 1) as u8;
        let lock = Path::new(LOCK_DIR).join(n.to_string());
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => {
                std::fs::write(&lock, me.to_string()).unwrap();
                remove_leftovers(n);
                return n;
            }
            Err(_) => {
                let owner: Option<i32> = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                // An empty file may be a lock being written right now: leave it.
                if let Some(owner) = owner
                    && !pid_alive(owner)
                {
                    let _ = std::fs::remove_file(&lock);
                }
            }
        }
    }
    panic!("no free test subnet index in {LOCK_DIR}");
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn names(n: u8) -> (String, String, String) {
    (format!("acx{n}"), format!("acxh{n}"), format!("acxn{n}"))
}

/// Removes a namespace and link of index `n` left by a killed test process.
fn remove_leftovers(n: u8) {
    let (ns, host, _) = names(n);
    let _ = Command::new("ip").args(["link", "del", &host]).output();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
}

/// One network namespace joined to the host by a veth pair.
pub struct NetNs {
    /// Subnet index.
    pub n: u8,
    /// Namespace name.
    pub name: String,
    host_if: String,
    node_if: String,
}

impl NetNs {
    /// Creates the namespace and its link, up and addressed.
    pub fn new() -> NetNs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the multi-node tests must run as root (they create network namespaces)"
        );
        let n = take_index();
        let (name, host_if, node_if) = names(n);
        let ns = NetNs {
            n,
            name,
            host_if,
            node_if,
        };
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.node_if,
            "netns",
            &ns.name,
        ]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.99.{n}.1/24"),
            "dev",
            &ns.host_if,
        ]);
        sh(&["ip", "link", "set", &ns.host_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("10.99.{n}.2/24"),
            "dev",
            &ns.node_if,
        ]);
        sh(&["ip", "-n", &ns.name, "link", "set", &ns.node_if, "up"]);
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The node's address.
    pub fn ip(&self) -> String {
        format!("10.99.{}.2", self.n)
    }

    /// `10.99.N.2:50051`.
    pub fn endpoint(&self) -> String {
        format!("{}:{AGENT_PORT}", self.ip())
    }

    /// Makes the node drop every packet silently: its link goes down while the host keeps a
    /// permanent neighbour entry, so SYNs leave the host and vanish (no RST, no ICMP).
    pub fn black_hole(&self) {
        let link = sh(&["ip", "-n", &self.name, "-j", "link", "show", &self.node_if]);
        let link: Value = serde_json::from_str(&link).unwrap();
        let mac = link[0]["address"].as_str().unwrap().to_owned();
        sh(&[
            "ip",
            "neigh",
            "replace",
            &self.ip(),
            "lladdr",
            &mac,
            "dev",
            &self.host_if,
            "nud",
            "permanent",
        ]);
        sh(&["ip", "-n", &self.name, "link", "set", &self.node_if, "down"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_file(Path::new(LOCK_DIR).join(self.n.to_string()));
    }
}

/// The agents of these tests: the workspace's `autofs-agent` (`$AUTOFS_AGENT_BIN`, else the
/// one next to this test binary when it is newer than its sources, else built now with cargo)
/// with `--scan-interval 200ms`.
pub fn agent_builder() -> AgentBuilder {
    AgentBuilder::workspace()
        .unwrap_or_else(|e| panic!("{e}"))
        .scan_interval("200ms")
}

/// Starts an agent named `node` listening on `listen` (inside `netns` when given) plus
/// `extra` flags, and waits until its first scan is done (the controller's deadlines must not
/// cover it); SIGKILLed and reaped on drop.
#[track_caller]
pub fn start_agent(netns: Option<&str>, node: &str, listen: &str, extra: &[&str]) -> Agent {
    let mut builder = agent_builder().node_name(node).listen(listen).args(extra);
    if let Some(netns) = netns {
        builder = builder.netns(netns);
    }
    let mut agent = builder.start();
    agent.wait_first_scan();
    agent
}

/// A node: a namespace with an agent serving on `10.99.N.2:50051`.
pub struct Node {
    /// The agent (dropped before the namespace).
    pub agent: Agent,
    /// The namespace.
    pub ns: NetNs,
}

impl Node {
    /// A new namespace and agent named `<prefix>-<N>` (unique across parallel tests).
    pub fn start(prefix: &str, extra: &[&str]) -> Node {
        let ns = NetNs::new();
        let node = format!("{prefix}-{}", ns.n);
        let agent = start_agent(Some(&ns.name), &node, &ns.endpoint(), extra);
        Node { agent, ns }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.agent.node
    }

    /// `10.99.N.2:50051`.
    pub fn endpoint(&self) -> String {
        self.ns.endpoint()
    }
}

/// The real `autofs-controller` binary with `args`, `RUST_LOG=warn` and no stdin.
pub fn controller_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autofs-controller"));
    cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end; its exit code and output go to the test's log.
pub fn run_logged(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "{cmd:?} -> {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the real `autofs-controller` binary with `args`.
pub fn controller(args: &[&str]) -> Output {
    run_logged(&mut controller_command(args))
}

/// stdout as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The mounts of a `collect --output json` document reported by `node` for `mnt_ns`.
pub fn mounts_of<'a>(doc: &'a Value, node: &str, mnt_ns: u64) -> Vec<&'a Value> {
    doc["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["node"] == node && m["mnt_ns"] == mnt_ns)
        .collect()
}

/// `e` and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
