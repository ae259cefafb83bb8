//! A stand-in for a test process: starts a scenario with one blocked lookup, prints
//! `HOLDING <init host pid> <mnt ns> <work dir>` and waits to be SIGKILLed. Used to prove
//! that a killed test process takes its scenario down with it.

use std::io::Write as _;
use std::time::Duration;

use autofs_testkit::{MountSpec, Scenario};

fn main() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).expect("mount");
    let _req = sc.trigger(&d.name, "blocked").expect("trigger");
    println!(
        "HOLDING {} {} {}",
        sc.init_host_pid(),
        sc.mnt_ns(),
        sc.work_dir().display()
    );
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
