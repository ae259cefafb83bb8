//! Several real nodes — each a network namespace with its own `autofs-agent` and its own real
//! autofs mounts (one testkit scenario per node) — asked through the real CLI and the library.

mod common;

use std::time::{Duration, Instant};

use autofs_controller::{Collector, CollectorConfig, NodeEndpoint, NodeErrorKind, WatchItem};
use autofs_testkit::cgroup::ContainerCgroup;
use autofs_testkit::{MountSpec, Scenario};
use common::*;
use nix::sys::signal::Signal;

/// A node with its scenario.
struct Host {
    node: Node,
    sc: Scenario,
}

fn host(prefix: &str) -> Host {
    Host {
        sc: Scenario::start_or_panic(),
        node: Node::start(prefix, &[]),
    }
}

fn nodes_flag(hosts: &[&Host]) -> String {
    hosts
        .iter()
        .map(|h| h.node.endpoint())
        .collect::<Vec<_>>()
        .join(",")
}

/// `autofs-controller check --nodes <nodes> --node <node>` plus `rest`.
fn check(nodes: &str, node: &str, rest: &[&str]) -> std::process::Output {
    controller(&[&["check", "--nodes", nodes, "--node", node], rest].concat())
}

#[test]
fn collect_returns_every_mount_of_every_node_under_its_node_name() {
    let mut a = host("collect-a");
    let mut b = host("collect-b");
    let mut c = host("collect-c");
    let a1 = a.sc.mount(MountSpec::indirect().timeout(30)).unwrap();
    let a2 = a.sc.mount(MountSpec::direct()).unwrap();
    let b1 = b.sc.mount(MountSpec::indirect()).unwrap();
    let _req = b.sc.make_interim(&b1, "key", HANG_GUARD).unwrap();
    let c1 = c.sc.mount(MountSpec::indirect()).unwrap();
    let _delegate = c.sc.delegate(&c1).unwrap();
    // The agents scan every 200 ms and reuse a scan up to 1 s old.
    std::thread::sleep(Duration::from_millis(1200));

    let out = controller(&[
        "collect",
        "--nodes",
        &nodes_flag(&[&a, &b, &c]),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["failed"].as_array().unwrap().len(), 0);

    let states = |h: &Host| -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = mounts_of(&doc, h.node.name(), h.sc.mnt_ns())
            .iter()
            .map(|m| {
                (
                    m["mount_id"].as_u64().unwrap(),
                    m["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want_a = vec![
        (u64::from(a1.mount_id), "ACTIVE".to_owned()),
        (u64::from(a2.mount_id), "ACTIVE".to_owned()),
    ];
    want_a.sort();
    assert_eq!(states(&a), want_a);
    assert_eq!(states(&b), [(u64::from(b1.mount_id), "INTERIM".to_owned())]);
    assert_eq!(
        states(&c),
        [(u64::from(c1.mount_id), "ORPHANED".to_owned())]
    );
    // Each node reports under its own name; every node sees every scenario (shared /proc).
    for h in [&a, &b, &c] {
        for other in [&a, &b, &c] {
            assert!(!mounts_of(&doc, h.node.name(), other.sc.mnt_ns()).is_empty());
        }
    }
    let summary = &doc["summary"];
    assert!(summary["INTERIM"].as_u64().unwrap() >= 3, "{summary}");

    // The table names the node, mount point, state and reason, then the summary.
    let out = controller(&["collect", "--nodes", &nodes_flag(&[&a, &b, &c])]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with(b.node.name()) && l.contains(b1.mount_point.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no row for {} in\n{table}", b1.mount_point.display()));
    assert!(
        row.contains("INTERIM") && row.contains("PIPE_NOT_EMPTY"),
        "{row}"
    );
    assert!(table.contains("on 3/3 nodes"), "{table}");
    assert!(!table.contains("PARTIAL"), "{table}");
}

#[test]
fn library_collect_filters_and_names_nodes() {
    let mut a = host("lib-a");
    let mut b = host("lib-b");
    let a1 = a.sc.mount(MountSpec::indirect()).unwrap();
    let b1 = b.sc.mount(MountSpec::indirect()).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let endpoints = vec![
        NodeEndpoint::parse(&a.node.endpoint(), "test").unwrap(),
        NodeEndpoint::parse(&b.node.endpoint(), "test")
            .unwrap()
            .expecting(b.node.name()),
    ];
    let collector = Collector::new(endpoints, CollectorConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(collector.collect(autofs_controller::v1::ListMountsRequest {
        pid: Some(a.sc.init_host_pid()),
        ..Default::default()
    }));
    assert!(
        report.is_complete(),
        "{:?}",
        report.failed().collect::<Vec<_>>()
    );
    for (h, d) in [(&a, &a1), (&b, &b1)] {
        let mounts = report.node_mounts(h.node.name()).unwrap();
        // The pid filter is applied by each agent: only scenario a's namespace.
        assert!(
            mounts.iter().all(|m| m.mnt_ns == a.sc.mnt_ns()),
            "{mounts:?}"
        );
        assert_eq!(
            mounts.iter().any(|m| m.mount_id == d.mount_id),
            h.sc.mnt_ns() == a.sc.mnt_ns()
        );
    }

    // An endpoint whose agent is not the expected node is refused, naming both.
    let wrong = vec![
        NodeEndpoint::parse(&a.node.endpoint(), "test")
            .unwrap()
            .expecting("somebody-else"),
    ];
    let report = rt.block_on(
        Collector::new(wrong, CollectorConfig::default())
            .unwrap()
            .collect(Default::default()),
    );
    let err = report.failed().next().unwrap();
    assert!(
        matches!(err.kind, NodeErrorKind::IdentityMismatch { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("somebody-else") && text.contains(a.node.name()),
        "{text}"
    );
}

#[test]
fn check_verdicts_and_exit_codes() {
    let mut ok = host("check-ok");
    let mut interim = host("check-interim");
    let mut orphan = host("check-orphan");
    let cgroup = ContainerCgroup::enter(ok.sc.init_host_pid());
    ok.sc.mount(MountSpec::indirect()).unwrap();
    let i1 = interim.sc.mount(MountSpec::indirect()).unwrap();
    let _req = interim.sc.make_interim(&i1, "key", HANG_GUARD).unwrap();
    let o1 = orphan.sc.mount(MountSpec::indirect()).unwrap();
    let _delegate = orphan.sc.delegate(&o1).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let nodes = nodes_flag(&[&ok, &interim, &orphan]);

    let pid = ok.sc.init_host_pid().to_string();
    let out = check(&nodes, ok.node.name(), &["--pid", &pid]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is migratable now"));

    let out = check(
        &nodes,
        ok.node.name(),
        &["--pod", &cgroup.pod_uid, "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["dumpable"], true);
    assert_eq!(doc["node"], ok.node.name());
    assert_eq!(doc["mounts_checked"], 1);
    let out = check(
        &nodes,
        ok.node.name(),
        &["--container", &cgroup.container_id[..16]],
    );
    assert_eq!(out.status.code(), Some(0));

    let pid = interim.sc.init_host_pid().to_string();
    let out = check(&nodes, interim.node.name(), &["--pid", &pid]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(i1.mount_point.to_str().unwrap()), "{text}");
    assert!(text.contains("INTERIM (PIPE_NOT_EMPTY)"), "{text}");
    assert!(text.contains("Try again later"), "{text}");
    // The agent's --queue-poll-interval (500ms) and --max-scan-age (1s) defaults.
    assert!(text.contains("retry in 1000 ms"), "{text}");

    let pid = orphan.sc.init_host_pid().to_string();
    let out = check(
        &nodes,
        orphan.node.name(),
        &["--pid", &pid, "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["dumpable"], false);
    assert_eq!(doc["retry_after_ms"], 0);
    assert_eq!(doc["blocking"][0]["reason"], "READ_END_DELEGATED");
    assert_eq!(doc["blocking"][0]["mount_id"], o1.mount_id);

    // Errors: an unknown node, a pid the agent refuses, a missing target.
    let out = check(&nodes, "no-such-node", &["--pid", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-node") && err.contains("3 discovered"),
        "{err}"
    );
    let out = check(&nodes, ok.node.name(), &["--pid", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(ok.node.name()) && err.contains("InvalidArgument"),
        "{err}"
    );
    let out = check(&nodes, ok.node.name(), &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dead_black_holed_and_slow_nodes_fail_within_the_deadline_and_the_rest_answer() {
    let mut healthy1 = host("fault-ok1");
    let mut healthy2 = host("fault-ok2");
    let h1 = healthy1.sc.mount(MountSpec::indirect()).unwrap();
    let h2 = healthy2.sc.mount(MountSpec::indirect()).unwrap();
    let mut dead = Node::start("fault-dead", &[]);
    let hole = Node::start("fault-hole", &[]);
    let slow = Node::start("fault-slow", &[]);
    dead.agent.kill();
    hole.ns.black_hole();
    slow.agent.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1200));

    let nodes = [
        healthy1.node.endpoint(),
        dead.endpoint(),
        hole.endpoint(),
        slow.endpoint(),
        healthy2.node.endpoint(),
    ]
    .join(",");
    let started = Instant::now();
    let out = controller(&[
        "collect",
        "--nodes",
        &nodes,
        "--timeout",
        "5s",
        "--output",
        "json",
    ]);
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial results exit 3; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A hang guard, not a timing: a node that blocked the answer would hold it for the TCP
    // timeout (a black hole's SYN retries: over two minutes). The deadline itself is proved by
    // the silent nodes' "no answer within 5s" below, whatever the machine's speed.
    assert!(
        took < Duration::from_secs(60),
        "took {took:?} with a 5 s deadline"
    );
    let doc = json(&out);
    assert_eq!(doc["complete"], false);
    let mut failed: Vec<&str> = doc["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["endpoint"].as_str().unwrap())
        .collect();
    failed.sort();
    let mut want = vec![dead.endpoint(), hole.endpoint(), slow.endpoint()];
    want.sort();
    assert_eq!(failed, want);
    for f in doc["failed"].as_array().unwrap() {
        let e = f["error"].as_str().unwrap();
        assert!(e.contains(f["endpoint"].as_str().unwrap()), "{e}");
    }
    let by_endpoint = |ep: &str| {
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["endpoint"] == ep)
            .unwrap()
            .clone()
    };
    // The dead node is refused fast and retried; the silent ones run into the deadline.
    let dead_n = by_endpoint(&dead.endpoint());
    assert!(
        dead_n["error"].as_str().unwrap().contains("unavailable"),
        "{dead_n}"
    );
    assert!(dead_n["attempts"].as_u64().unwrap() > 1, "{dead_n}");
    for n in [by_endpoint(&hole.endpoint()), by_endpoint(&slow.endpoint())] {
        assert!(
            n["error"].as_str().unwrap().contains("no answer within 5s"),
            "{n}"
        );
    }
    for (h, d) in [(&healthy1, &h1), (&healthy2, &h2)] {
        let mine = mounts_of(&doc, h.node.name(), h.sc.mnt_ns());
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["mount_id"], d.mount_id);
    }
    let table = controller(&["collect", "--nodes", &nodes, "--timeout", "5s"]);
    assert_eq!(table.status.code(), Some(3));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("on 2/5 nodes") && text.contains("PARTIAL: 3 nodes failed"),
        "{text}"
    );
    assert!(text.contains(&hole.endpoint()), "{text}");

    // `nodes` shows reachability the same way.
    let out = controller(&["nodes", "--nodes", &nodes, "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(healthy1.node.name()) && text.contains("FAILED"),
        "{text}"
    );
}

/// Waits for an event for which `want(node, mnt_ns, mount_id)` holds; returns its sequence and
/// the items seen before it.
fn next_event_any(
    rt: &tokio::runtime::Runtime,
    stream: &mut autofs_controller::WatchStream,
    want: &mut dyn FnMut(&str, u64, u32) -> bool,
) -> (u64, Vec<WatchItem>) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = rt
            .block_on(async { tokio::time::timeout(left, stream.next()).await })
            .unwrap_or_else(|_| panic!("no awaited event within {HANG_GUARD:?}; saw {seen:#?}"))
            .unwrap();
        if let WatchItem::Event { event, .. } = &item
            && let Some(m) = &event.mount
            && want(&event.node, m.mnt_ns, m.mount_id)
        {
            return (event.sequence, seen);
        }
        seen.push(item);
    }
}

#[test]
fn watch_merges_nodes_and_recovers_a_node_whose_agent_restarts() {
    let mut a = host("watch-a");
    let mut b = host("watch-b");
    let a1 = a.sc.mount(MountSpec::indirect()).unwrap();
    let b1 = b.sc.mount(MountSpec::indirect()).unwrap();
    let endpoints = [&a, &b]
        .iter()
        .map(|h| NodeEndpoint::parse(&h.node.endpoint(), "test").unwrap())
        .collect();
    let config = CollectorConfig {
        backoff: autofs_controller::BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        },
        ..CollectorConfig::default()
    };
    let collector = Collector::new(endpoints, config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut stream = {
        let _in_runtime = rt.enter();
        collector.watch(Default::default())
    };

    // The initial snapshots of both nodes, in whatever order they interleave.
    let mut first: Vec<(String, u64)> = Vec::new();
    while first.len() < 2 {
        let mut seen_a = false;
        let (seq, _) = next_event_any(&rt, &mut stream, &mut |node, ns, id| {
            let hit = (node == a.node.name() && ns == a.sc.mnt_ns() && id == a1.mount_id)
                || (node == b.node.name() && ns == b.sc.mnt_ns() && id == b1.mount_id);
            seen_a = node == a.node.name();
            hit && !first.iter().any(|(n, _)| n == node)
        });
        let node = if seen_a { a.node.name() } else { b.node.name() };
        assert!(seq >= 1);
        first.push((node.to_owned(), seq));
    }

    // Node b's agent dies and comes back on the same address.
    b.node.agent.restart().unwrap();
    let (seq, seen) = next_event_any(&rt, &mut stream, &mut |n, ns, id| {
        n == b.node.name() && ns == b.sc.mnt_ns() && id == b1.mount_id
    });
    assert!(
        seen.iter().any(|i| matches!(i, WatchItem::Disconnected { error, .. } if error.endpoint == b.node.endpoint())),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|i| matches!(i, WatchItem::Connected { info, .. } if info.node == b.node.name())),
        "{seen:#?}"
    );
    // A new stream: its snapshot starts the sequence again.
    assert!(
        seq <= 100,
        "sequence {seq} should restart with the new stream"
    );

    // Node a kept streaming: a new mount there shows up.
    let a2 = a.sc.mount(MountSpec::direct()).unwrap();
    next_event_any(&rt, &mut stream, &mut |n, ns, id| {
        n == a.node.name() && ns == a.sc.mnt_ns() && id == a2.mount_id
    });
}

#[test]
fn watch_cli_prints_node_and_sequence() {
    let mut a = host("watchcli");
    let a1 = a.sc.mount(MountSpec::indirect()).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = controller(&[
        "watch",
        "--nodes",
        &a.node.endpoint(),
        "--pid",
        &a.sc.init_host_pid().to_string(),
        "--max-events",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} connected", a.node.name())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} #1 ADDED {} ACTIVE",
            a.node.name(),
            a1.mount_point.display()
        )),
        "{text}"
    );
}

#[test]
fn file_discovery_reads_comments_and_blank_lines() {
    let a = host("file-a");
    let b = host("file-b");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.txt");
    std::fs::write(
        &file,
        format!(
            "# agents of the test cluster\n{}\n\n   {}   # second rack\n",
            a.node.endpoint(),
            b.node.endpoint()
        ),
    )
    .unwrap();
    let out = controller(&[
        "nodes",
        "--nodes-file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    let names: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, [a.node.name(), b.node.name()]);
    assert_eq!(doc[0]["info"]["api_major"], 1);
    assert_eq!(doc[0]["info"]["pipe_ino_supported"], true);

    // Listing an endpoint in the file and on the command line is a duplicate.
    let out = controller(&[
        "nodes",
        "--nodes-file",
        file.to_str().unwrap(),
        "--nodes",
        &a.node.endpoint(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("duplicate") && err.contains(&a.node.endpoint()),
        "{err}"
    );
}

#[test]
fn check_wait_returns_as_soon_as_the_workload_is_dumpable_and_says_why_otherwise() {
    let mut interim = host("wait-interim");
    let mut orphan = host("wait-orphan");
    let i1 = interim.sc.mount(MountSpec::indirect()).unwrap();
    let _req = interim.sc.make_interim(&i1, "key", HANG_GUARD).unwrap();
    let o1 = orphan.sc.mount(MountSpec::indirect()).unwrap();
    orphan.sc.close_read(&o1).unwrap();
    let nodes = nodes_flag(&[&interim, &orphan]);

    // A blocker that cannot clear: the wait ends at once, exit 1, whatever the deadline.
    let pid = orphan.sc.init_host_pid().to_string();
    let out = check(
        &nodes,
        orphan.node.name(),
        &["--pid", &pid, "--wait", "1h", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "WILL_NOT_CLEAR");
    assert_eq!(doc["blocking"][0]["mount_id"], o1.mount_id);

    // A daemon that does not answer within the wait: exit 1 at the deadline, blocker listed.
    // The deadline must leave time for the agent's first verdict (else: no answer, exit 2):
    // 15 s, as a controller started under software emulation (`scripts/vm-run`) took over 2 s.
    let pid = interim.sc.init_host_pid().to_string();
    let out = check(
        &nodes,
        interim.node.name(),
        &["--pid", &pid, "--wait", "15s", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "DEADLINE_EXCEEDED");
    assert_eq!(doc["blocking"][0]["state"], "INTERIM");

    // The daemon answers while the controller waits: exit 0, with progress lines.
    let mut waiting = controller_command(&[
        "check",
        "--nodes",
        &nodes,
        "--node",
        interim.node.name(),
        "--pid",
        &pid,
        "--wait",
        "60s",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Answer only once the controller has seen the blocker (its first progress line).
    let mut stdout = std::io::BufReader::new(waiting.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.starts_with("[1] "), "{first}");
    assert!(first.contains("waiting"), "{first}");
    interim
        .sc
        .read_packet_with(&i1.name, autofs_testkit::Answer::Ready, HANG_GUARD)
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.contains("is migratable now: checkpoint it"),
        "{first}{rest}"
    );
    assert_eq!(waiting.wait().unwrap().code(), Some(0));
}

#[test]
fn collect_from_an_agent_that_cannot_see_its_whole_node_is_partial() {
    // An agent without hostPID sees only its own pid namespace: it answers, with a list that
    // may lack every mount namespace of the node. The cluster answer must not look complete.
    let ns = NetNs::new();
    let mut agent = agent_builder()
        .node_name(&format!("blind-{}", ns.n))
        .listen(&ns.endpoint())
        .netns(&ns.name)
        .wrapper(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .start();
    agent.wait_first_scan();
    let nodes = ns.endpoint();
    let out = controller(&["collect", "--nodes", &nodes, "--output", "json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let doc = json(&out);
    assert_eq!(doc["complete"], false, "{doc:#}");
    assert_eq!(doc["nodes"][0]["ok"], true, "{doc:#}");
    assert_eq!(doc["nodes"][0]["view_restricted"], true, "{doc:#}");
    let out = controller(&["collect", "--nodes", &nodes]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!(
            "PARTIAL: node blind-{} could not see everything: ",
            ns.n
        )),
        "{table}"
    );
    assert!(table.contains("hostPID"), "{table}");
}
