//! The controller is exact about why a node failed and bounded in memory, against adversaries
//! made for each cause: black holes (SYNs dropped; a peer that accepts and never speaks) with
//! the connect timeout equal to the deadline, nodes queued behind the concurrency limit until
//! the deadline, a peer that resets connections right after accept, and agents that flood the
//! controller with reports. Races are run many times in a loop; the assertions are about the
//! outcome, never about how long it took.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autofs_api::v1;
use autofs_controller::{CollectorConfig, NodeErrorKind};
use common::fake_agent::{FakeAgent, Mounts, collector};
use tokio::io::AsyncReadExt;

/// Rounds of each race.
const ROUNDS: usize = 15;

/// Serves a fake agent `node` that lists `mounts` reports (`None`: without end), for the
/// life of the runtime.
async fn serve(node: &str, mounts: Option<usize>) -> SocketAddr {
    let name = node.to_owned();
    let report = move |i: usize| {
        Ok(v1::MountReport {
            node: name.clone(),
            mount_id: u32::try_from(i % 1_000_000).unwrap(),
            mount_point: format!("/flood/{i:09}"),
            state: v1::MountState::Active as i32,
            dumpable: true,
            ..Default::default()
        })
    };
    FakeAgent::new(node)
        .listing(move || -> Mounts {
            let report = report.clone();
            match mounts {
                Some(n) => Box::pin(tokio_stream::iter((0..n).map(report))),
                None => Box::pin(tokio_stream::iter((0..).map(report))),
            }
        })
        .serve()
        .await
}

/// A loopback address whose SYNs are dropped: a listener with a full accept queue (Linux
/// drops a SYN when the queue is full), kept alive with the connections that filled it.
struct SynBlackHole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl SynBlackHole {
    fn new() -> SynBlackHole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        // Fill the queue until a connect no longer completes.
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            queued.push(s);
            assert!(queued.len() < 16, "the accept queue never filled");
        }
        SynBlackHole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A peer that accepts connections and never says a byte.
async fn silent_peer() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A peer that resets the first `resets` connections as soon as the request arrives, and
/// forwards the later ones to `backend`.
async fn resetting_peer(resets: usize, backend: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            if seen.fetch_add(1, Ordering::SeqCst) < resets {
                tokio::spawn(async move {
                    // The preface and the first request, then a reset (SO_LINGER 0).
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let s = s.into_std().unwrap();
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(s);
                });
            } else {
                tokio::spawn(async move {
                    let mut up = tokio::net::TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                });
            }
        }
    });
    addr
}

fn equal_timeouts(d: Duration) -> CollectorConfig {
    CollectorConfig {
        timeout: d,
        connect_timeout: d,
        ..CollectorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holes_with_the_connect_timeout_equal_to_the_deadline_have_no_answer_within_it() {
    let hole = SynBlackHole::new();
    let silent = silent_peer().await;
    let d = Duration::from_millis(300);
    for round in 0..ROUNDS {
        let report = collector(&[hole.addr, silent], equal_timeouts(d))
            .collect(Default::default())
            .await;
        for node in &report.nodes {
            let error = node.result.as_ref().unwrap_err();
            assert!(
                matches!(error.kind, NodeErrorKind::DeadlineExceeded { timeout, .. } if timeout == d),
                "round {round}: {error}"
            );
            assert!(
                error.to_string().contains("no answer within 300ms"),
                "round {round}: {error}"
            );
        }
    }
}

#[test]
fn cli_black_hole_with_equal_timeouts_says_no_answer_within_the_deadline() {
    let hole = SynBlackHole::new();
    let addr = hole.addr.to_string();
    let out = common::controller(&[
        "nodes",
        "--nodes",
        &addr,
        "--timeout",
        "1s",
        "--connect-timeout",
        "1s",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no answer within 1s"), "{text}");
    assert!(!text.contains("unavailable"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_slot_frees_only_at_the_deadline_are_reported_never_asked() {
    let silent = [
        silent_peer().await,
        silent_peer().await,
        silent_peer().await,
    ];
    for round in 0..ROUNDS {
        let config = CollectorConfig {
            concurrency: 1,
            ..equal_timeouts(Duration::from_millis(200))
        };
        let report = collector(&silent, config).collect(Default::default()).await;
        let (mut asked, mut never) = (0, 0);
        for node in &report.nodes {
            match &node.result.as_ref().unwrap_err().kind {
                NodeErrorKind::DeadlineExceeded { .. } => {
                    assert!(node.attempts >= 1, "round {round}");
                    asked += 1;
                }
                NodeErrorKind::NeverAsked { concurrency: 1, .. } => {
                    assert_eq!(node.attempts, 0, "round {round}");
                    never += 1;
                }
                other => panic!("round {round}: {other}"),
            }
        }
        assert_eq!((asked, never), (1, 2), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_right_after_accept_is_retried_as_unavailable() {
    let agent = serve("reset-node", Some(3)).await;
    for round in 0..ROUNDS {
        // Reset once, then the agent answers: the retry gets the mounts (before, the reset
        // surfaced as a final `Unknown`).
        let peer = resetting_peer(1, agent).await;
        let report = collector(&[peer], CollectorConfig::default())
            .collect(Default::default())
            .await;
        let node = &report.nodes[0];
        let mounts = node
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(mounts.len(), 3, "round {round}");
        // A retry of ours, or tonic's channel reconnecting within the first attempt when the
        // reset came before the request left.
        assert!(
            (1..=2).contains(&node.attempts),
            "round {round}: {}",
            node.attempts
        );
    }
    // Reset every time: retried to the last attempt, reported as unavailable.
    let peer = resetting_peer(usize::MAX, agent).await;
    let report = collector(&[peer], CollectorConfig::default())
        .collect(Default::default())
        .await;
    let node = &report.nodes[0];
    let error = node.result.as_ref().unwrap_err();
    assert!(
        matches!(error.kind, NodeErrorKind::Unavailable(_)),
        "{error}"
    );
    assert_eq!(node.attempts, CollectorConfig::default().max_attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_fails_alone_at_the_per_node_limit() {
    let flood = serve("flood-node", None).await;
    let fine = serve("fine-node", Some(500)).await;
    let config = CollectorConfig {
        max_mounts_per_node: 1000,
        ..CollectorConfig::default()
    };
    let report = collector(&[flood, fine], config)
        .collect(Default::default())
        .await;
    let error = report.nodes[0].result.as_ref().unwrap_err();
    assert!(
        matches!(error.kind, NodeErrorKind::TooManyMounts { limit: 1000 }),
        "{error}"
    );
    assert!(
        error.to_string().contains("sent more than 1000 mounts"),
        "{error}"
    );
    assert_eq!(report.nodes[1].result.as_ref().unwrap().len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_that_crosses_the_memory_bound_fails_and_the_other_keeps_its_answer() {
    let a = serve("big-a", Some(600)).await;
    let b = serve("big-b", Some(600)).await;
    // Room for about 1,000 of these reports, not 1,200.
    let one = {
        use prost::Message;
        v1::MountReport {
            node: "big-a".into(),
            mount_id: 1,
            mount_point: format!("/flood/{:09}", 1),
            state: v1::MountState::Active as i32,
            dumpable: true,
            ..Default::default()
        }
        .encoded_len()
            + std::mem::size_of::<v1::MountReport>()
    };
    for round in 0..ROUNDS {
        let config = CollectorConfig {
            max_report_bytes: one * 1000,
            ..CollectorConfig::default()
        };
        let report = collector(&[a, b], config).collect(Default::default()).await;
        let failed: Vec<_> = report.failed().collect();
        assert_eq!(failed.len(), 1, "round {round}: {failed:?}");
        assert!(
            matches!(failed[0].kind, NodeErrorKind::ReportMemory { .. }),
            "round {round}: {}",
            failed[0]
        );
        assert_eq!(report.mounts().count(), 600, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_marks_a_flooding_node_failed_with_its_limit_and_lists_the_others() {
    let flood = serve("flood-node", None).await.to_string();
    let fine = serve("fine-node", Some(5)).await.to_string();
    let nodes = format!("{flood},{fine}");
    let out = tokio::task::spawn_blocking(move || {
        common::controller(&[
            "collect",
            "--nodes",
            &nodes,
            "--max-mounts-per-node",
            "2000",
            "--output",
            "json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "partial answer");
    let doc = common::json(&out);
    let failed = doc["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{doc}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("sent more than 2000 mounts"),
        "{doc}"
    );
    assert_eq!(doc["mounts"].as_array().unwrap().len(), 5, "{doc}");
}
