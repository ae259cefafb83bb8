//! End-to-end tests of every RPC of `autofs.v1.AutofsInspector`: the real `autofs-agent`
//! binary over real autofs mounts (autofs-testkit scenarios), called through a real tonic
//! client. Needs root and autofs; fails, never skips, without them.

mod common;

use autofs_api::v1::{
    self, MountState, autofs_inspector_client::AutofsInspectorClient,
    check_migratable_request::Target,
};
use autofs_testkit::cgroup::ContainerCgroup;
use autofs_testkit::{MountSpec, Scenario};
use common::{
    Agent, HANG_GUARD, assert_status, eventually, ids, list, list_ns, pid_that_does_not_exist,
    state,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

fn list_request() -> v1::ListMountsRequest {
    v1::ListMountsRequest::default()
}

fn check_pid(pid: i32) -> v1::CheckMigratableRequest {
    v1::CheckMigratableRequest {
        target: Some(Target::Pid(pid)),
        ..Default::default()
    }
}

/// CheckMigratable of the workload of host pid `pid`; panics on an error status.
async fn check(
    client: &mut AutofsInspectorClient<Channel>,
    pid: i32,
) -> v1::CheckMigratableResponse {
    client
        .check_migratable(check_pid(pid))
        .await
        .unwrap_or_else(|s| panic!("CheckMigratable of pid {pid}: {s:?}"))
        .into_inner()
}

/// Asks CheckMigratable of `pid` (a new call each time, errors ignored) until the answer
/// satisfies `pred`; that answer. Panics naming `what` after [`common::HANG_GUARD`].
async fn check_until(
    client: &AutofsInspectorClient<Channel>,
    pid: i32,
    what: &str,
    pred: impl Fn(&v1::CheckMigratableResponse) -> bool,
) -> v1::CheckMigratableResponse {
    let pred = &pred;
    eventually(what, || {
        let mut client = client.clone();
        async move {
            let a = client
                .check_migratable(check_pid(pid))
                .await
                .ok()?
                .into_inner();
            pred(&a).then_some(a)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_mounts_reports_each_state_and_filters_by_pid_namespace_and_state() {
    let mut sc = Scenario::start_or_panic();
    let active = sc.mount(MountSpec::indirect().timeout(30)).unwrap();
    let interim = sc.mount(MountSpec::indirect()).unwrap();
    let catatonic = sc.mount(MountSpec::indirect()).unwrap();
    let orphaned = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&interim, "key", HANG_GUARD).unwrap();
    sc.make_catatonic(&catatonic, HANG_GUARD).unwrap();
    sc.exit_daemon(&orphaned).unwrap(); // no lookup since: hidden catatonic, ORPHANED
    let all_ids = {
        let mut v = vec![
            active.mount_id,
            interim.mount_id,
            catatonic.mount_id,
            orphaned.mount_id,
        ];
        v.sort_unstable();
        v
    };

    let agent = Agent::start(&[]);
    let mut client = agent.client().await;

    // No filter: every mount of the node, ours among them.
    let everything = list(&mut client, list_request()).await.unwrap();
    let ours: Vec<_> = everything
        .iter()
        .filter(|r| r.mnt_ns == sc.mnt_ns())
        .cloned()
        .collect();
    assert_eq!(ids(&ours), all_ids, "{ours:#?}");
    for r in &ours {
        assert_eq!(r.node, agent.node);
        assert_eq!(r.owner_pid, sc.init_host_pid());
    }
    let by_id = |id: u32| ours.iter().find(|r| r.mount_id == id).unwrap();
    let a = by_id(active.mount_id);
    assert_eq!(state(a), MountState::Active, "{a:#?}");
    assert_eq!(a.reason, v1::Reason::MasterHoldsPipe as i32);
    assert!(a.dumpable);
    assert_eq!(a.mount_point, active.mount_point.to_str().unwrap());
    assert_eq!(a.pipe_ino, active.pipe_ino);
    assert_eq!(a.host_pgrp, active.host_pgrp);
    assert_eq!(a.read_end_pid, active.host_pid);
    assert_eq!(a.timeout, 30);
    let entry = a.entry.as_ref().unwrap();
    assert_eq!(entry.pgrp, active.vpgrp, "pgrp as CRIU would dump it");
    assert_eq!(
        (entry.fd, entry.mode, entry.timeout),
        (active.write_fd, 1, 30)
    );
    let i = by_id(interim.mount_id);
    assert_eq!(state(i), MountState::Interim, "{i:#?}");
    assert_eq!((i.pending_bytes, i.pending_packets), (304, 1));
    assert!(!i.dumpable);
    let c = by_id(catatonic.mount_id);
    assert_eq!(state(c), MountState::Catatonic, "{c:#?}");
    assert_eq!(c.entry.as_ref().unwrap().fd, -1);
    let o = by_id(orphaned.mount_id);
    assert_eq!(state(o), MountState::Orphaned, "{o:#?}");
    assert_eq!(o.reason, v1::Reason::HiddenCatatonic as i32);

    // pid → its mount namespace: the scenario's init, or any process in it.
    for pid in [sc.init_host_pid(), active.host_pid] {
        let reports = list(
            &mut client,
            v1::ListMountsRequest {
                pid: Some(pid),
                ..list_request()
            },
        )
        .await
        .unwrap();
        assert_eq!(ids(&reports), all_ids, "pid {pid}");
        assert!(reports.iter().all(|r| r.mnt_ns == sc.mnt_ns()));
    }
    // The same namespace asked by inode, and by both (consistent).
    assert_eq!(ids(&list_ns(&mut client, sc.mnt_ns()).await), all_ids);
    let both = list(
        &mut client,
        v1::ListMountsRequest {
            pid: Some(sc.init_host_pid()),
            mnt_ns: Some(sc.mnt_ns()),
            ..list_request()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&both), all_ids);
    // A namespace nobody has: nothing, not an error.
    assert!(list_ns(&mut client, 1).await.is_empty());

    // States, combined with the namespace.
    let in_states = |states: &[MountState]| v1::ListMountsRequest {
        mnt_ns: Some(sc.mnt_ns()),
        states: states.iter().map(|s| *s as i32).collect(),
        ..list_request()
    };
    let only = list(&mut client, in_states(&[MountState::Interim]))
        .await
        .unwrap();
    assert_eq!(ids(&only), [interim.mount_id]);
    let dumpable = list(
        &mut client,
        in_states(&[MountState::Active, MountState::Catatonic]),
    )
    .await
    .unwrap();
    let mut want = vec![active.mount_id, catatonic.mount_id];
    want.sort_unstable();
    assert_eq!(ids(&dumpable), want);
    assert_eq!(
        ids(&list(&mut client, in_states(&[MountState::Orphaned]))
            .await
            .unwrap()),
        [orphaned.mount_id]
    );
    assert!(
        list(&mut client, in_states(&[MountState::Unsupported]))
            .await
            .unwrap()
            .is_empty()
    );

    // Container and pod filters: the scenario is in no container, so well-formed ids of
    // nobody match nothing.
    for (container_id, pod_uid) in [
        ("0123456789abcdef", ""),
        ("", "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a"),
    ] {
        let reports = list(
            &mut client,
            v1::ListMountsRequest {
                container_id: container_id.into(),
                pod_uid: pod_uid.into(),
                ..list_request()
            },
        )
        .await
        .unwrap();
        assert!(reports.is_empty(), "{reports:#?}");
    }

    // A pid in another namespace than the requested one is a contradiction.
    assert_status(
        list(
            &mut client,
            v1::ListMountsRequest {
                pid: Some(sc.init_host_pid()),
                mnt_ns: Some(1),
                ..list_request()
            },
        )
        .await,
        Code::InvalidArgument,
        "mnt_ns",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_mounts_rejects_invalid_filters_naming_the_field() {
    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let cases: Vec<(v1::ListMountsRequest, Code, &str)> = vec![
        (
            v1::ListMountsRequest {
                pid: Some(0),
                ..list_request()
            },
            Code::InvalidArgument,
            "pid",
        ),
        (
            v1::ListMountsRequest {
                pid: Some(-7),
                ..list_request()
            },
            Code::InvalidArgument,
            "pid",
        ),
        (
            v1::ListMountsRequest {
                pid: Some(pid_that_does_not_exist()),
                ..list_request()
            },
            Code::NotFound,
            "pid",
        ),
        (
            v1::ListMountsRequest {
                states: vec![MountState::Active as i32, 42],
                ..list_request()
            },
            Code::InvalidArgument,
            "states[1]",
        ),
        (
            v1::ListMountsRequest {
                states: vec![MountState::Unspecified as i32],
                ..list_request()
            },
            Code::InvalidArgument,
            "states[0]",
        ),
        (
            v1::ListMountsRequest {
                container_id: "../../etc".into(),
                ..list_request()
            },
            Code::InvalidArgument,
            "container_id",
        ),
        (
            v1::ListMountsRequest {
                container_id: "ABCDEF".into(),
                ..list_request()
            },
            Code::InvalidArgument,
            "container_id",
        ),
        (
            v1::ListMountsRequest {
                container_id: "a".repeat(65),
                ..list_request()
            },
            Code::InvalidArgument,
            "container_id",
        ),
        (
            v1::ListMountsRequest {
                pod_uid: "not-a-uid".into(),
                ..list_request()
            },
            Code::InvalidArgument,
            "pod_uid",
        ),
    ];
    for (request, code, field) in cases {
        let what = format!("{request:?}");
        let result = list(&mut client, request).await;
        assert!(result.is_err(), "{what} was accepted");
        assert_status(result, code, field);
    }
    // The same validation guards WatchMounts.
    let watch = client
        .watch_mounts(v1::WatchMountsRequest {
            filter: Some(v1::ListMountsRequest {
                states: vec![42],
                ..list_request()
            }),
        })
        .await
        .map(drop);
    assert_status(watch, Code::InvalidArgument, "states[0]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_and_pod_filters_follow_the_cgroup_of_the_namespace_owner() {
    let mut sc = Scenario::start_or_panic();
    let cgroup = ContainerCgroup::enter(sc.init_host_pid());
    let active = sc.mount(MountSpec::indirect()).unwrap();
    let interim = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&interim, "key", HANG_GUARD).unwrap();
    let mut want = vec![active.mount_id, interim.mount_id];
    want.sort_unstable();

    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let reports = list_ns(&mut client, sc.mnt_ns()).await;
    assert_eq!(ids(&reports), want);
    for r in &reports {
        assert_eq!(r.container_id, cgroup.container_id, "{r:#?}");
        assert_eq!(r.pod_uid, cgroup.pod_uid, "{r:#?}");
    }

    // Full id, unique prefix, and pod: the same mounts.
    for (container_id, pod_uid) in [
        (cgroup.container_id.clone(), String::new()),
        (cgroup.container_id[..12].to_owned(), String::new()),
        (String::new(), cgroup.pod_uid.clone()),
        (cgroup.container_id.clone(), cgroup.pod_uid.clone()),
    ] {
        let got = list(
            &mut client,
            v1::ListMountsRequest {
                container_id: container_id.clone(),
                pod_uid: pod_uid.clone(),
                ..list_request()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            ids(&got),
            want,
            "container {container_id:?} pod {pod_uid:?}"
        );
    }

    // CheckMigratable by container and by pod: the INTERIM mount blocks.
    for target in [
        Target::ContainerId(cgroup.container_id.clone()),
        Target::ContainerId(cgroup.container_id[..12].to_owned()),
        Target::PodUid(cgroup.pod_uid.clone()),
    ] {
        let answer = client
            .check_migratable(v1::CheckMigratableRequest {
                target: Some(target.clone()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("{target:?}: {s:?}"))
            .into_inner();
        assert!(!answer.dumpable, "{target:?}");
        assert_eq!(answer.mounts_checked, 2, "{target:?}");
        assert_eq!(ids(&answer.blocking), [interim.mount_id], "{target:?}");
        // The agent's defaults: --queue-poll-interval 500ms, --max-scan-age 1s.
        assert_eq!(answer.retry_after_ms, 1000, "{target:?}");
    }
    drop(sc);
    drop(cgroup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_node_info_answers_the_version_handshake() {
    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let info = common::node_info(&mut client).await;
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.api_major, 1);
    assert_eq!(info.node, agent.node);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info.kernel_release, release.trim(), "uname -r");
    assert!(info.pipe_ino_supported, "kernel {release} shows pipe_ino");
    assert!(info.can_read_fds, "the tests run as root");
    assert_eq!(info.scan_interval_ms, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_migratable_is_dumpable_with_only_active_and_catatonic_mounts() {
    let mut sc = Scenario::start_or_panic();
    let active = sc.mount(MountSpec::indirect()).unwrap();
    let catatonic = sc.mount(MountSpec::direct()).unwrap();
    sc.make_catatonic(&catatonic, HANG_GUARD).unwrap();

    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    // Any process of the workload names it: the init or the daemon.
    for pid in [sc.init_host_pid(), active.host_pid] {
        let answer = check(&mut client, pid).await;
        assert!(answer.dumpable, "pid {pid}: {answer:#?}");
        assert!(answer.blocking.is_empty());
        assert_eq!(answer.mounts_checked, 2);
        assert_eq!(answer.retry_after_ms, 0);
        assert_eq!(answer.node, agent.node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_migratable_blocks_on_an_interim_mount_with_a_retry_hint_until_it_is_answered() {
    let mut sc = Scenario::start_or_panic();
    let _active = sc.mount(MountSpec::indirect()).unwrap();
    let interim = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&interim, "key", HANG_GUARD).unwrap();

    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let answer = check(&mut client, sc.init_host_pid()).await;
    assert!(!answer.dumpable, "{answer:#?}");
    assert_eq!(answer.mounts_checked, 2);
    assert_eq!(ids(&answer.blocking), [interim.mount_id]);
    let blocking = &answer.blocking[0];
    assert_eq!(state(blocking), MountState::Interim);
    assert!(
        blocking.message.contains("is not empty. Try again later."),
        "{}",
        blocking.message
    );
    assert_eq!(answer.retry_after_ms, 1000, "{answer:#?}");

    // The daemon reads the request (the agent consumed nothing): dumpable again, once a
    // fresh enough scan sees it.
    assert_eq!(sc.read_packet(&interim).unwrap().name, b"key");
    let answer = check_until(
        &client,
        sc.init_host_pid(),
        "the answered mount stops blocking",
        |a| a.dumpable,
    )
    .await;
    assert_eq!(answer.retry_after_ms, 0);
    assert!(answer.blocking.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_migratable_blocks_on_an_orphaned_mount_without_a_retry_hint() {
    let mut sc = Scenario::start_or_panic();
    let orphaned = sc.mount(MountSpec::indirect()).unwrap();
    let delegate = sc.delegate(&orphaned).unwrap();
    let interim = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&interim, "key", HANG_GUARD).unwrap();

    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let answer = check(&mut client, sc.init_host_pid()).await;
    assert!(!answer.dumpable, "{answer:#?}");
    let mut want = vec![orphaned.mount_id, interim.mount_id];
    want.sort_unstable();
    assert_eq!(
        ids(&answer.blocking),
        want,
        "every blocking mount is listed"
    );
    let o = answer
        .blocking
        .iter()
        .find(|r| r.mount_id == orphaned.mount_id)
        .unwrap();
    assert_eq!(state(o), MountState::Orphaned);
    assert_eq!(o.reason, v1::Reason::ReadEndDelegated as i32);
    assert_eq!(o.read_end_pid, delegate.host_pid);
    assert_eq!(
        answer.retry_after_ms, 0,
        "waiting does not fix an orphaned mount, even next to an interim one"
    );

    // Only the orphaned one left: still no hint.
    sc.read_packet(&interim).unwrap();
    let answer = check_until(
        &client,
        sc.init_host_pid(),
        "only the orphaned mount blocks",
        |a| a.blocking.len() == 1,
    )
    .await;
    assert!(!answer.dumpable);
    assert_eq!(answer.blocking[0].mount_id, orphaned.mount_id);
    assert_eq!(answer.retry_after_ms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_migratable_rejects_bad_targets_and_does_not_find_unknown_ones() {
    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let check = |target: Option<Target>| {
        let mut client = client.clone();
        async move {
            client
                .check_migratable(v1::CheckMigratableRequest {
                    target,
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    assert_status(check(None).await, Code::InvalidArgument, "target");
    assert_status(
        check(Some(Target::Pid(0))).await,
        Code::InvalidArgument,
        "pid",
    );
    assert_status(
        check(Some(Target::Pid(-1))).await,
        Code::InvalidArgument,
        "pid",
    );
    assert_status(
        check(Some(Target::Pid(i32::MIN))).await,
        Code::InvalidArgument,
        "pid",
    );
    for bad in ["../../etc", "", "XYZ", &"f".repeat(65)] {
        assert_status(
            check(Some(Target::ContainerId(bad.into()))).await,
            Code::InvalidArgument,
            "container_id",
        );
    }
    for bad in ["", "7c0a1e2f", "../../../etc/passwd"] {
        assert_status(
            check(Some(Target::PodUid(bad.into()))).await,
            Code::InvalidArgument,
            "pod_uid",
        );
    }
    let missing = pid_that_does_not_exist();
    assert_status(
        check(Some(Target::Pid(missing))).await,
        Code::NotFound,
        &missing.to_string(),
    );
    assert_status(
        check(Some(Target::ContainerId("0123456789abcdef".into()))).await,
        Code::NotFound,
        "0123456789abcdef",
    );
    assert_status(
        check(Some(Target::PodUid(
            "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a".into(),
        )))
        .await,
        Code::NotFound,
        "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a",
    );
    // Still serving after all that.
    common::node_info(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_migratable_for_a_process_the_agent_may_not_read_is_permission_denied() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    // Root without CAP_SYS_PTRACE may not read the namespaces of a full-capability daemon.
    let agent = Agent::start_wrapped(
        &[
            "setpriv",
            "--inh-caps=-sys_ptrace",
            "--bounding-set=-sys_ptrace",
            "--",
        ],
        &[],
    );
    // Scans run ("" serves) but the inspector service does not: the view is restricted.
    agent.wait_health("", ServingStatus::Serving).await;
    agent
        .wait_health("autofs.v1.AutofsInspector", ServingStatus::NotServing)
        .await;
    let mut client = agent.client().await;
    let status = client
        .check_migratable(check_pid(d.host_pid))
        .await
        .expect_err("the daemon's namespace cannot be read");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(&format!("/proc/{}/ns/mnt", d.host_pid)),
        "{message}"
    );
    assert!(message.contains("CAP_SYS_PTRACE"), "{message}");
    // The view is restricted, and the agent says so.
    let info = common::node_info(&mut client).await;
    assert!(info.view_restricted, "{info:?}");
    assert!(
        info.view_problems
            .iter()
            .any(|p| p.contains("lacks CAP_SYS_PTRACE")),
        "{info:?}"
    );
    assert!(!info.can_read_fds, "{info:?}");
}
