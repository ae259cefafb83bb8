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
    let until = Instant::now() + HANG_GUARD;
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

#[test]
fn one_agent_at_two_addresses_is_one_node_and_two_agents_with_one_name_are_a_duplicate() {
    // One agent on every local address, asked at two of them: as a dual-stack pod answers at
    // its IPv4 and IPv6 address (DNS discovery lists both). It is one node, answered once.
    let agent = start_agent(None, "dual-stack", "0.0.0.0:0", &[]);
    let port = agent.grpc.port();
    let both = format!("127.0.0.1:{port},127.0.0.2:{port}");
    let out = controller(&["collect", "--nodes", &both, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{doc}");
    assert_eq!(nodes[0]["node"], "dual-stack", "{doc}");
    let out = controller(&["nodes", "--nodes", &both, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out).as_array().unwrap().len(), 1);

    // Two agents that claim one node name are still refused: the second is a duplicate.
    let a = start_agent(None, "twin", "127.0.0.1:0", &[]);
    let b = start_agent(None, "twin", "127.0.0.1:0", &[]);
    let out = controller(&["collect", "--nodes", &format!("{},{}", a.grpc, b.grpc)]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the same node already answered at"), "{text}");
}
