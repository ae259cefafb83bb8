//! Graceful shutdown of the real agent binary: SIGTERM or SIGINT while a client holds a
//! WatchMounts stream open ends the stream cleanly and the process with exit code 0 within
//! 5 s, also when the agent is PID 1 of its own pid namespace (as in a container).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autofs_api::v1;
use common::{Agent, WAIT};
use nix::sys::signal::Signal;

/// The bound the issue sets on shutdown.
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// Opens a watch (empty snapshot, then silence), signals the agent, and checks that the stream
/// ends with OK and the agent exits 0 within the bound.
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
    let end = tokio::time::timeout(EXIT_BOUND, stream.message())
        .await
        .expect("the stream did not end after the signal");
    // The producer ends the stream on shutdown, so the client sees trailers with status OK.
    assert!(
        matches!(end, Ok(None)),
        "the stream should end cleanly, got {end:?}"
    );
    let status = agent
        .wait_exit(EXIT_BOUND.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after {signal}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = agent.log_text();
    assert!(
        log.contains("shutting down: ending streams") && log.contains(signal.as_str()),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_open_watch_ends_it_cleanly_and_exits_zero_within_5s() {
    signal_ends_open_watch_and_exits_zero(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_an_open_watch_ends_it_cleanly_and_exits_zero_within_5s() {
    signal_ends_open_watch_and_exits_zero(Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_shutdown_beyond_5s() {
    // 20,000 reports cannot fit in flow-control windows: the stream is stuck mid-way when the
    // signal comes, and the agent must give up on it after its grace period.
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
        .wait_exit(EXIT_BOUND)
        .unwrap_or_else(|| panic!("a stalled client kept the agent alive for {EXIT_BOUND:?}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_agent_running_as_pid_1_of_its_own_pid_namespace() {
    // The kernel drops signals sent to a pid-namespace init that has no handler for them, so
    // this passes only because the agent handles SIGTERM itself (from before it says it
    // listens).
    let mut outer = KillOnDrop(
        Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(env!("CARGO_BIN_EXE_autofs-agent"))
            .args([
                "serve",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--node-name",
                "pid1",
            ])
            .env_remove("AUTOFS_AGENT_PROC_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux)"),
    );
    let outer = &mut outer.0;
    let stderr = outer.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let listening = loop {
        match rx.recv_timeout(WAIT) {
            Ok(line) if line.contains("autofs-agent listening") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(listening, "the agent under unshare never said it listens");
    // The agent is unshare's only child; inside its namespace it is pid 1.
    let outer_pid = outer.id();
    let children =
        std::fs::read_to_string(format!("/proc/{outer_pid}/task/{outer_pid}/children")).unwrap();
    let agent_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{status}");

    let signalled = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent_pid), Signal::SIGTERM).unwrap();
    let status = loop {
        if let Some(status) = outer.try_wait().unwrap() {
            break Some(status);
        }
        if signalled.elapsed() > EXIT_BOUND {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status =
        status.unwrap_or_else(|| panic!("the agent as pid 1 ignored SIGTERM for {EXIT_BOUND:?}"));
    // unshare exits with its child's exit code.
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Kills (`--kill-child` then takes the agent along) and reaps the child if a test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
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
        match tokio::time::timeout(EXIT_BOUND, stream.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(status)) => break Err(status),
            Err(_) => panic!("the list did not end within {EXIT_BOUND:?} of SIGTERM"),
        }
    };
    assert!(
        received < 20_000,
        "the list was not cut short ({received} reports)"
    );
    let status = end.expect_err("a truncated list must not end with OK");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let exit = agent.wait_exit(EXIT_BOUND).expect("agent exits");
    assert_eq!(exit.code(), Some(0));
}
