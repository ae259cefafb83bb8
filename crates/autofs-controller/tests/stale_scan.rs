//! A node whose current scan has stalled answers `ListMounts` from its last good scan and says
//! so (`autofs-scan-stale: true`, `autofs-scan-age-ms`). `collect` must pass that on, never
//! show an old list as the node's current one. The real agent reads a copy of a fixture proc
//! tree whose `mountinfo` files turn into FIFOs nobody writes (the scan blocks in open(), as on
//! a node where a read hangs behind a stuck unmount); the real controller asks it.

mod common;

use std::time::{Duration, Instant};

use autofs_testkit::proc_fixture::{HungMountinfo, fixture_proc_root};
use common::*;

#[test]
fn collect_says_which_nodes_answered_from_a_stalled_scans_last_good_one() {
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let mut agent = agent_builder()
        .proc_root(&proc_root)
        .args(["--scan-stall-timeout", "1s"])
        .start();
    agent.wait_first_scan();
    let addr = agent.grpc.to_string();

    // A current answer is not marked.
    let out = controller(&["collect", "--nodes", &addr, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["nodes"][0]["stale"], false, "{doc}");

    let _hung = HungMountinfo::hang(&proc_root);
    // The next background scan blocks; the watchdog declares it stalled after 1 s.
    let until = Instant::now() + HANG_GUARD;
    loop {
        let text = autofs_testkit::http::scrape(agent.metrics).unwrap();
        if autofs_testkit::http::sample_value(&text, "autofs_scan_stalled") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the agent never declared the stall:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = controller(&["collect", "--nodes", &addr]);
    // The node answered (as `check` does, the answer is kept and marked, the exit code stays).
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "STALE: node {}: its current scan has stalled; these mounts come from its last good scan, ",
        agent.node
        )),
        "{text}"
    );
    let out = controller(&["collect", "--nodes", &addr, "--output", "json"]);
    let doc = json(&out);
    let node = &doc["nodes"][0];
    assert_eq!(node["stale"], true, "{doc}");
    assert!(node["scan_age_ms"].as_u64().unwrap() >= 1000, "{doc}");
    // The list itself is the last good scan's: the fixture's one mount.
    assert_eq!(node["mounts"], 1, "{doc}");
}
