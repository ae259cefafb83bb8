//! The API from another language: the Python grpcio client in `tests/python/autofs_client.py`
//! (stubs generated from `proto/` at run time) against the real agent over real mounts.
//!
//! It needs the venv `scripts/install-test-deps` builds (`target/tools/venv`), or a Python
//! with grpcio, grpcio-tools, grpcio-health-checking and grpcio-reflection named by
//! `AUTOFS_TEST_PYTHON`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use autofs_testkit::closed_port::ClosedPort;
use autofs_testkit::{MountSpec, Scenario};
use common::{Agent, HANG_GUARD};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("AUTOFS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join("target/tools/venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/install-test-deps (or set AUTOFS_TEST_PYTHON)",
        venv.display()
    );
    venv
}

/// Runs the client; its JSON document, or a panic with its stderr.
fn run_client(agent: &Agent, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/autofs_client.py");
    let out = Command::new(python())
        .arg(&script)
        .arg("--address")
        .arg(agent.grpc.to_string())
        .arg("--proto-dir")
        .arg(repo_root().join("proto"))
        .args(args)
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits for the agent's first scan (health turns SERVING only after it).
fn wait_first_scan(agent: &Agent) {
    let deadline = Instant::now() + HANG_GUARD;
    while !agent.log_text().contains("first scan done; serving") {
        assert!(
            Instant::now() < deadline,
            "no first scan:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn python_grpcio_client_lists_mounts_checks_health_and_reflects_services() {
    let mut sc = Scenario::start_or_panic();
    let active = sc.mount(MountSpec::indirect().timeout(30)).unwrap();
    let interim = sc.mount(MountSpec::direct()).unwrap();
    let _blocked = sc.make_interim(&interim, "", HANG_GUARD).unwrap();
    let agent = Agent::start(&[]);
    wait_first_scan(&agent);

    let mnt_ns = sc.mnt_ns().to_string();
    let doc = run_client(&agent, &["--mnt-ns", &mnt_ns]);

    // ListMounts, filtered by the scenario's mount namespace: exactly its two mounts.
    let reports = doc["reports"].as_array().expect("reports array");
    let mut ids: Vec<u64> = reports
        .iter()
        .map(|r| r["mount_id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![u64::from(active.mount_id), u64::from(interim.mount_id)];
    want.sort_unstable();
    assert_eq!(ids, want, "{reports:#?}");
    let report = |id: u32| {
        reports
            .iter()
            .find(|r| r["mount_id"] == id)
            .unwrap_or_else(|| panic!("mount {id} missing"))
    };
    let a = report(active.mount_id);
    assert_eq!(a["state"], "MOUNT_STATE_ACTIVE", "{a:#}");
    assert_eq!(a["reason"], "REASON_MASTER_HOLDS_PIPE", "{a:#}");
    assert_eq!(a["node"], agent.node.as_str(), "{a:#}");
    // proto3 JSON writes 64-bit integers as strings.
    assert_eq!(a["mnt_ns"], mnt_ns.as_str(), "{a:#}");
    assert_eq!(a["pipe_ino"], active.pipe_ino.to_string(), "{a:#}");
    assert_eq!(a["host_pgrp"], active.host_pgrp, "{a:#}");
    assert_eq!(a["entry"]["pgrp"], active.vpgrp, "{a:#}");
    assert_eq!(a["entry"]["timeout"], 30, "{a:#}");
    assert_eq!(a["entry"]["mode"], 1, "indirect is CRIU mode 1: {a:#}");
    assert_eq!(a["dumpable"], true, "{a:#}");
    let i = report(interim.mount_id);
    assert_eq!(i["state"], "MOUNT_STATE_INTERIM", "{i:#}");
    assert_eq!(i["reason"], "REASON_PIPE_NOT_EMPTY", "{i:#}");
    assert_eq!(i["pending_bytes"], "304", "{i:#}");
    assert_eq!(i["pending_packets"], "1", "{i:#}");
    assert_eq!(i["dumpable"], false, "{i:#}");

    // Health: SERVING for the server and for the API.
    assert_eq!(doc["health"][""], "SERVING", "{doc:#}");
    assert_eq!(
        doc["health"]["autofs.v1.AutofsInspector"], "SERVING",
        "{doc:#}"
    );

    // Reflection (v1alpha, the only version grpcio-reflection speaks).
    let services: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for service in [
        "autofs.v1.AutofsInspector",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(&service), "{service} not in {services:?}");
    }

    // The state filter travels through the Python stubs too.
    let doc = run_client(
        &agent,
        &["--mnt-ns", &mnt_ns, "--state", "MOUNT_STATE_INTERIM"],
    );
    let only: Vec<&Value> = doc["reports"].as_array().unwrap().iter().collect();
    assert_eq!(only.len(), 1, "{only:#?}");
    assert_eq!(only[0]["mount_id"], interim.mount_id);
}

#[test]
fn python_client_exits_non_zero_when_the_agent_is_unreachable() {
    let python = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/autofs_client.py");
    let closed = ClosedPort::bind().unwrap();
    let out = Command::new(python)
        .arg(script)
        .args(["--address", &closed.addr().to_string()])
        .arg("--proto-dir")
        .arg(repo_root().join("proto"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UNAVAILABLE"), "{stderr}");
}

#[test]
fn python_grpcio_client_waits_for_a_workload_until_it_is_dumpable() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&d).unwrap();
    let agent = Agent::start(&[]);
    wait_first_scan(&agent);
    let mnt_ns = sc.mnt_ns().to_string();
    let pid = sc.init_host_pid().to_string();
    // A blocker that cannot clear: one message, WILL_NOT_CLEAR, and a clean end.
    let doc = run_client(&agent, &["--mnt-ns", &mnt_ns, "--wait-pid", &pid]);
    let wait = &doc["wait"];
    assert_eq!(wait["status"], "OK", "{wait:#}");
    let messages = wait["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{wait:#}");
    assert_eq!(messages[0]["outcome"], "OUTCOME_WILL_NOT_CLEAR", "{wait:#}");
    assert_eq!(
        messages[0]["blocking"][0]["mount_id"], d.mount_id,
        "{wait:#}"
    );
}
