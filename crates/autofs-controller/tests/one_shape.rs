//! The proto is the only schema: the same real autofs mounts read three ways — the agent's
//! `scan --json`, the wire (`ListMounts` through the controller library) and the controller's
//! `collect --output json` — are one shape, field for field.

mod common;

use std::process::Command;

use autofs_controller::{Collector, CollectorConfig, NodeEndpoint, v1};
use autofs_testkit::{MountSpec, Scenario, wait_until};
use common::*;
use serde_json::Value;

/// The workspace's `autofs-agent` binary.
fn agent_binary() -> std::path::PathBuf {
    autofs_testkit::binaries::AGENT
        .locate()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// Values of the mounts of `mnt_ns`, by mount id.
fn by_mount_id<'a>(mounts: impl IntoIterator<Item = &'a Value>, mnt_ns: u64) -> Vec<Value> {
    let mut v: Vec<Value> = mounts
        .into_iter()
        .filter(|m| m["mnt_ns"] == mnt_ns)
        .cloned()
        .collect();
    v.sort_by_key(|m| m["mount_id"].as_u64());
    v
}

#[test]
fn scan_json_the_wire_and_the_controller_json_are_one_shape() {
    let mut sc = Scenario::start_or_panic();
    let _active = sc.mount(MountSpec::indirect().timeout(30).uid(7)).unwrap();
    let _bytes = sc.mount(MountSpec::direct().dir(b"shape-caf\xe9")).unwrap();
    let delegated = sc.mount(MountSpec::indirect()).unwrap();
    let _delegate = sc.delegate(&delegated).unwrap();
    let queued = sc.mount(MountSpec::indirect().close_write()).unwrap();
    let _req = sc.trigger(&queued.name, "key").unwrap();
    assert!(sc.wait_until(HANG_GUARD, |s| s.queued_bytes(&queued).unwrap_or(0) > 0));
    let node = Node::start("shape", &[]);
    let ns = sc.mnt_ns();

    // The controller's JSON, once the agent's scans show all four mounts with their verdicts.
    let mnt_ns_flag = ns.to_string();
    let mut controller_json = Vec::new();
    assert!(
        wait_until(HANG_GUARD, || {
            let out = controller(&[
                "collect",
                "--nodes",
                &node.endpoint(),
                "--mnt-ns",
                &mnt_ns_flag,
                "--output",
                "json",
            ]);
            controller_json = by_mount_id(json(&out)["mounts"].as_array().unwrap(), ns);
            let states: Vec<&str> = controller_json
                .iter()
                .map(|m| m["state"].as_str().unwrap())
                .collect();
            states.len() == 4
                && states.contains(&"ORPHANED")
                && states.contains(&"INTERIM")
                && states.iter().filter(|s| **s == "ACTIVE").count() == 2
        }),
        "the agent never reported the scenario's four mounts"
    );

    // The agent's own CLI, same node name, on the same node: the scenario's mount namespace
    // (INTERIM and ORPHANED block a dump: exit 1).
    let out = Command::new(agent_binary())
        .args(["scan", "--json", "--node-name", node.name(), "--pid"])
        .arg(sc.init_host_pid().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scan_json = by_mount_id(&lines, ns);

    // The wire: what the agent sends, decoded by prost.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wire: Vec<v1::MountReport> = runtime.block_on(async {
        let collector = Collector::new(
            vec![NodeEndpoint::parse(&node.endpoint(), "test").unwrap()],
            CollectorConfig::default(),
        )
        .unwrap();
        let report = collector
            .collect(v1::ListMountsRequest {
                mnt_ns: Some(ns),
                ..Default::default()
            })
            .await;
        let mut mounts: Vec<v1::MountReport> = report.mounts().cloned().collect();
        mounts.sort_by_key(|m| m.mount_id);
        mounts
    });

    // One shape: the same JSON, field for field, and the same messages as the wire's.
    assert_eq!(scan_json, controller_json);
    let wire_json: Vec<Value> = wire
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    assert_eq!(wire_json, scan_json);
    let from_json: Vec<v1::MountReport> = scan_json
        .iter()
        .map(|m| serde_json::from_value(m.clone()).unwrap())
        .collect();
    assert_eq!(from_json, wire);

    // And the shape is the agreed one: short enum names, base64 bytes, CRIU's absent fields
    // left out.
    let caf = scan_json
        .iter()
        .find(|m| {
            m["mount_point"]
                .as_str()
                .unwrap()
                .ends_with("/shape-caf\\xe9")
        })
        .expect("the non-UTF-8 mount point is reported");
    let bytes = wire
        .iter()
        .find(|m| m.mount_point == caf["mount_point"])
        .unwrap()
        .mount_point_bytes
        .clone();
    assert!(bytes.ends_with(b"/shape-caf\xe9"), "{bytes:?}");
    assert!(caf["mount_point_bytes"].is_string(), "{caf}");
    let uid = scan_json.iter().find(|m| m["entry"]["uid"] == 7).unwrap();
    assert_eq!(uid["state"], "ACTIVE");
    assert_eq!(uid["reason"], "MASTER_HOLDS_PIPE");
    assert!(uid["entry"].get("read_fd").is_none(), "{uid}");
    let interim = scan_json.iter().find(|m| m["state"] == "INTERIM").unwrap();
    assert_eq!(interim["reason"], "PIPE_NOT_EMPTY");
    assert!(interim["pending_bytes"].as_u64().unwrap() > 0, "{interim}");
    assert!(interim["entry"]["read_fd"].is_i64(), "{interim}");
}
