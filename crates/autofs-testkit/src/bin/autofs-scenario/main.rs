//! `autofs-scenario`: the init of one real-kernel autofs scenario.
//!
//! Usage: `autofs-scenario --work-dir DIR [--parent-pid PID]` (started by
//! `autofs_testkit::Scenario::start`, not meant to be run by hand).
//!
//! The process unshares a new mount and pid namespace (mount propagation made private),
//! forks the namespace's pid 1 and waits for it. Pid 1 execs this binary again with `--pid1`
//! (so that it maps its files from the new mount namespace's mounts, as a container's init
//! does; CRIU can dump it then), mounts a private tmpfs on DIR and
//! on `/run`, prints a `ready` banner and then answers one line per command read on
//! stdin (see `autofs_testkit::proto` and the crate docs for the commands). The host's
//! procfs stays mounted on `/proc`, so `/proc/self` gives host pids.

mod daemon;
mod init;
mod outer;
mod sys;

use std::path::PathBuf;

/// What `--help` prints.
const USAGE: &str = "\
usage: autofs-scenario --work-dir DIR [--parent-pid PID]
       autofs-scenario --pid1 --work-dir DIR   (pid 1 re-exec'd in the new namespaces)

The init of one real-kernel autofs scenario, started by autofs_testkit::Scenario::start: it
unshares a mount and pid namespace, mounts a private tmpfs on DIR and /run, prints a `ready`
banner, then answers one command per line on stdin (the protocol of autofs_testkit::proto).
Not meant to be run by hand; use the testkit's Scenario API.";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let mut work = None;
    let mut parent = None;
    let mut pid1 = false;
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--pid1" {
            pid1 = true;
            i += 1;
            continue;
        }
        match (args[i].as_str(), args.get(i + 1)) {
            ("--work-dir", Some(v)) => work = Some(PathBuf::from(v)),
            ("--parent-pid", Some(v)) => parent = v.parse::<i32>().ok(),
            _ => fatal(&format!("bad arguments: {args:?} (--help for usage)")),
        }
        i += 2;
    }
    let Some(work) = work else {
        fatal("missing --work-dir")
    };
    if pid1 {
        std::process::exit(outer::run_pid1(&work));
    }
    if let Err(e) = outer::run(&work, parent) {
        fatal(&e);
    }
}

/// Reports a startup failure on the protocol stdout (instead of the banner) and exits.
fn fatal(msg: &str) -> ! {
    println!("error autofs-scenario: {msg}");
    eprintln!("autofs-scenario: {msg}");
    std::process::exit(1);
}
