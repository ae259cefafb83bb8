//! Hostile and careless clients against the real agent binary: oversize requests, hostile
//! pids and ids, too many streams, streams abandoned or never read. The agent refuses what
//! it must, reads nothing outside its proc root, keeps its memory bounded and keeps serving.

mod common;

use std::time::Duration;

use autofs_api::v1::{self, check_migratable_request::Target};
use common::{Agent, assert_status, eventually, fixture_proc_root, ids, list};
use tonic::Code;

/// A watch of a namespace nobody has: an empty snapshot, then silence (its producer never
/// has anything to send, so only the client going away can end it).
fn quiet_watch() -> v1::WatchMountsRequest {
    v1::WatchMountsRequest {
        filter: Some(v1::ListMountsRequest {
            mnt_ns: Some(1),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_refused_and_the_agent_keeps_serving() {
    let agent = Agent::start(&[]);
    let mut client = agent.client().await;
    let huge = "a".repeat(1024 * 1024);

    // tonic refuses a message above the decoding limit (16 KiB here) with OUT_OF_RANGE;
    // gRPC's own servers use RESOURCE_EXHAUSTED for the same thing. Either is a refusal.
    let refused = [Code::OutOfRange, Code::ResourceExhausted];
    let status = list(
        &mut client,
        v1::ListMountsRequest {
            container_id: huge.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(refused.contains(&status.code()), "{status:?}");
    let status = client
        .check_migratable(v1::CheckMigratableRequest {
            target: Some(Target::ContainerId(huge.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.contains(&status.code()), "{status:?}");

    // Just under the limit, the same field is merely malformed.
    assert_status(
        list(
            &mut client,
            v1::ListMountsRequest {
                container_id: "a".repeat(8 * 1024),
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
        "container_id",
    );
    // Same connection, and a new one: still serving.
    common::node_info(&mut client).await;
    agent
        .client()
        .await
        .get_node_info(v1::GetNodeInfoRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_and_ids_from_clients_never_lead_outside_the_proc_root() {
    // A fixture proc root with processes 1, 1234 and 1500: every pid a client names must be
    // looked up there, never in the host's /proc.
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let agent = Agent::from_builder(Agent::builder().proc_root(&proc_root));
    let mut client = agent.client().await;
    let by_pid = |pid: i32| v1::ListMountsRequest {
        pid: Some(pid),
        ..Default::default()
    };
    let reports = list(&mut client, by_pid(1234)).await.unwrap();
    assert_eq!(ids(&reports), [40]);
    assert_eq!(reports[0].mnt_ns, 4026531841);

    // This test process exists on the host, not in the fixture.
    let host_only = i32::try_from(std::process::id()).unwrap();
    assert!(!proc_root.join(host_only.to_string()).exists());
    for pid in [host_only, i32::MAX] {
        assert_status(
            list(&mut client, by_pid(pid)).await,
            Code::NotFound,
            &pid.to_string(),
        );
        assert_status(
            client
                .check_migratable(v1::CheckMigratableRequest {
                    target: Some(Target::Pid(pid)),
                    ..Default::default()
                })
                .await,
            Code::NotFound,
            &pid.to_string(),
        );
    }
    for pid in [0, -1, i32::MIN] {
        assert_status(
            list(&mut client, by_pid(pid)).await,
            Code::InvalidArgument,
            "pid",
        );
    }
    // Ids are never paths: anything but their strict shape is refused before any lookup.
    for bad in ["../../etc", "..", "/", "1234/../../etc", "a\0b", "%2e%2e"] {
        assert_status(
            list(
                &mut client,
                v1::ListMountsRequest {
                    container_id: bad.into(),
                    ..Default::default()
                },
            )
            .await,
            Code::InvalidArgument,
            "container_id",
        );
        assert_status(
            client
                .check_migratable(v1::CheckMigratableRequest {
                    target: Some(Target::PodUid(bad.into())),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "pod_uid",
        );
    }
    common::node_info(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_over_the_limit_is_refused_with_resource_exhausted_until_one_ends() {
    let agent = Agent::start(&["--max-watches", "8"]);
    let mut client = agent.client().await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            client
                .watch_mounts(quiet_watch())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let extra = client.watch_mounts(quiet_watch()).await.map(drop);
    assert_status(
        extra,
        Code::ResourceExhausted,
        "too many concurrent streams",
    );
    // ListMounts has a budget of its own: idle watches never starve lists. Unary calls have
    // no such limit.
    list(&mut client, v1::ListMountsRequest::default())
        .await
        .unwrap();
    common::node_info(&mut client).await;

    // A client cancels one watch: its slot comes back.
    drop(open.pop());
    let again = eventually("the cancelled watch frees its slot", || {
        let mut client = client.clone();
        async move { Some(client.watch_mounts(quiet_watch()).await.ok()?.into_inner()) }
    })
    .await;
    open.push(again);
    assert_status(
        client.watch_mounts(quiet_watch()).await.map(drop),
        Code::ResourceExhausted,
        "too many concurrent streams",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_open_streams_and_disconnect_do_not_keep_their_slots() {
    let agent = Agent::start(&["--max-watches", "8"]);
    for round in 0..3 {
        // Eight clients open quiet watches and vanish (connection closed), round after round:
        // without the slots coming back, the second round would be refused.
        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut client = agent.client().await;
            let stream = eventually(&format!("round {round}: a slot is free"), || {
                let mut client = client.clone();
                async move { Some(client.watch_mounts(quiet_watch()).await.ok()?.into_inner()) }
            })
            .await;
            clients.push((client.clone(), stream));
            common::node_info(&mut client).await;
        }
        drop(clients);
    }
}

/// The highest RSS of `agent` over `samples` samples 250 ms apart. With a scan every 200 ms,
/// RSS swings by the transient copies each scan makes; the peak over a few scans is stable.
async fn peak_rss_kib(agent: &Agent, samples: usize) -> u64 {
    let mut peak = 0;
    for _ in 0..samples {
        peak = peak.max(agent.rss_kib());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_a_large_list_cannot_grow_the_agent_memory() {
    // Why it is bounded: each ListMounts producer sends through a 32-message channel and
    // waits when it is full; what is in flight beyond that is capped by HTTP/2 flow control
    // (the client's stream and connection windows, and hyper's send buffer). And a stream
    // holds the scan's reports it is sending, which successive scans share while nothing
    // changes, so streams opened at different scans do not pin a copy each. A stalled
    // stream thus costs well under a megabyte, not a copy of its 20,000 reports (tens of MB).
    const MOUNTS: usize = 20_000;
    const STALLED: usize = 8;
    const BOUND_KIB: u64 = 32 * 1024;
    let agent = Agent::start(&["--synthetic-mounts", &MOUNTS.to_string()]);
    agent.wait_serving().await;
    // Warm up: one full read, so allocator pools and the snapshot are already counted.
    let mut reader = agent.client().await;
    let all = list(&mut reader, v1::ListMountsRequest::default())
        .await
        .unwrap();
    assert_eq!(all.len(), MOUNTS);
    let before = peak_rss_kib(&agent, 6).await;

    // Stalled clients arrive one per scan, so each starts from a different scan.
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut client = agent.client().await;
        let stream = client
            .list_mounts(v1::ListMountsRequest::default())
            .await
            .unwrap()
            .into_inner();
        stalled.push((client, stream));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The claim is that memory does NOT grow, so there is no condition to poll: give the
    // producers time to fill whatever they could buffer, then measure.
    let after = peak_rss_kib(&agent, 6).await;
    eprintln!(
        "agent RSS: peak {before} KiB before, {after} KiB with {STALLED} stalled streams of {MOUNTS} mounts"
    );
    assert!(
        after < before + BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB with {STALLED} stalled streams"
    );

    // The stalled streams were throttled, not dropped: one of them still delivers everything,
    // and the agent serves others meanwhile.
    common::node_info(&mut reader).await;
    let (_, mut stream) = stalled.pop().unwrap();
    let mut n = 0;
    while let Some(_report) = stream.message().await.unwrap() {
        n += 1;
    }
    assert_eq!(n, MOUNTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_grpc_timeout_headers_neither_panic_nor_stop_the_agent() {
    // tonic's client will not send a reserved header verbatim, so a raw HTTP/2 client does.
    let agent = Agent::start(&["--synthetic-mounts", "10"]);
    agent.wait_serving().await;
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("empty-request");
    std::fs::write(&frame, [0u8; 5]).unwrap(); // uncompressed, zero-length ListMountsRequest
    let url = format!("http://{}/autofs.v1.AutofsInspector/ListMounts", agent.grpc);
    for timeout in [
        "18446744073709551615S",
        "99999999H",
        "12345678901n",
        "5X",
        "S",
    ] {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .args(["-H", &format!("grpc-timeout: {timeout}")])
            .arg("--data-binary")
            .arg(format!("@{}", frame.display()))
            .arg(&url)
            .output()
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "grpc-timeout {timeout}"
        );
    }
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let mut client = agent.client().await;
    let info = client
        .get_node_info(v1::GetNodeInfoRequest {})
        .await
        .expect("the agent keeps serving");
    assert_eq!(info.into_inner().api_major, 1);
}

#[test]
fn text_logs_through_a_pipe_carry_no_colour_escapes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    // As a container runtime collects them: stderr is a pipe, NO_COLOR unset.
    let (_dir, proc_root) = fixture_proc_root("active_indirect");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_autofs-agent"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "text", "--proc-root"])
        .arg(&proc_root)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Never a hung test: an agent that neither logs its first scan nor exits is killed after
    // a minute (its stderr then ends; the assertions below say what was missing).
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.id()).unwrap());
    let (stop_guard, stopped) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if stopped.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut seen = Vec::new();
    // Two lines in either order (the first scan may end before the listeners are up).
    let done = |seen: &[String]| {
        seen.iter().any(|l| l.contains("first scan done"))
            && seen.iter().any(|l| l.contains("listening"))
    };
    for line in stderr.lines() {
        seen.push(line.unwrap());
        if done(&seen) {
            break;
        }
    }
    let _ = stop_guard.send(());
    guard.join().unwrap();
    let _ = agent.kill();
    agent.wait().unwrap();
    assert!(
        done(&seen),
        "the agent ended before it listened and scanned: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(" INFO ") && l.contains("listening")),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_budgets_beyond_what_a_semaphore_holds_are_as_good_as_unbounded() {
    // It panicked at start ("a semaphore may not have more than MAX_PERMITS permits").
    let huge = u64::MAX.to_string();
    let agent = Agent::start(&["--max-streams", &huge, "--max-watches", &huge]);
    let mut client = agent.client().await;
    list(&mut client, v1::ListMountsRequest::default())
        .await
        .unwrap();
    client.watch_mounts(quiet_watch()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_flags_at_their_maximum_mean_never_and_nothing_panics() {
    // Each of these was added to an instant and overflowed it: the background scanner died
    // after its first scan (--scan-interval) or its stall watch at the first scan
    // (--scan-stall-timeout), and every connection's task at its handshake
    // (--handshake-timeout). "As long as possible" must mean never.
    let mut sc = autofs_testkit::Scenario::start_or_panic();
    let huge = u64::MAX.to_string();
    let mut agent = Agent::start(&[
        "--scan-interval",
        &huge,
        "--scan-stall-timeout",
        &huge,
        "--handshake-timeout",
        &huge,
        "--request-timeout",
        &huge,
        "--max-stale-age",
        &huge,
    ]);
    agent.wait_first_scan();
    let mut client = agent.client().await;
    list(&mut client, v1::ListMountsRequest::default())
        .await
        .unwrap();
    // A mount in a namespace the first scan watched wakes the background scanner: it is
    // alive after its first scan.
    let scans = |text: &str| {
        common::sample_value(text, "autofs_scan_duration_seconds_count").unwrap_or(0.0)
    };
    let before = scans(&common::scrape(agent.metrics));
    sc.mount(autofs_testkit::MountSpec::indirect()).unwrap();
    eventually("the background scanner scans again", || async {
        (scans(&common::scrape(agent.metrics)) > before).then_some(())
    })
    .await;
    let log = agent.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
