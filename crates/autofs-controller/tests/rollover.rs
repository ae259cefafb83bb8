//! The migration gate (`check --wait`) across a rolling update of the agent DaemonSet: the
//! node's agent is replaced by one at another address, and DNS (a real `dnsmasq`) follows.
//! Real agents on loopback addresses, a real INTERIM autofs mount as the blocker, the real
//! `autofs-controller` binary. Every step waits for a line the controller prints; the wait's
//! own deadline is far away, so only those events decide.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::gate::{Gate, LINE_BOUND, blocked, free_port};
use common::*;

#[test]
fn a_wait_follows_its_node_to_the_agent_that_replaced_it_at_another_address() {
    let mut blocked = blocked();
    let pid = blocked.sc.init_host_pid().to_string();
    let port = free_port();
    let node = format!("roll-{}", std::process::id());
    let (a_addr, b_addr) = (format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}"));
    let mut a = start_agent(None, &node, &a_addr, &[]);
    let mut dns = Dnsmasq::start("127.0.0.2 agents.roll.autofs.test\n");
    let name = format!("agents.roll.autofs.test:{port}");
    let server = dns.addr.to_string();
    let mut gate = Gate::start(&[
        "check",
        "--dns",
        &name,
        "--dns-server",
        &server,
        "--node",
        &node,
        "--pid",
        &pid,
        "--wait",
        "10m",
    ]);
    let first = gate.expect("with agent A's first verdict", |l| l.starts_with("[1] "));
    assert!(
        first.contains(&format!("on node {node}: ")) && first.contains("waiting"),
        "{first}"
    );

    // The rolling update: A goes, B (same node, new pod IP) comes, the Service follows.
    a.kill();
    gate.expect("saying that A cannot be asked", |l| {
        l.starts_with(&format!(
            "node {node}: its agent cannot be asked at {a_addr}: "
        ))
    });
    let _b = start_agent(None, &node, &b_addr, &[]);
    dns.set_hosts("127.0.0.3 agents.roll.autofs.test\n");
    let moved = gate.expect("saying that the agent moved", |l| {
        l.contains(&format!("its agent moved from {a_addr} to {b_addr}"))
    });
    assert!(moved.contains("(a new agent: instance "), "{moved}");
    // B's own stream: its verdicts are numbered from 1 again.
    let again = gate.expect("with agent B's first verdict", |l| l.starts_with("[1] "));
    assert!(again.contains("waiting"), "{again}");

    blocked.unblock();
    let (code, lines) = gate.finish();
    let last = lines.last().map(String::as_str).unwrap_or("");
    assert!(
        last.contains(&format!("on node {node} is migratable now")),
        "{lines:#?}"
    );
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn an_agent_answering_as_another_node_is_never_taken_for_the_node() {
    let mut blocked = blocked();
    let pid = blocked.sc.init_host_pid().to_string();
    let port = free_port();
    let node = format!("roll-n-{}", std::process::id());
    let other = format!("roll-m-{}", std::process::id());
    let (a_addr, b_addr) = (format!("127.0.0.4:{port}"), format!("127.0.0.5:{port}"));
    let mut a = start_agent(None, &node, &a_addr, &[]);
    let mut dns = Dnsmasq::start("127.0.0.4 agents.other.autofs.test\n");
    let name = format!("agents.other.autofs.test:{port}");
    let server = dns.addr.to_string();
    let mut gate = Gate::start(&[
        "check",
        "--dns",
        &name,
        "--dns-server",
        &server,
        "--node",
        &node,
        "--pid",
        &pid,
        "--wait",
        "10m",
    ]);
    // Another node's agent never gives this gate a verdict.
    gate.forbidden = Some(format!("on node {other}"));
    let first = gate.expect("with agent A's first verdict", |l| l.starts_with("[1] "));
    assert!(first.contains(&format!("on node {node}: ")), "{first}");

    // A goes; another node's agent gets its address (a pod IP reused), DNS still lists it.
    a.kill();
    let _c = start_agent(None, &other, &a_addr, &[]);
    let not_found = gate.expect("saying that the agent there is not the node", |l| {
        // Every agent discovered answered (nothing "did not"), and none as the node.
        l.starts_with(&format!(
            "node {node}: not found yet: node {node} is not among the 1 discovered agents;"
        ))
    });
    assert!(not_found.contains("discovering again in"), "{not_found}");

    // The node's new agent comes up elsewhere; DNS lists both agents, the other node first.
    let _b = start_agent(None, &node, &b_addr, &[]);
    dns.set_hosts("127.0.0.4 agents.other.autofs.test\n127.0.0.5 agents.other.autofs.test\n");
    gate.expect("saying that the agent moved", |l| {
        l.contains(&format!("its agent moved from {a_addr} to {b_addr}"))
    });
    let again = gate.expect("with agent B's first verdict", |l| l.starts_with("[1] "));
    assert!(again.contains(&format!("on node {node}: ")), "{again}");

    blocked.unblock();
    let (code, lines) = gate.finish();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains(&format!("on node {node} is migratable now"))),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(&format!("on node {other}"))),
        "{lines:#?}"
    );
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn the_library_follows_the_node_when_its_nodes_file_changes() {
    use autofs_controller::discovery::Source;
    use autofs_controller::{Collector, CollectorConfig, Target, WaitEnd, WaitEvent, render};

    let mut blocked = blocked();
    let pid = blocked.sc.init_host_pid();
    let port = free_port();
    let node = format!("roll-f-{}", std::process::id());
    let (a_addr, b_addr) = (format!("127.0.0.6:{port}"), format!("127.0.0.7:{port}"));
    let mut a = start_agent(None, &node, &a_addr, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.txt");
    std::fs::write(&file, format!("{a_addr}\n")).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = rt
        .block_on(Collector::discover(
            vec![Source::File(file.clone())],
            CollectorConfig::default(),
        ))
        .unwrap();
    assert!(collector.rediscovers());
    let (tx, events) = mpsc::channel::<String>();
    let wait = rt.spawn({
        let node = node.clone();
        async move {
            collector
                .wait_migratable_events(
                    &node,
                    Target::Pid(pid),
                    Duration::from_secs(600),
                    move |event| {
                        let kind = match event {
                            WaitEvent::Verdict(_) => "verdict",
                            WaitEvent::Lost { .. } => "lost",
                            WaitEvent::NotFound { .. } => "not found",
                            WaitEvent::Found { .. } => "found",
                            _ => "other",
                        };
                        let _ = tx.send(format!("{kind}: {}", render::wait_event("it", event)));
                    },
                )
                .await
        }
    });
    let next = |want: &str| loop {
        let event = events
            .recv_timeout(LINE_BOUND)
            .unwrap_or_else(|e| panic!("no {want} event: {e}"));
        eprintln!("{event}");
        if event.starts_with(want) {
            return event;
        }
    };
    next("verdict: [1] ");
    a.kill();
    next("lost: ");
    let _b = start_agent(None, &node, &b_addr, &[]);
    std::fs::write(&file, format!("# the node's new agent pod\n{b_addr}\n")).unwrap();
    let found = next("found: ");
    assert!(
        found.contains(&format!("moved from {a_addr} to {b_addr}")),
        "{found}"
    );
    next("verdict: [1] ");
    blocked.unblock();
    let outcome = rt.block_on(wait).unwrap().unwrap();
    assert_eq!(outcome.end, WaitEnd::Dumpable);
    assert_eq!(outcome.last.node, node);
    assert_eq!(outcome.endpoint.address, b_addr);
    assert_eq!(
        outcome.endpoint.expected_node.as_deref(),
        Some(node.as_str())
    );
    assert_eq!(outcome.moves.len(), 1, "{:?}", outcome.moves);
    assert_eq!(
        (outcome.moves[0].from.as_str(), outcome.moves[0].to.as_str()),
        (a_addr.as_str(), b_addr.as_str())
    );
    assert_ne!(
        outcome.moves[0].previous_instance,
        outcome.moves[0].instance
    );
}
