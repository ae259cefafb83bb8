//! `autofs-scenario`: the init of one real-kernel autofs scenario.
//!
//! Usage: `autofs-scenario --work-dir DIR [--parent-pid PID]` (started by
//! `autofs_testkit::Scenario::start`, not meant to be run by hand).
//!
//! The process unshares a new mount and pid namespace (mount propagation made private),
//! forks the namespace's pid 1 and waits for it. Pid 1 mounts a private tmpfs on DIR and
//! on `/run`, prints a `ready` banner and then answers one line per command read on
//! stdin (see `autofs_testkit::proto` and the crate docs for the commands). The host's
//! procfs stays mounted on `/proc`, so `/proc/self` gives host pids.

mod daemon;
mod init;
mod outer;
mod sys;

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut work = None;
    let mut parent = None;
    let mut i = 1;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--work-dir", Some(v)) => work = Some(PathBuf::from(v)),
            ("--parent-pid", Some(v)) => parent = v.parse::<i32>().ok(),
            _ => fatal(&format!("bad arguments: {args:?}")),
        }
        i += 2;
    }
    let Some(work) = work else {
        fatal("missing --work-dir")
    };
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
