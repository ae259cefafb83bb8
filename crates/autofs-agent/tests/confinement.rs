//! The agent tells the operator why a scan was denied what its capabilities should allow.
//!
//! No confining AppArmor or SELinux label can be applied on the machines these tests run on
//! (their kernels have neither LSM: README.md, "Hardened nodes"), so the denial comes from the
//! kernel's other reason to refuse a ptrace read that capabilities seem to allow: the agent
//! runs as root of a new user namespace, with a full effective capability set that counts for
//! nothing towards processes of the initial one. The label parsing itself is unit-tested on
//! fixture files (autofs-core, `security`).

mod common;

use autofs_api::v1::check_migratable_request::Target;
use common::Agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_scan_names_the_likely_cause_in_the_log_and_in_get_node_info() {
    let agent = Agent::start_wrapped(&["unshare", "--user", "--map-root-user"], &[]);
    // Denials are not fatal: the first scan succeeds with the processes it could read.
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let info = common::node_info(&mut client).await;
    assert!(
        info.can_read_fds,
        "root of a user namespace holds every capability there: {info:?}"
    );
    let cause = &info.access_denied_cause;
    assert!(
        cause.contains("process(es) could not be read although the agent holds CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{cause:?}"
    );
    assert!(cause.contains("a user namespace"), "{cause:?}");
    // The label fields say what /proc/self/attr says on this kernel.
    let own = autofs_core::ProcRoot::open("/proc")
        .ok()
        .and_then(|root| autofs_core::security::Confinement::read(&root));
    match own {
        None => {
            assert_eq!(info.security_label, "", "{info:?}");
            assert_eq!(info.security_module, "", "{info:?}");
            assert!(!info.security_confined, "{info:?}");
            assert!(cause.contains("no AppArmor or SELinux label"), "{cause:?}");
        }
        Some(c) => assert_eq!(info.security_module, c.lsm.as_str(), "{info:?}"),
    }

    // One warning per episode, not one per scan (the interval is 200 ms).
    common::eventually("the agent logs the cause", || async {
        agent
            .log_text()
            .contains("scan denied access to processes")
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let log = agent.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("scan denied access to processes"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("\"level\":\"WARN\""),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("could not be read although"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_whose_namespaces_could_not_be_read_is_neither_dumpable_nor_not_found() {
    // The agent may not read the mount namespaces of the scenario's processes (root of a user
    // namespace of its own), but anyone may read their cgroups: the gate knows the container
    // and its pod are there, unseen, and says so instead of "no process of it runs here".
    let sc = autofs_testkit::Scenario::start_or_panic();
    let cgroup = autofs_testkit::cgroup::ContainerCgroup::enter(sc.init_host_pid());
    let agent = Agent::start_wrapped(&["unshare", "--user", "--map-root-user"], &[]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    for target in [
        Target::ContainerId(cgroup.container_id.clone()),
        Target::PodUid(cgroup.pod_uid.clone()),
    ] {
        let status = common::assert_check_denied(
            &mut client,
            target,
            "could not be read, so its autofs mounts cannot all be seen",
        )
        .await;
        assert!(status.message().contains("belong to it"), "{status:?}");
    }
}
