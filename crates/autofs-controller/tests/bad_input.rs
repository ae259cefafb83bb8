//! Bad input and misbehaving agents: unparseable addresses, empty and duplicated node lists, an
//! agent of another API major, agents that break the API contract. Each is a clear error that
//! names the node; nothing panics. The misbehaving agents are tiny in-process tonic servers.

mod common;

use std::net::SocketAddr;

use autofs_api::v1;
use autofs_controller::{Collector, CollectorConfig, NodeErrorKind, Target};
use autofs_testkit::closed_port::ClosedPort;
use common::controller;
use common::fake_agent::{self, FakeAgent};

/// How a fake agent misbehaves.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    ApiMajor2,
    WrongNodeInReport,
    UnspecifiedState,
    EmptyNodeName,
    InconsistentCheck,
    MultibyteContainerId,
    AlsoAnUnparseableLine,
}

/// A report of node `node` as `fault` bends it.
fn report(node: &str, fault: Fault) -> v1::MountReport {
    v1::MountReport {
        node: match fault {
            Fault::WrongNodeInReport => "someone-else".into(),
            _ => node.into(),
        },
        mount_id: 42,
        mount_point: "/fake/auto".into(),
        state: match fault {
            Fault::UnspecifiedState => 0,
            _ => v1::MountState::Active as i32,
        },
        reason: v1::Reason::MasterHoldsPipe as i32,
        dumpable: true,
        container_id: match fault {
            Fault::MultibyteContainerId => "0123456789aé€b".into(),
            _ => String::new(),
        },
        ..Default::default()
    }
}

/// What an agent reports for an autofs mountinfo line it could not parse.
fn unparseable_line_report(node: &str) -> v1::MountReport {
    v1::MountReport {
        node: node.into(),
        mount_id: 43,
        state: v1::MountState::Error as i32,
        reason: v1::Reason::MalformedMountinfo as i32,
        message: "malformed mountinfo line: no ' - ' separator after the optional fields".into(),
        ..Default::default()
    }
}

/// Serves a fake agent `node` that misbehaves as `fault` says, for the life of the runtime.
async fn serve(node: &str, fault: Fault) -> SocketAddr {
    let mut fake = FakeAgent::new(node);
    match fault {
        Fault::ApiMajor2 => fake.info.api_major = 2,
        Fault::EmptyNodeName => fake.info.node = String::new(),
        _ => {}
    }
    let mut items = vec![report(node, fault)];
    if matches!(fault, Fault::AlsoAnUnparseableLine) {
        items.push(unparseable_line_report(node));
    }
    let check = v1::CheckMigratableResponse {
        dumpable: matches!(fault, Fault::InconsistentCheck),
        blocking: vec![report(node, fault)],
        mounts_checked: 1,
        retry_after_ms: 0,
        node: node.into(),
        ..Default::default()
    };
    fake.listing(move || Box::pin(tokio_stream::iter(items.clone().into_iter().map(Ok))))
        .checking(check)
        .serve()
        .await
}

fn collector(addrs: &[SocketAddr]) -> Collector {
    fake_agent::collector(addrs, fake_agent::three_second_deadline())
}

#[tokio::test]
async fn an_agent_of_another_api_major_is_refused_by_name() {
    let good = serve("good-node", Fault::None).await;
    let v2 = serve("future-node", Fault::ApiMajor2).await;
    let report = collector(&[good, v2]).collect(Default::default()).await;
    assert!(!report.is_complete());
    assert_eq!(report.node_mounts("good-node").unwrap().len(), 1);
    let errors: Vec<_> = report.failed().collect();
    assert_eq!(errors.len(), 1);
    assert!(matches!(
        errors[0].kind,
        NodeErrorKind::VersionMismatch { agent_major: 2, .. }
    ));
    let text = errors[0].to_string();
    assert!(
        text.contains("future-node") && text.contains("API v2") && text.contains(&v2.to_string()),
        "{text}"
    );
    // No retry on a refusal: it is not UNAVAILABLE.
    assert_eq!(report.nodes[1].attempts, 1);
}

#[tokio::test]
async fn contract_violations_are_malformed_answers_naming_the_node() {
    for (fault, needle) in [
        (Fault::WrongNodeInReport, "names node `someone-else`"),
        (Fault::UnspecifiedState, "not a verdict"),
        (Fault::EmptyNodeName, "empty node name"),
        (Fault::MultibyteContainerId, "which is not hex"),
    ] {
        let addr = serve("odd-node", fault).await;
        let report = collector(&[addr]).collect(Default::default()).await;
        let e = report
            .failed()
            .next()
            .unwrap_or_else(|| panic!("{fault:?} accepted"));
        assert!(
            matches!(e.kind, NodeErrorKind::Malformed(_)),
            "{fault:?}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(needle) && text.contains(&addr.to_string()),
            "{text}"
        );
    }
    let addr = serve("odd-node", Fault::InconsistentCheck).await;
    let e = collector(&[addr])
        .check("odd-node", Target::Pid(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("odd-node") && e.contains("dumpable=true with 1 blocking"),
        "{e}"
    );
}

#[tokio::test]
async fn two_endpoints_answering_as_one_node_are_a_duplicate() {
    let first = serve("twin", Fault::None).await;
    let second = serve("twin", Fault::None).await;
    let report = collector(&[first, second])
        .collect(Default::default())
        .await;
    assert!(report.nodes[0].result.is_ok());
    let e = report.nodes[1].result.as_ref().unwrap_err();
    assert!(matches!(e.kind, NodeErrorKind::DuplicateNode { .. }), "{e}");
    assert!(e.to_string().contains(&first.to_string()), "{e}");
}

#[tokio::test]
async fn an_address_nobody_listens_on_is_retried_then_reported() {
    let closed = ClosedPort::bind().unwrap();
    let report = collector(&[closed.addr()])
        .collect(Default::default())
        .await;
    let n = &report.nodes[0];
    let e = n.result.as_ref().unwrap_err();
    assert!(matches!(e.kind, NodeErrorKind::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(n.attempts, CollectorConfig::default().max_attempts);
}

#[test]
fn cli_bad_input_exits_two_with_a_clear_message() {
    for (args, needle) in [
        (&["collect"][..], "no agent endpoints"),
        (&["collect", "--nodes", ""][..], "empty"),
        (&["collect", "--nodes", "10.0.0.1"][..], "missing :port"),
        (
            &["collect", "--nodes", "10.0.0.1:1,10.0.0.1:1"][..],
            "duplicate node endpoint 10.0.0.1:1",
        ),
        (&["collect", "--nodes", "fd00::1:5"][..], "[addr]:port"),
        (
            &["collect", "--nodes-file", "/nonexistent/nodes"][..],
            "/nonexistent/nodes",
        ),
        (
            &["collect", "--nodes", "10.0.0.1:1", "--timeout", "soon"][..],
            "not a duration",
        ),
        (
            &["collect", "--nodes", "10.0.0.1:1", "--concurrency", "0"][..],
            "concurrency",
        ),
        (
            &["collect", "--nodes", "10.0.0.1:1", "--state", "sleepy"][..],
            "unknown state",
        ),
        // Comma-separated states are split, each checked.
        (
            &[
                "collect",
                "--nodes",
                "10.0.0.1:1",
                "--state",
                "active,sleepy",
            ][..],
            "unknown state `sleepy`",
        ),
        // The message names the flags this build has.
        (&["collect"][..], "give --nodes, --nodes-file"),
        // A host pid means a different process on every node.
        (
            &["collect", "--nodes", "10.0.0.1:1,10.0.0.2:1", "--pid", "42"][..],
            "--pid 42: a host pid names a different process on each of the 2 agents",
        ),
        (
            &["watch", "--nodes", "10.0.0.1:1,10.0.0.2:1", "--pid", "42"][..],
            "ask one node",
        ),
        (
            &["check", "--nodes", "10.0.0.1:1", "--node", "n"][..],
            "--pid",
        ),
    ] {
        let out = controller(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cli_names_the_node_of_another_api_major() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(serve("future-node", Fault::ApiMajor2));
    let out = controller(&["nodes", "--nodes", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("future-node") && text.contains("API v2"),
        "{text}"
    );
    let out = controller(&["collect", "--nodes", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PARTIAL: 1 node failed") && text.contains("future-node"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unparseable_mount_reported_as_error_does_not_hide_the_nodes_other_mounts() {
    let addr = serve("half-broken", Fault::AlsoAnUnparseableLine).await;
    let report = collector(&[addr]).collect(Default::default()).await;
    assert!(
        report.is_complete(),
        "the node answered: {:?}",
        report.failed().next()
    );
    let mounts = report
        .node_mounts("half-broken")
        .expect("the node answered");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().any(|m| m.mount_point == "/fake/auto"));
    assert!(
        mounts
            .iter()
            .any(|m| m.state == v1::MountState::Error as i32 && m.mount_point.is_empty())
    );
}

#[test]
fn both_binaries_refuse_a_bad_duration_with_the_same_clear_message() {
    // The detail after clap's "invalid value 'X' for '--flag <FLAG>': ".
    let detail = |out: &std::process::Output| -> String {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains("invalid value"))
            .unwrap_or_else(|| panic!("no 'invalid value' line in {err}"));
        line.split_once("': ").unwrap().1.to_owned()
    };
    for (bad, needle) in [
        ("soon", "`soon` is not a duration: "),
        ("5 parsecs", "unknown time unit \"parsecs\""),
        ("-1s", "`-1s` is not a duration"),
        ("0s", "`0s` is not a positive duration"),
    ] {
        let from_controller = detail(&controller(&[
            "collect",
            "--nodes",
            "10.0.0.1:1",
            &format!("--timeout={bad}"),
        ]));
        let agent = std::process::Command::new(
            autofs_testkit::binaries::AGENT
                .locate()
                .unwrap_or_else(|e| panic!("{e}"))
                .0,
        )
        .args(["serve", &format!("--scan-interval={bad}")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run autofs-agent");
        let from_agent = detail(&agent);
        assert!(
            from_controller.contains(needle),
            "{bad:?}: {from_controller}"
        );
        assert_eq!(from_agent, from_controller, "{bad:?}");
    }
}

/// A WaitMigratable message of node `node`: `outcome` (a raw wire value), `dumpable`, and one
/// INTERIM blocker when `blocked`.
fn wait_message(
    node: &str,
    outcome: i32,
    dumpable: bool,
    blocked: bool,
) -> v1::WaitMigratableResponse {
    let blocker = v1::MountReport {
        state: v1::MountState::Interim as i32,
        reason: v1::Reason::PipeNotEmpty as i32,
        dumpable: false,
        ..report(node, Fault::None)
    };
    v1::WaitMigratableResponse {
        dumpable,
        blocking: if blocked { vec![blocker] } else { Vec::new() },
        mounts_checked: 1,
        node: node.into(),
        outcome,
        message: "fake".into(),
        sequence: 1,
        external: Vec::new(),
        blocking_tasks: Vec::new(),
    }
}

#[tokio::test]
async fn a_wait_verdict_whose_outcome_contradicts_its_blockers_is_malformed_never_dumpable() {
    use v1::wait_migratable_response::Outcome;
    let far = std::time::Duration::from_secs(120);
    for (message, needle) in [
        // Says DUMPABLE while an INTERIM mount blocks: a gate must not open on it.
        (
            wait_message("gate", Outcome::Dumpable as i32, false, true),
            "outcome DUMPABLE with dumpable=false",
        ),
        // Says WILL_NOT_CLEAR while nothing blocks.
        (
            wait_message("gate", Outcome::WillNotClear as i32, true, false),
            "outcome WILL_NOT_CLEAR with dumpable=true",
        ),
        // An outcome this controller does not know (a newer agent): not "said to wait".
        (wait_message("gate", 7, false, true), "unknown outcome 7"),
    ] {
        let addr = FakeAgent::new("gate")
            .waiting(vec![message.clone()])
            .serve()
            .await;
        let result = collector(&[addr])
            .wait_migratable("gate", Target::Pid(1), far, |_| {})
            .await;
        let e = match result {
            Ok(outcome) => panic!("{message:?} accepted as {:?}", outcome.end),
            Err(e) => e,
        };
        let autofs_controller::Error::Node(node_error) = &e else {
            panic!("{e}");
        };
        assert!(
            matches!(node_error.kind, NodeErrorKind::Malformed(_)),
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains(needle) && text.contains("gate"), "{text}");
    }
}

#[test]
fn deadlines_beyond_what_time_and_grpc_timeout_can_hold_mean_no_deadline_never_a_panic() {
    use v1::wait_migratable_response::Outcome;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt
        .block_on(
            FakeAgent::new("patient")
                .waiting(vec![wait_message(
                    "patient",
                    Outcome::Dumpable as i32,
                    true,
                    false,
                )])
                .serve(),
        )
        .to_string();
    // 20000 years passes the 8 digits of hours that grpc-timeout holds; u64::MAX seconds
    // passes what a monotonic instant holds.
    for huge in ["20000y", "18446744073709551615"] {
        for (args, code) in [
            (&["nodes", "--nodes", &addr, "--timeout", huge][..], 0),
            (&["collect", "--nodes", &addr, "--timeout", huge][..], 0),
            (
                &["collect", "--nodes", &addr, "--connect-timeout", huge][..],
                0,
            ),
            (
                &[
                    "check", "--nodes", &addr, "--node", "patient", "--pid", "1", "--wait", huge,
                ][..],
                0,
            ),
        ] {
            let out = controller(args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        }
    }
}

#[test]
fn a_wait_that_gets_no_verdict_names_the_wait_not_the_timeout() {
    // An agent that takes the wait and never says a word: the wait's deadline (1 s) passes,
    // far from the per-node timeout (60 s).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt
        .block_on(
            FakeAgent::new("mute")
                .waiting_then_silent(Vec::new())
                .serve(),
        )
        .to_string();
    // The node named by its address: no handshake round before the wait.
    let out = controller(&[
        "check",
        "--nodes",
        &addr,
        "--node",
        &addr,
        "--pid",
        "1",
        "--wait",
        "1s",
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node mute") && err.contains("no answer within 1s") && !err.contains("60s"),
        "{err}"
    );
}

#[test]
fn a_concurrency_beyond_what_a_semaphore_holds_is_as_good_as_unbounded_and_zero_events_is_refused()
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(serve("many-slots", Fault::None)).to_string();
    let out = controller(&[
        "nodes",
        "--nodes",
        &addr,
        "--concurrency",
        "18446744073709551615",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");

    // `--max-events 0` printed one event and stopped: zero events is no watch at all.
    let out = controller(&["watch", "--nodes", &addr, "--max-events", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value '0' for '--max-events"), "{err}");
}

#[tokio::test]
async fn a_wait_outlives_an_agent_restart_longer_than_the_attempts_of_a_fan_out() {
    use v1::wait_migratable_response::Outcome;
    // The agent says WAITING, then shuts down as the real one does ("agent shutting down;
    // wait again"); while it restarts, the next five handshakes are answered UNAVAILABLE
    // (more than the --max-attempts 4 of a fan-out; answers, not refused connections, so
    // that every attempt is exactly one handshake); then it answers DUMPABLE.
    let addr = FakeAgent::new("restarting")
        .unavailable_for(1..6)
        .waiting_with(|n| {
            if n == 0 {
                Box::pin(tokio_stream::iter([
                    Ok(wait_message(
                        "restarting",
                        Outcome::Waiting as i32,
                        false,
                        true,
                    )),
                    Err(tonic::Status::unavailable(
                        "agent shutting down; wait again",
                    )),
                ]))
            } else {
                Box::pin(tokio_stream::iter([Ok(wait_message(
                    "restarting",
                    Outcome::Dumpable as i32,
                    true,
                    false,
                ))]))
            }
        })
        .serve()
        .await;

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = seen.clone();
    // The node named by its address: no handshake round before the wait.
    let outcome = collector(&[addr])
        .wait_migratable(
            &addr.to_string(),
            Target::Pid(1),
            std::time::Duration::from_secs(120),
            move |m| progress.lock().unwrap().push(m.outcome),
        )
        .await
        .unwrap_or_else(|e| panic!("the wait gave up: {e}"));
    assert_eq!(outcome.end, autofs_controller::WaitEnd::Dumpable);
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Waiting as i32, Outcome::Dumpable as i32]
    );
}
