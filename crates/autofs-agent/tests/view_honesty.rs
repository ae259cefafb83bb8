//! "Could not see" is never "nothing there": the real binary, against real autofs mounts, run
//! where part of the node is out of its sight (another pid namespace, a proc root of another
//! pid namespace), says so in its exit code, on stderr, over gRPC and in the metrics.

mod common;

use std::process::Command;

use autofs_api::v1::{self, check_migratable_request::Target};
use autofs_testkit::{MountSpec, Scenario};
use common::{Agent, sample, scrape};
use serde_json::Value;
use tonic_health::pb::health_check_response::ServingStatus;

const AGENT: &str = env!("CARGO_BIN_EXE_autofs-agent");

/// `unshare` making a pid namespace of its own, with a proc of it at /proc, for the command
/// that follows: what an agent without hostPID sees.
const OWN_PID_NS: [&str; 5] = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"];

/// Runs `program args…` and parses its stdout as JSON lines: reports, exit code, stderr.
fn run(program: &str, args: &[&str]) -> (Vec<Value>, i32, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("AUTOFS_AGENT_PROC_ROOT")
        .output()
        .unwrap_or_else(|e| panic!("{program} (util-linux) runs the scan: {e}"));
    common::scan_output(out)
}

/// Runs `args…` in a pid namespace of its own ([`OWN_PID_NS`]), as [`run`].
fn run_in_own_pid_ns(args: &[&str]) -> (Vec<Value>, i32, String) {
    let (program, unshare) = OWN_PID_NS.split_first().unwrap();
    run(program, &[unshare, args].concat())
}

#[test]
fn a_scan_in_a_pid_namespace_of_its_own_says_the_processes_outside_are_invisible() {
    // A DaemonSet without hostPID: the agent's /proc is its own pid namespace's, where the
    // node's daemons and their mount namespaces do not exist. That is not "no autofs mounts".
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let (reports, code, stderr) =
        run_in_own_pid_ns(&[AGENT, "scan", "--json", "--node-name", "node-a"]);
    assert_eq!(code, 2, "a partial view never exits 0 or 1: {stderr}");
    assert!(
        stderr.contains("is not the host's: processes outside it are invisible"),
        "{stderr}"
    );
    assert!(
        reports.iter().all(|r| r["mnt_ns"] != sc.mnt_ns()),
        "the scenario is outside the scan's pid namespace: {reports:#?}"
    );
}

#[test]
fn a_pid_not_found_through_a_restricted_view_may_be_there_unseen() {
    // This test's own pid does not exist in a fresh pid namespace of two processes; seen
    // from there it is not "no such process" but "not seen".
    let own = std::process::id().to_string();
    let (_, code, stderr) = run_in_own_pid_ns(&[AGENT, "scan", "--pid", &own]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pid {own}: no such process, as far as the agent can see"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("it may be there, unseen"), "{stderr}");
}

#[test]
fn a_scan_below_another_init_warns_but_does_not_restrict() {
    // A node that itself runs in a container (kind, k3d): the agent, with hostPID, shares the
    // node container's pid namespace, whose init is the node's, not the agent. Nothing of
    // that node is missing, so the view is not restricted; the namespace is named in a
    // warning, since a pod without hostPID under an init of its own looks the same.
    let (_, code, stderr) = run_in_own_pid_ns(&[
        "sh",
        "-c",
        // Not the last command: the shell stays pid 1 and the agent runs as its child.
        &format!("{AGENT} scan --json --node-name node-a; exit $?"),
    ]);
    assert_ne!(code, 2, "not restricted: {stderr}");
    assert!(
        stderr.contains("is not the kernel's initial one: on a node that runs in a container"),
        "{stderr}"
    );
    assert!(!stderr.contains("is not the host's"), "{stderr}");
}

#[test]
fn a_proc_root_of_another_pid_namespace_never_judges_masters_by_their_pgrp_numbers() {
    // The kernel prints `pgrp=` in the pid namespace of the process reading mountinfo, not in
    // that of the proc root it reads through: through a proc of the scenario's pid namespace
    // the daemon is pid 2, its mounts say pgrp=<host pid>. Judged by that number the daemon
    // looks gone (or another process looks like it); the only true answer is ERROR.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "nsenter -t {init} -p -- mount -t proc proc {dir} && exec {AGENT} scan --json --node-name node-a --proc-root {dir}",
        init = sc.init_host_pid(),
        dir = dir.path().display(),
    );
    let (reports, code, stderr) = run(
        "unshare",
        &["-m", "--propagation", "private", "sh", "-c", &script],
    );
    assert_eq!(code, 2, "{reports:#?} {stderr}");
    let mine: Vec<_> = reports
        .iter()
        .filter(|r| r["mnt_ns"] == sc.mnt_ns())
        .collect();
    assert_eq!(mine.len(), 1, "{reports:#?}");
    let r = mine[0];
    assert_eq!(r["mount_id"], d.mount_id);
    assert_eq!(
        (r["state"].as_str(), r["reason"].as_str()),
        (Some("ERROR"), Some("PGRP_NOT_VISIBLE")),
        "{r:#?}"
    );
    assert_eq!(r["dumpable"], false);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not the pid namespace its proc root shows"),
        "{r:#?}"
    );
    assert!(stderr.contains("another pid namespace"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_host_pid_says_so_in_get_node_info_and_the_metrics() {
    let agent = Agent::start_wrapped(&OWN_PID_NS, &[]);
    // Scans run ("" serves); what they cannot see keeps the inspector NOT_SERVING.
    agent.wait_health("", ServingStatus::Serving).await;
    let client = agent.client().await;
    let info = common::eventually("GetNodeInfo names the pid namespace", || {
        let mut client = client.clone();
        async move {
            let info = common::node_info(&mut client).await;
            info.view_problems
                .iter()
                .any(|p| p.contains("is not the host's: processes outside it are invisible"))
                .then_some(info)
        }
    })
    .await;
    assert!(info.view_restricted, "{info:?}");
    assert_eq!(
        sample(&scrape(agent.metrics), "autofs_view_restricted"),
        1.0
    );
    agent
        .wait_health(common::API_SERVICE, ServingStatus::NotServing)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_not_seen_through_a_restricted_view_is_never_not_found() {
    // The agent's pid namespace is its own, so the scenario's container, pod and processes
    // are out of its sight. "No process of it runs on this node" would be a guess.
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let cgroup = autofs_testkit::cgroup::ContainerCgroup::enter(sc.init_host_pid());
    let agent = Agent::start_wrapped(&OWN_PID_NS, &[]);
    agent.wait_health("", ServingStatus::Serving).await;
    let mut client = agent.client().await;
    // A pid no process of the agent's namespace has (its namespace holds unshare's child only).
    let pid = 1 << 22;
    for target in [
        Target::ContainerId(cgroup.container_id.clone()),
        Target::PodUid(cgroup.pod_uid.clone()),
        Target::Pid(pid),
    ] {
        common::assert_check_denied(
            &mut client,
            target,
            "the agent's view of /proc is restricted",
        )
        .await;
    }
    let status = client
        .list_mounts(v1::ListMountsRequest {
            pid: Some(pid),
            ..Default::default()
        })
        .await
        .expect_err("a pid not seen through a restricted view is not known to be gone");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}
