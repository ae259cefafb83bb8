//! End-to-end tests of WaitMigratable, the gate a migration controller blocks on right before
//! it checkpoints: the real agent binary, real autofs mounts, a real daemon that answers late
//! or never, asserting outcomes and statuses (never timings).

mod common;

use std::time::{Duration, Instant};

use autofs_api::v1::{self, MountState, wait_migratable_response::Outcome};
use autofs_testkit::{Answer, MountSpec, Scenario};
use common::{Agent, HANG_GUARD};
use tonic::{Code, Request, Streaming};

fn wait_pid(pid: i32) -> v1::WaitMigratableRequest {
    v1::WaitMigratableRequest {
        target: Some(v1::wait_migratable_request::Target::Pid(pid)),
        ..Default::default()
    }
}

async fn open(
    agent: &Agent,
    request: Request<v1::WaitMigratableRequest>,
) -> Streaming<v1::WaitMigratableResponse> {
    agent
        .client()
        .await
        .wait_migratable(request)
        .await
        .expect("the wait starts")
        .into_inner()
}

/// The next message, or the status that ended the stream (`None` for a clean end).
async fn next(
    stream: &mut Streaming<v1::WaitMigratableResponse>,
) -> Result<Option<v1::WaitMigratableResponse>, tonic::Status> {
    tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("the agent answered in time")
}

fn outcome(r: &v1::WaitMigratableResponse) -> Outcome {
    Outcome::try_from(r.outcome).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_left_asleep_by_its_daemon_holds_the_wait_until_it_is_gone() {
    // The daemon read the request and never answers: the mount is ACTIVE and its pipe empty,
    // but the requester sleeps in autofs_wait in the dumped tree. Its end changes no mount and
    // no pipe (no scan runs: --scan-interval 1h), yet the wait sees it within a queue poll.
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let req = sc.make_interim(&d, "held", HANG_GUARD).unwrap();
    sc.read_packet_with(&d.name, Answer::None, HANG_GUARD)
        .unwrap();
    let agent = Agent::start(&["--scan-interval", "1h"]);
    let mut stream = open(&agent, Request::new(wait_pid(sc.init_host_pid()))).await;
    let first = next(&mut stream).await.unwrap().expect("a first message");
    assert_eq!(outcome(&first), Outcome::Waiting, "{first:#?}");
    assert!(!first.dumpable && first.blocking.is_empty(), "{first:#?}");
    let tasks: Vec<_> = first
        .blocking_tasks
        .iter()
        .map(|t| (t.pid, t.reason()))
        .collect();
    assert_eq!(
        tasks,
        [(req.host_pid, v1::TaskReason::RequesterWaiting)],
        "{first:#?}"
    );
    assert!(
        first
            .message
            .contains("1 task(s) of the tree CRIU dumps asleep"),
        "{first:#?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(req.host_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let last = loop {
        let message = next(&mut stream).await.unwrap().expect("a last message");
        if outcome(&message) != Outcome::Waiting {
            break message;
        }
    };
    assert_eq!(outcome(&last), Outcome::Dumpable, "{last:#?}");
    assert!(last.dumpable && last.blocking_tasks.is_empty(), "{last:#?}");
    assert!(
        next(&mut stream).await.unwrap().is_none(),
        "the stream ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_ends_dumpable_once_the_daemon_answers_and_nothing_is_consumed() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&d, "late", HANG_GUARD).unwrap();
    // No background scan after the first: the drain is seen by change detection alone.
    let agent = Agent::start(&["--scan-interval", "1h"]);
    let mut stream = open(&agent, Request::new(wait_pid(sc.init_host_pid()))).await;

    // The verdict now: INTERIM blocks, the wait goes on.
    let first = next(&mut stream).await.unwrap().expect("a first message");
    assert_eq!(first.sequence, 1);
    assert_eq!(outcome(&first), Outcome::Waiting, "{first:#?}");
    assert!(!first.dumpable);
    assert_eq!(first.blocking.len(), 1);
    assert_eq!(first.blocking[0].mount_id, d.mount_id);
    assert_eq!(first.blocking[0].state, MountState::Interim as i32);
    assert_eq!(first.blocking[0].pending_packets, 1);
    assert_eq!(first.node, agent.node);

    // The daemon answers: it still gets the exact request (the agent consumed nothing).
    let packet = sc
        .read_packet_with(&d.name, Answer::Ready, HANG_GUARD)
        .unwrap();
    assert_eq!(packet.name, b"late");
    let answered = Instant::now();
    let last = loop {
        let message = next(&mut stream).await.unwrap().expect("a last message");
        if outcome(&message) != Outcome::Waiting {
            break message;
        }
    };
    eprintln!("drain-to-dumpable latency: {:?}", answered.elapsed());
    assert_eq!(outcome(&last), Outcome::Dumpable, "{last:#?}");
    assert!(last.dumpable && last.blocking.is_empty());
    assert_eq!(last.mounts_checked, 1);
    // The stream ends cleanly after the final message.
    assert!(next(&mut stream).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_shared_by_two_mounts_of_one_superblock_is_one_queued_request() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let bind_point = sc.work_dir().join("bind");
    let bind = sc.bind_root(&d, &bind_point).unwrap();
    let _blocked = sc.make_interim(&d, "shared", HANG_GUARD).unwrap();
    let agent = Agent::start(&[]);
    let mut stream = open(&agent, Request::new(wait_pid(sc.init_host_pid()))).await;
    let first = next(&mut stream).await.unwrap().expect("a first message");
    assert_eq!(outcome(&first), Outcome::Waiting, "{first:#?}");
    // Both mounts show the pipe's one request, and both block.
    let mut ids: Vec<u32> = first.blocking.iter().map(|r| r.mount_id).collect();
    ids.sort_unstable();
    let mut want = vec![d.mount_id, bind];
    want.sort_unstable();
    assert_eq!(ids, want, "{first:#?}");
    for r in &first.blocking {
        assert_eq!(r.state, MountState::Interim as i32, "{r:#?}");
        assert_eq!(r.pending_packets, 1, "{r:#?}");
    }
    // Its requester, in the tree CRIU dumps, sleeps until the daemon answers.
    assert_eq!(
        first.message,
        "waiting: 2 mount(s) INTERIM with 1 queued request(s) the daemon has not read yet; 1 task(s) of the tree CRIU dumps asleep until their daemon answers a request"
    );
    drop(stream);
    // Nothing was consumed: the daemon still gets its request.
    let packet = sc
        .read_packet_with(&d.name, Answer::Ready, HANG_GUARD)
        .unwrap();
    assert_eq!(packet.name, b"shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_never_answers_ends_the_wait_at_the_deadline_with_its_blocker() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&d, "never", HANG_GUARD).unwrap();
    let agent = Agent::start(&[]);
    // The deadline covers the wait's setup, which waits for the agent's first scan: the agent
    // says it listens before that scan, and on a busy machine the scan can take the 2 s.
    agent.wait_serving().await;
    let mut request = Request::new(wait_pid(sc.init_host_pid()));
    request.set_timeout(Duration::from_secs(2));
    let mut stream = open(&agent, request).await;
    let mut last = None;
    let status = loop {
        match next(&mut stream).await {
            Ok(Some(message)) => last = Some(message),
            Ok(None) => panic!("the wait ended without a status; last {last:#?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let last = last.expect("the verdict was sent before the deadline");
    assert_eq!(outcome(&last), Outcome::Waiting);
    assert_eq!(last.blocking.len(), 1);
    assert_eq!(last.blocking[0].state, MountState::Interim as i32);
    // The request is still queued for the daemon.
    assert_eq!(sc.queued_bytes(&d).unwrap(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_mount_ends_the_wait_at_once_because_waiting_will_not_help() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    sc.close_read(&d).unwrap();
    let agent = Agent::start(&[]);
    let mut request = Request::new(wait_pid(sc.init_host_pid()));
    // A deadline far away: the answer must not wait for it.
    request.set_timeout(Duration::from_secs(3600));
    let mut stream = open(&agent, request).await;
    let only = next(&mut stream).await.unwrap().expect("one message");
    assert_eq!(outcome(&only), Outcome::WillNotClear, "{only:#?}");
    assert!(!only.dumpable);
    assert_eq!(only.blocking[0].state, MountState::Orphaned as i32);
    assert!(
        only.message.starts_with("waiting will not help"),
        "{}",
        only.message
    );
    assert!(next(&mut stream).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dumpable_workload_is_answered_with_one_final_message() {
    let mut sc = Scenario::start_or_panic();
    sc.mount(MountSpec::indirect()).unwrap();
    let agent = Agent::start(&[]);
    let mut stream = open(&agent, Request::new(wait_pid(sc.init_host_pid()))).await;
    let only = next(&mut stream).await.unwrap().expect("one message");
    assert_eq!(outcome(&only), Outcome::Dumpable, "{only:#?}");
    assert!(only.dumpable);
    assert!(next(&mut stream).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_are_refused_before_any_wait() {
    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    for (request, code) in [
        (
            v1::WaitMigratableRequest {
                target: None,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (wait_pid(0), Code::InvalidArgument),
        (wait_pid(common::pid_that_does_not_exist()), Code::NotFound),
        (
            v1::WaitMigratableRequest {
                target: Some(v1::wait_migratable_request::Target::ContainerId(
                    "xyz".into(),
                )),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ] {
        let status = client
            .wait_migratable(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_frees_its_stream_slot() {
    let mut sc = Scenario::start_or_panic();
    let d = sc.mount(MountSpec::indirect()).unwrap();
    let _blocked = sc.make_interim(&d, "held", HANG_GUARD).unwrap();
    // Waits have a budget of their own, sized like the watches'.
    let agent = Agent::start(&["--max-watches", "1"]);
    let mut first = open(&agent, Request::new(wait_pid(sc.init_host_pid()))).await;
    assert_eq!(
        outcome(&next(&mut first).await.unwrap().unwrap()),
        Outcome::Waiting
    );
    // The one slot is taken...
    let refused = agent
        .client()
        .await
        .wait_migratable(wait_pid(sc.init_host_pid()))
        .await
        .expect_err("no slot left");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // ...until the waiter goes away.
    drop(first);
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match agent
            .client()
            .await
            .wait_migratable(wait_pid(sc.init_host_pid()))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
