//! A scan that hangs is noticed and does not hold the agent hostage: the real agent over a
//! fixture proc tree whose `mountinfo` files turn into FIFOs nobody writes (the reader blocks
//! in open(), as on a node where a read hangs behind a stuck unmount). Health turns
//! NOT_SERVING, RPCs answer at once from the last good scan (marked stale, with its age) or
//! say UNAVAILABLE when it is too old, SIGTERM still stops the agent, and it recovers when
//! the read returns.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autofs_api::v1::{self, check_migratable_request::Target};
use autofs_testkit::proc_fixture::HungMountinfo;
use autofs_testkit::{MountSpec, Scenario};
use common::{Agent, HANG_GUARD, fixture_proc_root};
use nix::sys::signal::Signal;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// The fixture's mount namespace and its one mount.
/// An agent on `proc_root` whose scans count as stalled after 1 s.
fn stalling_agent(proc_root: &Path, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--scan-stall-timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

const MNT_NS: u64 = 4026531841;
const MOUNT_ID: u32 = 40;

/// ListMounts of the fixture namespace: the reports and the response metadata.
async fn list_with_metadata(
    agent: &Agent,
) -> Result<(Vec<v1::MountReport>, tonic::metadata::MetadataMap), tonic::Status> {
    let mut client = agent.client().await;
    let response = client
        .list_mounts(v1::ListMountsRequest {
            mnt_ns: Some(MNT_NS),
            ..Default::default()
        })
        .await?;
    let metadata = response.metadata().clone();
    let mut stream = response.into_inner();
    let mut reports = Vec::new();
    while let Some(r) = stream.message().await? {
        reports.push(r);
    }
    Ok((reports, metadata))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_proc_read_turns_health_not_serving_and_rpcs_answer_from_the_last_good_scan() {
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let agent = stalling_agent(&proc_root, &[]);
    agent.wait_serving().await;
    let (reports, metadata) = list_with_metadata(&agent).await.unwrap();
    assert_eq!(common::ids(&reports), [MOUNT_ID]);
    assert!(metadata.get("autofs-scan-stale").is_none(), "{metadata:?}");

    let mut hung = HungMountinfo::hang(&proc_root);
    agent
        .wait_health(common::API_SERVICE, ServingStatus::NotServing)
        .await;
    let text = common::scrape(agent.metrics);
    assert_eq!(common::sample(&text, "autofs_scan_stalled"), 1.0, "{text}");
    assert!(
        common::sample(&text, "autofs_scan_stalls_total") >= 1.0,
        "{text}"
    );

    // Answered at once, from the last good scan, and said so.
    let (reports, metadata) = list_with_metadata(&agent).await.unwrap();
    assert_eq!(common::ids(&reports), [MOUNT_ID]);
    assert_eq!(metadata.get("autofs-scan-stale").unwrap(), "true");
    let age: u64 = metadata
        .get("autofs-scan-age-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age >= 1000, "older than the stall bound: {age} ms");
    let check = agent
        .client()
        .await
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(Target::Pid(1234)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(check.stale, "{check:?}");
    assert!(check.scan_age_ms >= 1000, "{check:?}");
    assert_eq!(check.mounts_checked, 1, "{check:?}");
    // Absent from a scan that predates the stall is no proof of absence: not NOT_FOUND.
    let status = agent
        .client()
        .await
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(Target::PodUid(
                "7c0a1e2f-3b4d-4c5e-8f9a-0b1c2d3e4f5a".into(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The handshake reads nothing from /proc itself (the agent's own `self/mountinfo` hangs
    // too): it answers with what the last good scan found. The bound only guards the test.
    let info = tokio::time::timeout(
        HANG_GUARD,
        agent
            .client()
            .await
            .get_node_info(v1::GetNodeInfoRequest::default()),
    )
    .await
    .expect("GetNodeInfo must not wait on a hung /proc read")
    .unwrap()
    .into_inner();
    assert!(!info.view_restricted, "{info:?}");

    // The read returns: scans go on and the agent serves fresh answers again.
    hung.release();
    agent
        .wait_health(common::API_SERVICE, ServingStatus::Serving)
        .await;
    // (The scan that was stuck read an empty file; the next ones read the real one.)
    let metadata = common::eventually("the mount is listed from a fresh scan", || async {
        let (reports, metadata) = list_with_metadata(&agent).await.ok()?;
        (common::ids(&reports) == [MOUNT_ID]).then_some(metadata)
    })
    .await;
    assert!(metadata.get("autofs-scan-stale").is_none(), "{metadata:?}");
    common::eventually("autofs_scan_stalled is 0 again", || async {
        (common::sample(&common::scrape(agent.metrics), "autofs_scan_stalled") == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_proc_read_with_an_old_last_scan_is_unavailable_and_sigterm_still_stops_the_agent() {
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let mut agent = stalling_agent(&proc_root, &["--max-stale-age", "1s"]);
    agent.wait_serving().await;
    let _hung = HungMountinfo::hang(&proc_root);
    agent
        .wait_health(common::API_SERVICE, ServingStatus::NotServing)
        .await;

    // Never a silent hang: the client's own deadline is far away, the answer comes now.
    let mut client = agent.client().await;
    let mut request = tonic::Request::new(v1::ListMountsRequest::default());
    request.set_timeout(Duration::from_secs(600));
    let status = client.list_mounts(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("running for"), "{status:?}");
    let status = client
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(Target::Pid(1234)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The scan thread is still stuck in open(); the agent exits anyway, cleanly.
    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_exit(HANG_GUARD)
        .expect("the agent must exit within the shutdown grace despite a stuck scan");
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
}

/// Hangs the `mountinfo` of every process of `proc_root` but the agent's own (`self`), which
/// it reads once at start: the first scan waits until released.
fn hang_first_scan(proc_root: &Path) -> HungMountinfo {
    let own = std::fs::read_link(proc_root.join("self")).unwrap();
    let tables: Vec<PathBuf> = std::fs::read_dir(proc_root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| {
            let name = dir.file_name().unwrap();
            name.to_str().unwrap().parse::<i32>().is_ok() && name != own.as_os_str()
        })
        .map(|dir| dir.join("mountinfo"))
        .filter(|path| path.is_file())
        .collect();
    HungMountinfo::hang_files(tables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_scan_node_info_says_the_view_is_not_known() {
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    // The first scan waits on the FIFOs of the processes' tables: nothing has been seen when
    // the handshake is asked. (The agent's own `self/mountinfo` stays readable: it reads its
    // own facts once at start.)
    let mut hung = hang_first_scan(&proc_root);
    let agent = stalling_agent(&proc_root, &[]);
    let mut client = agent.client().await;
    let info = client
        .get_node_info(v1::GetNodeInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(info.view_restricted, "{info:?}");
    assert!(
        info.view_problems
            .iter()
            .any(|p| p.contains("no scan has completed yet")),
        "{info:?}"
    );
    assert_eq!(
        info.api_major,
        autofs_api::API_MAJOR,
        "the handshake itself is answered"
    );
    // Nor is a pid the proc root does not list known to be gone: the view that would say
    // whether processes are hidden has not been judged.
    let absent = 999_999;
    let status = client
        .list_mounts(v1::ListMountsRequest {
            pid: Some(absent),
            ..Default::default()
        })
        .await
        .expect_err("no scan, no verdict on a pid");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("it may be there, unseen")
            && status.message().contains("no scan has completed yet"),
        "{status:?}"
    );
    let status = client
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(Target::Pid(absent)),
            ..Default::default()
        })
        .await
        .expect_err("no scan, no verdict on a pid");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Once the first scan is done, the view is the one it judged.
    hung.release();
    agent.wait_serving().await;
    let status = client
        .list_mounts(v1::ListMountsRequest {
            pid: Some(absent),
            ..Default::default()
        })
        .await
        .expect_err("a pid a full view does not list");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let info = client
        .get_node_info(v1::GetNodeInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !info
            .view_problems
            .iter()
            .any(|p| p.contains("no scan has completed yet")),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_asked_for_right_after_start_is_judged_by_the_first_scan_not_the_unknown_view() {
    // An orchestrator asks the moment the agent's port opens; the first scan is still reading.
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let mut hung = hang_first_scan(&proc_root);
    // A stall bound far beyond the test: only the first scan's end decides the answer.
    let agent = Agent::start(&[
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--scan-stall-timeout",
        "1h",
    ]);
    let client = agent.client().await;
    let absent = 999_999;
    let check = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .check_migratable(v1::CheckMigratableRequest {
                    target: Some(Target::Pid(absent)),
                    ..Default::default()
                })
                .await
        }
    });
    let list = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .list_mounts(v1::ListMountsRequest {
                    pid: Some(absent),
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    });
    // Both requests went out on this connection before this one, which the agent answers
    // without a scan.
    common::node_info(&mut client.clone()).await;
    assert!(
        !check.is_finished() && !list.is_finished(),
        "a pid was judged before any scan had looked at /proc"
    );
    hung.release();
    for (what, answer) in [
        ("check", check.await.unwrap().map(|_| ())),
        ("list", list.await.unwrap()),
    ] {
        let status = answer.expect_err("a pid the proc root does not list");
        assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
        assert!(status.message().contains("999999"), "{what}: {status:?}");
    }
}

/// A fake process in a mount namespace of its own, next to real ones in a proc root: its
/// `mountinfo` can be made to hang while the real processes stay real.
const FAKE_PID: i32 = 4_000_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_wait_ends_unavailable_when_the_watchdog_declares_a_stall() {
    // A real INTERIM mount in a real private namespace: the wait for it keeps waiting.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _requester = sc.make_interim(&d, "key", HANG_GUARD).unwrap();
    // A proc root that shows the scenario's real processes (links into /proc) and pid 1,
    // plus one fake process whose mount table can hang.
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir(&proc_root).unwrap();
    let pids: Vec<i32> = std::iter::once(1).chain(sc.processes()).collect();
    assert!(!pids.contains(&FAKE_PID), "{pids:?}");
    for pid in pids {
        std::os::unix::fs::symlink(format!("/proc/{pid}"), proc_root.join(pid.to_string()))
            .unwrap();
    }
    let fake = proc_root.join(FAKE_PID.to_string());
    let (_fixture_dir, fixture) = fixture_proc_root("no_autofs_mounts");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture.join("500"))
        .arg(&fake)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(fake.join("ns/mnt")).unwrap();
    std::os::unix::fs::symlink("mnt:[4026599999]", fake.join("ns/mnt")).unwrap();

    let agent = stalling_agent(&proc_root, &[]);
    agent.wait_serving().await;
    // The client's own deadline is far away: the end must come from the agent.
    let mut request = tonic::Request::new(v1::WaitMigratableRequest {
        target: Some(v1::wait_migratable_request::Target::Pid(sc.init_host_pid())),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(600));
    let mut stream = agent
        .client()
        .await
        .wait_migratable(request)
        .await
        .expect("the wait starts")
        .into_inner();
    let first = tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("the first verdict in time")
        .unwrap()
        .expect("a first verdict");
    assert_eq!(
        first.outcome(),
        v1::wait_migratable_response::Outcome::Waiting,
        "{first:?}"
    );

    let mut hung = HungMountinfo::hang_files(vec![fake.join("mountinfo")]);
    let end = tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("the wait ends once the stall is declared, long before its deadline");
    let status = end.expect_err("a stall is no verdict");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("stalled"), "{status:?}");

    hung.release();
    drop(agent);
    sc.shutdown().unwrap();
}

/// Opens whichever FIFO of `hung` a reader waits on, for writing, without blocking: the reader's
/// open() returns and it then blocks in read() until the returned end is closed. `None` while
/// nobody waits on any of them.
fn hold_blocked_reader(hung: &HungMountinfo) -> Option<std::fs::File> {
    hung.files().iter().find_map(|path| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answers_age_counts_from_its_scans_start_not_its_end() {
    // A scan's facts are only as new as the moment it began reading: a mount made while a long
    // scan ran may be missing from it. So its age, and WaitMigratable's "a final answer comes
    // from a scan newer than the question", count from its start.
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let agent = Agent::start(&[
        "--proc-root",
        proc_root.to_str().unwrap(),
        "--scan-interval",
        "1h",
        "--scan-stall-timeout",
        "1h",
        "--max-scan-age",
        "1ms",
    ]);
    agent.wait_serving().await;
    let mut hung = HungMountinfo::hang(&proc_root);
    // This list asks for a scan of its own, which blocks opening a mountinfo FIFO.
    let mut client = agent.client().await;
    let listing = tokio::spawn(async move {
        let response = client
            .list_mounts(v1::ListMountsRequest {
                mnt_ns: Some(MNT_NS),
                ..Default::default()
            })
            .await
            .unwrap();
        response.metadata().get("autofs-scan-age-ms").cloned()
    });
    let held = common::eventually("the scan waits on a mountinfo FIFO", || {
        let held = hold_blocked_reader(&hung);
        async move { held }
    })
    .await;
    // The scan started before the line above; let a second pass before it may end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hung.release();
    drop(held);
    let age: u64 = listing
        .await
        .unwrap()
        .expect("the list's metadata has the scan's age")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        age >= 1000,
        "the scan ran for more than a second: age {age} ms"
    );
}
