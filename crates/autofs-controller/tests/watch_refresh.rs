//! `watch` follows the cluster's agents as discovery sees them change: a rolling update moves
//! a node's agent to another address (DNS follows, a real `dnsmasq`), a node joins (a nodes
//! file gains a line), a node's agent leaves discovery, and a discovery round that fails
//! changes nothing. Real agents on loopback addresses, the real `autofs-controller` binary
//! read line by line; every step waits for a line it must print, never for time to pass.

mod common;

use common::dnsmasq::Dnsmasq;
use common::gate::{Gate, free_port};
use common::*;
use serde_json::Value;

/// `watch` discovering the agents as `name` (`host:port`) through `dns`, then `args`.
fn watch_over_dns(dns: &Dnsmasq, name: &str, args: &[&str]) -> Gate {
    let server = dns.addr.to_string();
    let mut all = vec!["watch", "--dns", name, "--dns-server", &server];
    all.extend_from_slice(args);
    Gate::start(&all)
}

#[test]
fn a_watch_follows_its_node_to_the_agent_that_replaced_it_at_another_address() {
    let port = free_port();
    let node = format!("wroll-{}", std::process::id());
    let (a_addr, b_addr) = (format!("127.0.0.6:{port}"), format!("127.0.0.7:{port}"));
    let mut a = start_agent(None, &node, &a_addr, &[]);
    let mut dns = Dnsmasq::start("127.0.0.6 agents.wroll.autofs.test\n");
    let name = format!("agents.wroll.autofs.test:{port}");
    // Discovery runs again only because the node's stream broke: the interval is far away.
    let mut watch = watch_over_dns(&dns, &name, &["--refresh-interval", "1h"]);
    watch.expect("saying that A is watched", |l| {
        l.starts_with(&format!("{node} connected ({a_addr}, agent "))
    });

    // The rolling update: A goes, B (same node, new pod IP) comes, the Service follows.
    a.kill();
    watch.expect("saying that A's stream broke", |l| {
        l.starts_with(&format!("node {node} ({a_addr}): unavailable: "))
            && l.contains("; reconnecting in ")
    });
    // Failures to reconnect still name the node last seen there.
    watch.expect("saying that A cannot be reached", |l| {
        l.starts_with(&format!("node {node} ({a_addr}): unavailable: "))
            && l.contains("Connection refused")
    });
    let _b = start_agent(None, &node, &b_addr, &[]);
    dns.set_hosts("127.0.0.7 agents.wroll.autofs.test\n");
    let removed = watch.expect("saying that A is not watched any more", |l| {
        l.starts_with(&format!("agent at {a_addr} ("))
    });
    assert!(
        removed.ends_with("no longer discovered; not watched any more"),
        "{removed}"
    );
    assert!(
        removed.contains("(dns agents.wroll.autofs.test)"),
        "{removed}"
    );
    let added = watch.expect("saying that B was discovered", |l| {
        l.starts_with(&format!("agent at {b_addr} ("))
    });
    assert!(added.ends_with("discovered; watching it"), "{added}");
    watch.expect("saying that B is watched", |l| {
        l.starts_with(&format!("{node} connected ({b_addr}, agent "))
    });
}

/// The JSON lines of a `watch --output json` as they come; no line may say that `kept` was
/// removed.
struct JsonWatch {
    gate: Gate,
    kept: String,
}

impl JsonWatch {
    #[track_caller]
    fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let kept = self.kept.clone();
        let line = self.gate.expect(what, |l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(
                !(v["type"] == "endpoint_removed" && v["endpoint"] == kept.as_str()),
                "{l}"
            );
            want(&v)
        });
        serde_json::from_str(&line).unwrap()
    }
}

/// `watch` discovering the agents from the nodes file `file`, then `args`.
fn watch_over_file(file: &std::path::Path, args: &[&str]) -> Gate {
    let path = file.to_str().unwrap();
    let mut all = vec!["watch", "--nodes-file", path];
    all.extend_from_slice(args);
    Gate::start(&all)
}

/// Writes `text` to `path` in one step (a round never reads half a file).
fn write_atomically(path: &std::path::Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[test]
fn a_watch_follows_nodes_that_join_and_leave_and_a_failed_round_stops_nothing() {
    let port = free_port();
    let pid = std::process::id();
    let (first, joined) = (format!("wjoin-a-{pid}"), format!("wjoin-c-{pid}"));
    let (a_addr, c_addr) = (format!("127.0.0.8:{port}"), format!("127.0.0.9:{port}"));
    let _a = start_agent(None, &first, &a_addr, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.txt");
    write_atomically(&file, &format!("{a_addr}\n"));
    let mut watch = JsonWatch {
        gate: watch_over_file(&file, &["--refresh-interval", "1s", "--output", "json"]),
        kept: a_addr.clone(),
    };
    let is = |v: &Value, kind: &str, endpoint: &str| v["type"] == kind && v["endpoint"] == endpoint;
    watch.expect("saying that A is watched", |v| is(v, "connected", &a_addr));

    // A node joins: its agent gets a line in the file.
    let mut c = start_agent(None, &joined, &c_addr, &[]);
    write_atomically(&file, &format!("{a_addr}\n{c_addr}\n"));
    let added = watch.expect("saying that C was discovered", |v| {
        is(v, "endpoint_added", &c_addr)
    });
    assert_eq!(added["origin"], format!("{}:2", file.display()), "{added}");
    let connected = watch.expect("saying that C is watched", |v| is(v, "connected", &c_addr));
    assert_eq!(connected["node"], joined.as_str(), "{connected}");

    // Discovery fails (the file is gone): the watch keeps following what it found.
    std::fs::remove_file(&file).unwrap();
    let failed = watch.expect("saying that discovery failed", |v| {
        v["type"] == "discovery_failed"
    });
    assert!(
        failed["error"].as_str().unwrap().contains("nodes.txt"),
        "{failed}"
    );
    assert!(failed["retry_in_ms"].as_u64().is_some(), "{failed}");
    // C's task still runs: its stream breaking is reported, not silence.
    c.kill();
    watch.expect("saying that C's stream broke", |v| {
        is(v, "disconnected", &c_addr)
    });

    // C leaves discovery: it is not followed any more; A is untouched.
    write_atomically(&file, &format!("{a_addr}\n"));
    let removed = watch.expect("saying that C is not watched any more", |v| {
        v["type"] == "endpoint_removed"
    });
    assert_eq!(removed["endpoint"], c_addr.as_str(), "{removed}");
}

#[test]
fn a_filter_the_agents_refuse_ends_a_watch_that_runs_discovery_again() {
    // Every agent gets the same filter: refused as invalid by one, it is bad input, and the
    // watch ends (exit 2) rather than watching nothing while discovery runs on.
    let port = free_port();
    let node = format!("wrefuse-{}", std::process::id());
    let addr = format!("127.0.0.13:{port}");
    let _agent = start_agent(None, &node, &addr, &[]);
    let dns = Dnsmasq::start("127.0.0.13 agents.wrefuse.autofs.test\n");
    let name = format!("agents.wrefuse.autofs.test:{port}");
    let mut watch = watch_over_dns(&dns, &name, &["--container", "zz"]);
    let refused = watch.expect("saying that the agent refused the watch", |l| {
        l.starts_with(&format!("node {node} ({addr}): "))
    });
    assert!(
        refused.contains("InvalidArgument: container_id")
            && refused.ends_with("not watched (asking again cannot help)"),
        "{refused}"
    );
    let (code, _) = watch.finish();
    assert_eq!(code, Some(2));
}

#[test]
fn an_agent_listed_only_after_the_round_that_dropped_its_predecessor_is_found_soon() {
    // A headless Service drops a terminating pod's record at once and lists its replacement
    // only when it is ready: the round that stops following the old agent does not see the
    // new one yet. The interval is far away; the watch must look again soon by itself.
    let port = free_port();
    let pid = std::process::id();
    let (steady, moving) = (format!("wsoon-a-{pid}"), format!("wsoon-b-{pid}"));
    let (a_addr, old_addr, new_addr) = (
        format!("127.0.0.15:{port}"),
        format!("127.0.0.16:{port}"),
        format!("127.0.0.17:{port}"),
    );
    let _a = start_agent(None, &steady, &a_addr, &[]);
    let mut old = start_agent(None, &moving, &old_addr, &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.txt");
    write_atomically(&file, &format!("{a_addr}\n{old_addr}\n"));
    let mut watch = watch_over_file(&file, &["--refresh-interval", "1h"]);
    watch.expect("saying that the old agent is watched", |l| {
        l.starts_with(&format!("{moving} connected ({old_addr}, "))
    });

    old.kill();
    watch.expect("saying that the old agent's stream broke", |l| {
        l.starts_with(&format!("node {moving} ({old_addr}): unavailable: "))
    });
    write_atomically(&file, &format!("{a_addr}\n"));
    watch.expect("saying that the old agent is not watched any more", |l| {
        l.starts_with(&format!("agent at {old_addr} ("))
            && l.ends_with("no longer discovered; not watched any more")
    });

    // Only now is the replacement listed: no stream of this watch is failing any more.
    let _new = start_agent(None, &moving, &new_addr, &[]);
    write_atomically(&file, &format!("{a_addr}\n{new_addr}\n"));
    watch.expect("saying that the new agent was discovered", |l| {
        l.starts_with(&format!("agent at {new_addr} (")) && l.ends_with("discovered; watching it")
    });
    watch.expect("saying that the new agent is watched", |l| {
        l.starts_with(&format!("{moving} connected ({new_addr}, "))
    });
}

#[test]
fn an_agent_that_refused_the_watch_is_asked_again_and_followed_once_replaced_in_place() {
    // An older agent without WatchMounts (a fake: no real agent of that age exists) serves
    // the node's address; it is upgraded in place (same address, as with host networking).
    let port = free_port();
    let node = format!("wupgrade-{}", std::process::id());
    let addr = format!("127.0.0.18:{port}");
    let old = tokio::runtime::Runtime::new().unwrap();
    old.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        common::fake_agent::FakeAgent::new(&node)
            .serve_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.txt");
    write_atomically(&file, &format!("{addr}\n"));
    let mut watch = watch_over_file(&file, &["--refresh-interval", "1s"]);
    let refused = watch.expect("saying that the old agent refused the watch", |l| {
        l.starts_with(&format!("node {node} ({addr}): "))
    });
    assert!(
        refused.contains("Unimplemented")
            && refused.ends_with(
                "not watched (asked again every 1s, should its agent be replaced in place)"
            ),
        "{refused}"
    );

    // The upgrade: the old agent stops, the new one serves at the same address.
    drop(old);
    let _new = start_agent(None, &node, &addr, &[]);
    watch.forbidden = Some("Unimplemented".into());
    watch.expect("saying that the new agent is watched", |l| {
        l.starts_with(&format!("{node} connected ({addr}, "))
    });
}
