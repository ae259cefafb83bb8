//! Fair sharing of streams: one client opening 128 idle watches (over several connections)
//! gets its share and no more; other clients still watch and list, and so does it. Watchers
//! share the agent's state: 128 of them on 3,000 mounts cost about what one costs.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use common::{Agent, HANG_GUARD};
use tonic::Code;
use tonic::transport::Channel;

/// A watch that never sees an event (mount namespace 1 does not exist).
fn quiet_watch() -> v1::WatchMountsRequest {
    v1::WatchMountsRequest {
        filter: Some(v1::ListMountsRequest {
            mnt_ns: Some(1),
            ..Default::default()
        }),
    }
}

/// A client whose connections come from `source` (loopback addresses differ per client).
async fn client_from(agent: &Agent, source: Ipv4Addr) -> AutofsInspectorClient<Channel> {
    let channel = agent
        .endpoint()
        .local_address(Some(IpAddr::V4(source)))
        .connect()
        .await
        .unwrap();
    AutofsInspectorClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_with_128_watches_gets_its_share_and_others_still_watch_and_list() {
    let agent = Agent::start(&[]);
    agent.wait_serving().await;

    // 128 watches from 127.0.0.1, 32 per connection (the HTTP/2 stream limit).
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..4 {
        let client = client_from(&agent, Ipv4Addr::new(127, 0, 0, 1)).await;
        for _ in 0..32 {
            match client.clone().watch_mounts(quiet_watch()).await {
                Ok(stream) => open.push(stream.into_inner()),
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!(open.len(), 32, "the default per-client share");
    assert_eq!(refused.len(), 96);
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("this client (ip:127.0.0.1)"),
            "{status:?}"
        );
    }

    // Another client watches, and everyone lists.
    let mut other = client_from(&agent, Ipv4Addr::new(127, 0, 0, 2)).await;
    let _watch = other.watch_mounts(quiet_watch()).await.unwrap();
    common::list(&mut other, v1::ListMountsRequest::default())
        .await
        .unwrap();
    let mut greedy = client_from(&agent, Ipv4Addr::new(127, 0, 0, 1)).await;
    common::list(&mut greedy, v1::ListMountsRequest::default())
        .await
        .unwrap();

    // Its share comes back as its watches end.
    drop(open.pop());
    common::eventually("a cancelled watch frees the client's share", || {
        let mut greedy = greedy.clone();
        async move {
            let stream = greedy.watch_mounts(quiet_watch()).await.ok()?;
            Some(stream.into_inner())
        }
    })
    .await;
}

/// Opens `n` watches of every mount over `n / 32` connections and reads each one's initial
/// snapshot (`mounts` ADDED events), then keeps them open.
async fn watchers(agent: &Agent, n: usize, mounts: usize) -> Vec<tonic::Streaming<v1::MountEvent>> {
    let mut streams = Vec::new();
    let mut client = agent.client().await;
    for i in 0..n {
        if i % 32 == 0 {
            client = agent.client().await;
        }
        let mut stream = client
            .watch_mounts(v1::WatchMountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        for _ in 0..mounts {
            tokio::time::timeout(HANG_GUARD, stream.message())
                .await
                .expect("initial snapshot in time")
                .unwrap()
                .unwrap();
        }
        streams.push(stream);
    }
    streams
}

/// The highest RSS over a few samples 250 ms apart (scans every 200 ms).
async fn peak_rss_kib(agent: &Agent) -> u64 {
    let mut peak = 0;
    for _ in 0..8 {
        peak = peak.max(agent.rss_kib());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_share_state_so_128_cost_about_what_one_costs() {
    const MOUNTS: usize = 3_000;
    // Before sharing, each watcher kept its own copy of every report (~200 MB for these).
    const BOUND_KIB: u64 = 16 * 1024;
    let agent = Agent::start(&[
        "--synthetic-mounts",
        &MOUNTS.to_string(),
        "--max-streams-per-client",
        "128",
    ]);
    agent.wait_serving().await;
    let one = watchers(&agent, 1, MOUNTS).await;
    let with_one = peak_rss_kib(&agent).await;
    let many = watchers(&agent, 127, MOUNTS).await;
    let with_128 = peak_rss_kib(&agent).await;
    assert!(
        with_128 < with_one + BOUND_KIB,
        "RSS with 1 watcher {with_one} KiB, with 128 {with_128} KiB"
    );
    eprintln!("RSS with 1 watcher {with_one} KiB, with 128 {with_128} KiB");
    drop((one, many));
}
