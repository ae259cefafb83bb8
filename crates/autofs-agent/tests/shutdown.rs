//! Graceful shutdown of the real agent binary: SIGTERM or SIGINT while a client holds a
//! WatchMounts stream open ends the stream cleanly and the process with exit code 0, also when
//! the agent is PID 1 of its own pid namespace (as in a container), and a client that never
//! reads does not hold it up.
//!
//! The agent's own timers bound its exit (3 s grace, then 1 s for the runtime); the tests wait
//! up to [`HANG_GUARD`] and print how long it took, so a busy machine cannot fail them by
//! racing the test's clock against the agent's (no timed assertions).

mod common;

use std::time::Instant;

use autofs_api::v1;
use autofs_testkit::agent::AgentBuilder;
use common::{Agent, HANG_GUARD};
use nix::sys::signal::Signal;

/// Opens a watch (empty snapshot, then silence), signals the agent, and checks that the stream
/// ends with OK and the agent exits 0.
async fn signal_ends_open_watch_and_exits_zero(signal: Signal) {
    let mut agent = Agent::start(&[]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let mut stream = client
        .watch_mounts(v1::WatchMountsRequest {
            filter: Some(v1::ListMountsRequest {
                mnt_ns: Some(1),
                ..Default::default()
            }),
        })
        .await
        .expect("the watch opens")
        .into_inner();

    let signalled = Instant::now();
    agent.signal(signal);
    let end = tokio::time::timeout(HANG_GUARD, stream.message())
        .await
        .expect("the stream did not end after the signal");
    // The producer ends the stream on shutdown, so the client sees trailers with status OK.
    assert!(
        matches!(end, Ok(None)),
        "the stream should end cleanly, got {end:?}"
    );
    let status = agent
        .wait_exit(HANG_GUARD)
        .unwrap_or_else(|| panic!("still running {HANG_GUARD:?} after {signal}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    eprintln!("exited {:?} after {signal}", signalled.elapsed());
    let log = agent.log_text();
    assert!(
        log.contains("shutting down: ending streams") && log.contains(signal.as_str()),
        "{log}"
    );
    // The open watch ended with the shutdown, so nothing was left for the grace period.
    assert!(!log.contains("after the grace period"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_open_watch_ends_it_cleanly_and_exits_zero() {
    signal_ends_open_watch_and_exits_zero(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_an_open_watch_ends_it_cleanly_and_exits_zero() {
    signal_ends_open_watch_and_exits_zero(Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_shutdown() {
    // 20,000 reports cannot fit in flow-control windows: the stream is stuck mid-way when the
    // signal comes, and the agent must not wait for the client (at most its grace period).
    let mut agent = Agent::start(&["--synthetic-mounts", "20000"]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let _stalled = client
        .list_mounts(v1::ListMountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let signalled = Instant::now();
    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_exit(HANG_GUARD)
        .unwrap_or_else(|| panic!("a stalled client kept the agent alive for {HANG_GUARD:?}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_agent_running_as_pid_1_of_its_own_pid_namespace() {
    // The kernel drops signals sent to a pid-namespace init that has no handler for them, so
    // this passes only because the agent handles SIGTERM itself (from before it says it
    // listens).
    let mut agent = Agent::from_builder(
        AgentBuilder::new(env!("CARGO_BIN_EXE_autofs-agent"))
            .node_name("pid1")
            .pid_namespace(),
    );
    // The agent is unshare's only child; inside its namespace it is pid 1.
    let nspid = autofs_testkit::procfs::nspid(agent.pid()).unwrap();
    assert_eq!(nspid.last(), Some(&1), "NSpid of the agent: {nspid:?}");

    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_exit(HANG_GUARD)
        .unwrap_or_else(|| panic!("the agent as pid 1 ignored SIGTERM for {HANG_GUARD:?}"));
    // unshare exits with its child's exit code.
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_cut_short_by_sigterm_ends_with_unavailable_never_ok() {
    // 20,000 reports cannot all be buffered: the list is mid-way when the signal comes. A
    // client must not mistake what it got for the complete list.
    let mut agent = Agent::start(&["--synthetic-mounts", "20000"]);
    agent.wait_serving().await;
    let mut client = agent.client().await;
    let mut stream = client
        .list_mounts(v1::ListMountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.expect("first report");
    assert!(first.is_some());
    agent.signal(Signal::SIGTERM);
    let mut received = 1;
    let end = loop {
        match tokio::time::timeout(HANG_GUARD, stream.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(status)) => break Err(status),
            Err(_) => panic!("the list did not end within {HANG_GUARD:?} of SIGTERM"),
        }
    };
    assert!(
        received < 20_000,
        "the list was not cut short ({received} reports)"
    );
    let status = end.expect_err("a truncated list must not end with OK");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let exit = agent.wait_exit(HANG_GUARD).expect("agent exits");
    assert_eq!(exit.code(), Some(0));
}
