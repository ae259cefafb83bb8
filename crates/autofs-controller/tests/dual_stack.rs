//! One agent reached at two endpoints (a dual-stack pod's IPv4 and IPv6 addresses: one
//! `agent_instance`) is one node. `watch` follows it at one endpoint and keeps the other in
//! reserve, which must take over whenever the first does not follow the agent: its stream
//! broke, or it never opened. `collect` keeps its answer from the endpoint that gave it, also
//! when the other path to it fails. Fake agents, each endpoint failing in its own way; the real
//! library.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autofs_api::v1;
use autofs_controller::{BackoffConfig, CollectorConfig, WatchItem, WatchStream};
use common::HANG_GUARD;
use common::fake_agent::{Events, FakeAgent, collector};
use tokio_stream::StreamExt;

/// One event of `node`, then a stream that stays open, silent.
fn one_event(node: &str) -> Events {
    let event = v1::MountEvent {
        node: node.into(),
        sequence: 1,
        ..Default::default()
    };
    Box::pin(tokio_stream::iter([Ok(event)]).chain(tokio_stream::pending()))
}

/// A server of agent `one-agent` of node `dual-stack`: one of two paths to one agent.
fn path_to_the_agent() -> FakeAgent {
    let mut agent = FakeAgent::new("dual-stack");
    agent.info.agent_instance = "one-agent".into();
    agent
}

/// A 3 s deadline, and a backoff from `initial` up to `max`.
fn config(initial: Duration, max: Duration) -> CollectorConfig {
    CollectorConfig {
        timeout: Duration::from_secs(3),
        backoff: BackoffConfig { initial, max },
        ..CollectorConfig::default()
    }
}

/// Watches `addrs` until the first mount event: the stream, which follows on until dropped,
/// the endpoint the event came from, and every item seen until then. The bound only keeps a
/// broken build from hanging the suite.
async fn first_event(
    addrs: &[SocketAddr],
    config: CollectorConfig,
) -> (WatchStream, String, Vec<String>) {
    let mut stream = collector(addrs, config).watch(v1::ListMountsRequest::default());
    let mut seen = Vec::new();
    let followed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let item = stream
                .next()
                .await
                .expect("the watch ends only when no node is left");
            seen.push(format!("{item:?}"));
            if let WatchItem::Event { endpoint, .. } = item {
                return endpoint.address;
            }
        }
    })
    .await;
    match followed {
        Ok(endpoint) => (stream, endpoint, seen),
        Err(_) => panic!("no event within {HANG_GUARD:?}: {seen:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_endpoint_takes_over_when_the_first_one_cannot_open_the_watch() {
    // The first endpoint answers the handshake, but its WatchMounts never opens (a path that
    // breaks after the handshake): it claims the agent first, then fails, again and again.
    let first = path_to_the_agent()
        .watching(|| Err(tonic::Status::unavailable("fake: this path is broken")))
        .serve()
        .await;
    // The reserve is a healthy path to the same agent, whose first handshake fails so that
    // the first endpoint claims the agent before it: the reserve tries again at least half a
    // second later.
    let reserve = path_to_the_agent()
        .unavailable_for(0..1)
        .watching(|| Ok(one_event("dual-stack")))
        .serve()
        .await;
    let second = Duration::from_secs(1);
    let (_stream, followed, seen) = first_event(&[first, reserve], config(second, second)).await;
    assert_eq!(followed, reserve.to_string(), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_at_two_endpoints_is_followed_once_and_the_other_stands_by_asking_no_watch() {
    // Each WatchMounts the agent opens costs it a fresh snapshot, and two streams of one agent
    // would merge every event in twice.
    let opened = Arc::new(AtomicUsize::new(0));
    let path = || {
        let opened = opened.clone();
        path_to_the_agent().watching(move || {
            opened.fetch_add(1, Ordering::Relaxed);
            Ok(one_event("dual-stack"))
        })
    };
    let (a, b) = (path(), path());
    let (a_calls, b_calls) = (a.clone(), b.clone());
    let (a, b) = (a.serve().await, b.serve().await);
    let backoff = (Duration::from_millis(100), Duration::from_millis(200));
    // The stream is kept: dropping it would stop following either endpoint.
    let (_stream, followed, seen) = first_event(&[a, b], config(backoff.0, backoff.1)).await;
    // The other endpoint has decided once it asks its second handshake: it stood by.
    let other = if followed == a.to_string() {
        &b_calls
    } else {
        &a_calls
    };
    tokio::time::timeout(HANG_GUARD, async {
        while other.handshakes() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the other endpoint never stood by: {seen:#?}"));
    assert_eq!(opened.load(Ordering::Relaxed), 1, "{seen:#?}");
    let connected = seen.iter().filter(|s| s.starts_with("Connected")).count();
    assert_eq!(connected, 1, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_answered_at_one_endpoint_is_complete_though_its_other_path_failed() {
    let mount = || v1::MountReport {
        node: "dual-stack".into(),
        mount_id: 40,
        mount_point: "/net".into(),
        state: v1::MountState::Active as i32,
        dumpable: true,
        ..Default::default()
    };
    let answers = path_to_the_agent()
        .listing(move || Box::pin(tokio_stream::iter([Ok(mount())])))
        .serve()
        .await;
    // The handshake names the same agent; then the list breaks on this path.
    let breaks = path_to_the_agent()
        .listing(|| {
            Box::pin(tokio_stream::iter([Err(tonic::Status::internal(
                "fake: path broke",
            ))]))
        })
        .serve()
        .await;
    let second = Duration::from_secs(1);
    for addrs in [[answers, breaks], [breaks, answers]] {
        let report = collector(&addrs, config(second, second))
            .collect(v1::ListMountsRequest::default())
            .await;
        let nodes: Vec<_> = report
            .nodes
            .iter()
            .map(|n| n.endpoint.address.clone())
            .collect();
        assert!(report.is_complete(), "{:#?}", report.nodes);
        assert_eq!(nodes, [answers.to_string()], "{:#?}", report.nodes);
        assert_eq!(report.mounts().count(), 1);
    }
}
