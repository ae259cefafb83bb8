//! Nothing unbounded before a peer has authenticated: the real agent, run with a small
//! `RLIMIT_NOFILE`, against peers that connect and then say nothing. More idle peers than the
//! agent has descriptors must neither exhaust them (scans keep working, accept never fails)
//! nor stay connected past the handshake deadline, and a real client is served afterwards.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Agent, HANG_GUARD};

/// The agent's descriptor limit in these tests (soft and hard).
const NOFILE: u64 = 256;
/// Idle peers per test: more than the agent has descriptors.
const IDLE_PEERS: usize = 300;

/// Opens `n` connections to `addr` that never send a byte. The kernel completes the TCP
/// handshake for queued ones too (listen backlog), so all of them connect.
fn idle_peers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, HANG_GUARD)
                .unwrap_or_else(|e| panic!("idle peer {i} to {addr}: {e}"))
        })
        .collect()
}

/// Waits until the agent closes `peer` (EOF or reset); what happened instead, if not.
fn wait_closed(peer: &mut TcpStream) -> Result<(), String> {
    // Generous: the agent closes peers a batch per handshake deadline; the machine is busy.
    peer.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut buf = [0u8; 64];
    match peer.read(&mut buf) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => Err(format!("got {n} bytes instead of being closed")),
        Err(e) => Err(format!("was never closed: {e}")),
    }
}

/// Waits until the agent has closed every one of `peers` (EOF or reset), reading nothing.
fn assert_all_closed_by_the_agent(peers: Vec<TcpStream>) {
    for (i, mut peer) in peers.into_iter().enumerate() {
        wait_closed(&mut peer).unwrap_or_else(|e| panic!("idle peer {i} {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_peers_than_descriptors_are_closed_and_never_starve_scans_or_clients() {
    let agent = Agent::start_with_nofile(&["--handshake-timeout", "1s"], NOFILE);
    agent.wait_serving().await;

    let grpc_peers = idle_peers(agent.grpc, IDLE_PEERS);
    let metrics_peers = idle_peers(agent.metrics, 40);
    assert_all_closed_by_the_agent(grpc_peers);
    assert_all_closed_by_the_agent(metrics_peers);

    // A real client is served, and health never noticed anything.
    let mut client = agent.client().await;
    common::list(&mut client, Default::default())
        .await
        .expect("ListMounts after the flood");
    agent.wait_serving().await;

    // Every idle peer counts as refused for its handshake deadline (just after its close).
    let text = common::eventually("every idle peer is counted as refused", || async {
        let text = common::scrape(agent.metrics);
        let refused = common::sample(
            &text,
            r#"autofs_connections_refused_total{listener="grpc",reason="handshake_timeout"}"#,
        );
        (refused >= IDLE_PEERS as f64).then_some(text)
    })
    .await;
    assert_eq!(
        common::sample(&text, r#"autofs_accept_errors_total{listener="grpc"}"#),
        0.0,
        "the connection cap keeps accept() clear of EMFILE:\n{text}"
    );
    assert_eq!(
        common::sample(&text, r#"autofs_accept_errors_total{listener="metrics"}"#),
        0.0,
        "{text}"
    );
    assert_eq!(
        common::sample(&text, "autofs_scan_errors_total"),
        0.0,
        "scans kept their descriptors during the flood:\n{text}"
    );
    let warnings = agent.log_lines_with("\"WARN\"");
    assert!(
        warnings < 5,
        "the flood must not flood the log:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_http2_is_closed_at_once() {
    use std::io::Write;
    let agent = Agent::start(&["--handshake-timeout", "1m"]);
    agent.wait_serving().await;
    let mut peer = TcpStream::connect_timeout(&agent.grpc, HANG_GUARD).unwrap();
    peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Closed without waiting for the (one minute) deadline.
    assert_all_closed_by_the_agent(vec![peer]);
    common::eventually("the peer is counted as not HTTP/2", || async {
        let text = common::scrape(agent.metrics);
        let series = r#"autofs_connections_refused_total{listener="grpc",reason="not_http2"}"#;
        (common::sample(&text, series) == 1.0).then_some(())
    })
    .await;
}

/// Sets the soft descriptor limit of a running process (the hard one stays [`NOFILE`]).
fn set_nofile(pid: i32, n: u64) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{NOFILE}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --pid {pid} --nofile={n}");
}

/// Descriptors `pid` has open.
fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_failing_with_emfile_backs_off_logs_little_and_recovers() {
    let agent = Agent::start_with_nofile(&["--handshake-timeout", "1m"], NOFILE);
    agent.wait_serving().await;
    // Whatever happens to the descriptors from outside (here: the limit drops under what is
    // open), accept() fails with EMFILE. Peers keep knocking meanwhile.
    let open = open_fds(agent.pid());
    set_nofile(agent.pid(), open);
    let knocking = idle_peers(agent.grpc, 20);
    // While they wait, the agent tries again now and then, not in a loop: a few seconds of
    // EMFILE are a handful of attempts (its backoff doubles up to 1 s), never thousands.
    std::thread::sleep(Duration::from_secs(3));
    set_nofile(agent.pid(), NOFILE);
    assert_all_closed_by_the_agent_or_served(knocking);

    let text = common::scrape(agent.metrics);
    let errors = common::sample(&text, r#"autofs_accept_errors_total{listener="grpc"}"#);
    assert!(errors >= 1.0, "accept() must have failed:\n{text}");
    assert!(
        errors < 50.0,
        "accept() must back off, not spin: {errors} failures\n{text}"
    );
    let logged = agent.log_lines_with("accept failed");
    assert!(
        logged <= 2,
        "one warning per 10 s at most:\n{}",
        agent.log_text()
    );
    // And a real client is served again.
    let mut client = agent.client().await;
    common::node_info(&mut client).await;
}

/// The knocking peers get in once accept() works again (then closed at the deadline or
/// with the agent); they must not be left hanging by a listener that gave up.
fn assert_all_closed_by_the_agent_or_served(peers: Vec<TcpStream>) {
    use std::io::Write;
    for (i, mut peer) in peers.into_iter().enumerate() {
        // Not HTTP/2: once accepted, the agent closes it at once.
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        wait_closed(&mut peer).unwrap_or_else(|e| panic!("knocking peer {i} {e}"));
    }
}
