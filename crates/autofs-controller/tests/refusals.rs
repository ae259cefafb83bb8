//! Requests an agent refuses for what they are (an invalid filter): asking again cannot help,
//! so `collect` exits 2 (bad input) rather than 3 (partial), and `watch` stops following the
//! node instead of reconnecting forever. A real agent, the real controller binary.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_filter_every_agent_refuses_is_bad_input_for_collect_and_ends_watch() {
    let agent = start_agent(None, "refusing", "127.0.0.1:0", &[]);
    let addr = agent.grpc.to_string();

    let out = controller(&["collect", "--nodes", &addr, "--container", "zz"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refusing") && text.contains("InvalidArgument: container_id"),
        "{text}"
    );

    // The same filter on `watch`: one line saying the node is not watched, then exit 2. The
    // bound only keeps a broken build from hanging the suite.
    let mut child = controller_command(&["watch", "--nodes", &addr, "--container", "zz"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("node refusing")
            && text.contains("InvalidArgument: container_id")
            && text.contains("not watched"),
        "{text}"
    );
}
