//! Output for people (aligned tables) and programs (JSON), shared by the CLI and embedders.

use std::fmt::Write as _;

use autofs_api::v1;
use autofs_cli::table::render as table;
use serde_json::{Value, json};

use crate::collector::{WaitEnd, WaitOutcome};
use crate::endpoint::NodeEndpoint;
use crate::error::fmt_duration;
use crate::follow::WaitEvent;
use crate::report::{CheckOutcome, ClusterReport, NodeStatus, reason_name, state_name};
use crate::watch::WatchItem;

/// `container 0123456789ab / pod 5f1c…`, or `-`.
fn owner(m: &v1::MountReport) -> String {
    let mut parts = Vec::new();
    if !m.container_id.is_empty() {
        let short: String = m.container_id.chars().take(12).collect();
        parts.push(format!("container {short}"));
    }
    if !m.pod_uid.is_empty() {
        parts.push(format!("pod {}", m.pod_uid));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" / ")
    }
}

/// The `collect` table, then the per-state summary and the failed nodes.
pub fn collect_table(report: &ClusterReport) -> String {
    let rows: Vec<Vec<String>> = report
        .mounts()
        .map(|m| {
            vec![
                m.node.clone(),
                m.mount_point.clone(),
                state_name(m.state),
                reason_name(m.reason),
                owner(m),
            ]
        })
        .collect();
    let mut out = table(
        &["NODE", "MOUNT POINT", "STATE", "REASON", "CONTAINER/POD"],
        &rows,
    );
    let answered = report.nodes.iter().filter(|n| n.result.is_ok()).count();
    let summary: Vec<String> = report
        .summary()
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} mounts on {answered}/{} nodes in {}{}{}",
        rows.len(),
        report.nodes.len(),
        fmt_duration(report.elapsed),
        if summary.is_empty() { "" } else { ": " },
        summary.join(", ")
    );
    for n in report.stale() {
        let _ = writeln!(
            out,
            "STALE: node {}: its current scan has stalled; these mounts come from its last good scan, {} s old",
            n.label(),
            n.scan.map_or(0, |s| s.age.as_secs())
        );
    }
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() {
        let nodes = if failed.len() == 1 { "node" } else { "nodes" };
        let _ = writeln!(out, "PARTIAL: {} {nodes} failed:", failed.len());
        for e in failed {
            let _ = writeln!(out, "  {e}");
        }
    }
    for (node, problems) in report.restricted() {
        let _ = writeln!(
            out,
            "PARTIAL: node {node} could not see everything: {}",
            problems.join("; ")
        );
    }
    for gap in &report.coverage_unverified {
        let _ = writeln!(
            out,
            "PARTIAL: coverage unverified, nodes may be missing: {gap}"
        );
    }
    out
}

/// A mount report as JSON: the `autofs.v1.MountReport` message in the API's one JSON shape
/// ([`autofs_api::json`]), the same as the agent's `scan --json` writes.
pub fn mount_json(m: &v1::MountReport) -> Value {
    to_json(m)
}

/// A message as a JSON tree. Messages are strings, numbers, lists and nested messages, so
/// serde_json cannot refuse them.
fn to_json(message: &impl serde::Serialize) -> Value {
    serde_json::to_value(message).expect("an autofs.v1 message always serializes")
}

/// `message` as a JSON object, with `extra` fields set over it.
fn json_with(message: &impl serde::Serialize, extra: Value) -> Value {
    let mut doc = to_json(message);
    if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    doc
}

/// The JSON document of a cluster report without its mounts.
fn collect_head(report: &ClusterReport) -> serde_json::Map<String, Value> {
    let nodes: Vec<Value> = report
        .nodes
        .iter()
        .map(|n| {
            json!({
                "endpoint": n.endpoint.address,
                "node": n.node_name(),
                "ok": n.result.is_ok(),
                "mounts": n.result.as_ref().map(Vec::len).ok(),
                "error": n.result.as_ref().err().map(ToString::to_string),
                "attempts": n.attempts,
                "elapsed_ms": n.elapsed.as_millis() as u64,
                "agent_version": n.info.as_ref().map(|i| i.agent_version.clone()),
                "view_restricted": n.info.as_ref().map(|i| i.view_restricted),
                "scan_age_ms": n.scan.map(|s| u64::try_from(s.age.as_millis()).unwrap_or(u64::MAX)),
                "stale": n.scan.map(|s| s.stale),
            })
        })
        .collect();
    let failed: Vec<Value> = report
        .failed()
        .map(|e| json!({"endpoint": e.endpoint, "node": e.node, "error": e.to_string()}))
        .collect();
    let mut doc = serde_json::Map::new();
    doc.insert("complete".into(), json!(report.is_complete()));
    doc.insert(
        "elapsed_ms".into(),
        json!(report.elapsed.as_millis() as u64),
    );
    doc.insert("summary".into(), json!(report.summary()));
    doc.insert("nodes".into(), Value::Array(nodes));
    doc.insert("failed".into(), Value::Array(failed));
    doc.insert(
        "coverage_unverified".into(),
        json!(report.coverage_unverified),
    );
    doc
}

/// The whole cluster report as one JSON document: `complete`, `elapsed_ms`, `summary`,
/// `nodes` (one entry per endpoint), `failed`, `coverage_unverified` (why nodes may be
/// missing; `[]` when no gap is known) and `mounts` (see [`mount_json`]).
pub fn collect_json(report: &ClusterReport) -> Value {
    let mut doc = collect_head(report);
    doc.insert(
        "mounts".into(),
        report.mounts().map(mount_json).collect::<Vec<_>>().into(),
    );
    Value::Object(doc)
}

/// [`collect_json`] written piece by piece, one mount at a time: a 1,000-node report never
/// exists twice in memory as a JSON tree.
///
/// # Errors
///
/// The [`std::io::Error`] of the first write to `out` that fails (a closed pipe, a full disk);
/// what was written before it stays written.
pub fn write_collect_json(
    report: &ClusterReport,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let head = serde_json::to_string(&collect_head(report))?;
    // `{...}` → `{...,"mounts":[` + mounts + `]}`.
    out.write_all(&head.as_bytes()[..head.len() - 1])?;
    out.write_all(b",\"mounts\":[")?;
    for (i, m) in report.mounts().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, m)?;
    }
    out.write_all(b"]}\n")
}

/// The `check` answer for people.
pub fn check_text(what: &str, c: &CheckOutcome) -> String {
    let r = &c.response;
    let mut out = String::new();
    if r.stale {
        let _ = writeln!(
            out,
            "warning: node {}'s current scan has stalled; this answer comes from its last good scan, {} s old",
            r.node,
            r.scan_age_ms / 1000
        );
    }
    if r.dumpable {
        let _ = writeln!(
            out,
            "{what} on node {} is migratable now: {} autofs mounts checked, none blocks",
            r.node, r.mounts_checked
        );
        external_lines(&mut out, &r.external);
        return out;
    }
    let _ = writeln!(
        out,
        "{what} on node {} is NOT migratable now: {} of {} autofs mounts block the dump{}",
        r.node,
        r.blocking.len(),
        r.mounts_checked,
        if r.blocking.is_empty() { "" } else { ":" }
    );
    for m in &r.blocking {
        let _ = writeln!(
            out,
            "  {}  {} ({}): {}",
            m.mount_point,
            state_name(m.state),
            reason_name(m.reason),
            m.message
        );
    }
    task_lines(&mut out, &r.blocking_tasks);
    external_lines(&mut out, &r.external);
    if r.retry_after_ms > 0 {
        let _ = writeln!(
            out,
            "only pending requests block: retry in {} ms",
            r.retry_after_ms
        );
    } else {
        let _ = writeln!(out, "retrying will not help until what blocks is fixed");
    }
    out
}

/// The tasks of the dumped tree that stop the dump by themselves, one line each.
fn task_lines(out: &mut String, tasks: &[v1::TaskBlocker]) {
    if tasks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{} task(s) of the tree CRIU dumps stop the dump:",
        tasks.len()
    );
    for t in tasks {
        let _ = writeln!(
            out,
            "  pid {} ({}): {}: {}",
            t.pid,
            t.comm,
            autofs_api::json::name::<v1::TaskReason>(t.reason),
            t.message
        );
    }
}

/// The mounts CRIU skips as external binds (`--external`), one line each, with the verdict a
/// bare dump would have met.
fn external_lines(out: &mut String, external: &[v1::MountReport]) {
    if external.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "skipped as external by CRIU (--external mnt[PATH]), not blocking: {} autofs mount(s):",
        external.len()
    );
    for m in external {
        let _ = writeln!(
            out,
            "  {}  (root {}; a bare dump would meet {})",
            m.mount_point,
            m.root,
            state_name(m.state)
        );
    }
}

/// The `check` answer as JSON: the `CheckMigratableResponse` and the `endpoint` asked.
pub fn check_json(c: &CheckOutcome) -> Value {
    json_with(&c.response, json!({"endpoint": c.endpoint.address}))
}

/// One progress line of `check --wait`: the verdict at that moment.
pub fn wait_progress(what: &str, m: &v1::WaitMigratableResponse) -> String {
    let mut out = format!(
        "[{}] {what} on node {}: {}\n",
        m.sequence, m.node, m.message
    );
    for b in &m.blocking {
        let _ = writeln!(
            out,
            "  {}  {} ({}), {} queued request(s)",
            b.mount_point,
            state_name(b.state),
            reason_name(b.reason),
            b.pending_packets
        );
    }
    for t in &m.blocking_tasks {
        let _ = writeln!(
            out,
            "  pid {} ({}): {}",
            t.pid,
            t.comm,
            autofs_api::json::name::<v1::TaskReason>(t.reason)
        );
    }
    out
}

/// An error and its sources, `: `-separated, leaving out a source whose text the message
/// before it already quotes.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in std::iter::successors(Some(e), |e| e.source()) {
        let s = cause.to_string();
        if text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

/// The lines of one event of `check --wait`: a verdict as [`wait_progress`] writes it, or
/// what the wait did to follow the node's agent (lost, not found yet, found: moved from one
/// endpoint to another), each line starting with `node NAME:`.
pub fn wait_event(what: &str, event: &WaitEvent<'_>) -> String {
    match *event {
        WaitEvent::Verdict(m) => wait_progress(what, m),
        WaitEvent::Lost { node, error } => format!(
            "node {node}: its agent cannot be asked at {}: {}; discovering the node's agent again\n",
            error.endpoint,
            error_text(&error.kind)
        ),
        WaitEvent::NotFound {
            node,
            error,
            retry_in,
        } => format!(
            "node {node}: not found yet: {}; discovering again in {}\n",
            error_text(error),
            fmt_duration(retry_in)
        ),
        WaitEvent::Found {
            node,
            from,
            to,
            previous_instance,
            instance,
        } => {
            let instances = match (previous_instance, instance) {
                (Some(old), Some(new)) if old == new => {
                    format!(" (the same agent, instance {new})")
                }
                (Some(old), Some(new)) => format!(" (a new agent: instance {old} -> {new})"),
                (None, Some(new)) => format!(" (agent instance {new})"),
                (_, None) => String::new(),
            };
            match from {
                Some(from) if from != to => format!(
                    "node {node}: its agent moved from {from} to {to}{instances}; waiting for {what} there\n"
                ),
                Some(_) => format!(
                    "node {node}: its agent answers again at {to}{instances}; waiting for {what} there\n"
                ),
                None => {
                    format!("node {node}: found at {to}{instances}; waiting for {what} there\n")
                }
            }
        }
    }
}

/// The closing lines of `check --wait`.
pub fn wait_text(what: &str, w: &WaitOutcome, waited: std::time::Duration) -> String {
    let r = &w.last;
    match w.end {
        WaitEnd::Dumpable => {
            let mut out = format!(
                "{what} on node {} is migratable now: checkpoint it ({} autofs mounts, none blocks)\n",
                r.node, r.mounts_checked
            );
            external_lines(&mut out, &r.external);
            out
        }
        WaitEnd::WillNotClear => format!(
            "{what} on node {} will not become migratable by waiting: {}\n",
            r.node, r.message
        ),
        WaitEnd::StillBlocked if r.blocking_tasks.is_empty() => format!(
            "{what} on node {} is still NOT migratable after {}: {} mount(s) still block\n",
            r.node,
            fmt_duration(waited),
            r.blocking.len()
        ),
        WaitEnd::StillBlocked => format!(
            "{what} on node {} is still NOT migratable after {}: {} mount(s) and {} task(s) still block\n",
            r.node,
            fmt_duration(waited),
            r.blocking.len(),
            r.blocking_tasks.len()
        ),
    }
}

/// `check --wait --output json`: one document, the last `WaitMigratableResponse` with the
/// `endpoint` asked, how the wait ended (`outcome`: `DUMPABLE`, `WILL_NOT_CLEAR` or
/// `DEADLINE_EXCEEDED`), its length (`wait_ms`) and the number of `messages` received.
pub fn wait_json(w: &WaitOutcome, waited: std::time::Duration) -> Value {
    let r = &w.last;
    json_with(
        r,
        json!({
            "endpoint": w.endpoint.address,
            "outcome": match w.end {
                WaitEnd::Dumpable => "DUMPABLE",
                WaitEnd::WillNotClear => "WILL_NOT_CLEAR",
                WaitEnd::StillBlocked => "DEADLINE_EXCEEDED",
            },
            "wait_ms": u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            "messages": r.sequence,
            "agent_moves": w.moves.iter().map(|m| json!({
                "from": m.from,
                "to": m.to,
                "previous_instance": m.previous_instance,
                "instance": m.instance,
            })).collect::<Vec<_>>(),
        }),
    )
}

/// The `nodes` table.
pub fn nodes_table(nodes: &[NodeStatus]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let i = n.info.as_ref();
            let text = |f: fn(&v1::GetNodeInfoResponse) -> String| i.map_or("-".into(), f);
            vec![
                n.node_name().unwrap_or("-").to_owned(),
                n.endpoint.address.clone(),
                text(|i| i.agent_version.clone()),
                text(|i| format!("v{}", i.api_major)),
                text(|i| i.kernel_release.clone()),
                text(|i| yes_no(i.pipe_ino_supported)),
                text(|i| yes_no(i.can_read_fds)),
                match &n.result {
                    Ok(()) => format!("ok ({} ms)", n.elapsed.as_millis()),
                    Err(e) => format!("FAILED: {}", e.kind),
                },
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "ENDPOINT",
            "VERSION",
            "API",
            "KERNEL",
            "PIPE_INO",
            "READ_FDS",
            "REACHABLE",
        ],
        &rows,
    )
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The `nodes` answer as JSON.
pub fn nodes_json(nodes: &[NodeStatus]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|n| {
                json!({
                    "endpoint": n.endpoint.address, "node": n.node_name(),
                    "reachable": n.result.is_ok(),
                    "error": n.result.as_ref().err().map(ToString::to_string),
                    "info": n.info.as_ref().map(to_json),
                })
            })
            .collect(),
    )
}

/// One line per watch item: `node #sequence KIND mount_point STATE REASON`.
pub fn watch_line(item: &WatchItem) -> String {
    match item {
        WatchItem::Connected { endpoint, info } => format!(
            "{} connected ({}, agent {})",
            info.node, endpoint.address, info.agent_version
        ),
        WatchItem::Event { event, .. } => {
            let kind = autofs_api::json::name::<v1::mount_event::Kind>(event.kind);
            match &event.mount {
                Some(m) => format!(
                    "{} #{} {kind} {} {} {}",
                    event.node,
                    event.sequence,
                    m.mount_point,
                    state_name(m.state),
                    reason_name(m.reason)
                ),
                None => format!("{} #{} {kind} (no mount)", event.node, event.sequence),
            }
        }
        WatchItem::NotReady { error } => format!("{error}; not watched"),
        WatchItem::Refused {
            error,
            asked_again_in: None,
        } => format!("{error}; not watched (asking again cannot help)"),
        WatchItem::Refused {
            error,
            asked_again_in: Some(every),
        } => format!(
            "{error}; not watched (asked again every {}, should its agent be replaced in place)",
            fmt_duration(*every)
        ),
        WatchItem::Disconnected { error, retry_in } => {
            format!("{error}; reconnecting in {}", fmt_duration(*retry_in))
        }
        WatchItem::EndpointAdded { endpoint } => {
            format!("{} discovered; watching it", endpoint_text(endpoint))
        }
        WatchItem::EndpointRemoved { endpoint } => format!(
            "{} no longer discovered; not watched any more",
            endpoint_text(endpoint)
        ),
        WatchItem::DiscoveryFailed { error, retry_in } => format!(
            "discovery failed: {}; still watching the agents found before, discovering again in {}",
            error_text(error.as_ref()),
            fmt_duration(*retry_in)
        ),
    }
}

/// `agent at ADDRESS (node N, ORIGIN)` for watch lines.
fn endpoint_text(endpoint: &NodeEndpoint) -> String {
    match &endpoint.expected_node {
        Some(node) => format!(
            "agent at {} (node {node}, {})",
            endpoint.address, endpoint.origin
        ),
        None => format!("agent at {} ({})", endpoint.address, endpoint.origin),
    }
}

/// One watch item as a JSON line.
pub fn watch_json(item: &WatchItem) -> Value {
    match item {
        WatchItem::Connected { endpoint, info } => json!({
            "type": "connected", "endpoint": endpoint.address, "node": info.node,
            "info": to_json(info),
        }),
        WatchItem::Event { endpoint, event } => json_with(
            event,
            json!({"type": "event", "endpoint": endpoint.address}),
        ),
        WatchItem::NotReady { error } => json!({
            "type": "not_ready", "endpoint": error.endpoint, "node": error.node,
            "error": error.to_string(),
        }),
        WatchItem::Refused {
            error,
            asked_again_in,
        } => json!({
            "type": "refused", "endpoint": error.endpoint, "node": error.node,
            "error": error.to_string(),
            "asked_again_in_ms": asked_again_in.map(|d| d.as_millis() as u64),
        }),
        WatchItem::Disconnected { error, retry_in } => json!({
            "type": "disconnected", "endpoint": error.endpoint, "node": error.node,
            "error": error.to_string(), "retry_in_ms": retry_in.as_millis() as u64,
        }),
        WatchItem::EndpointAdded { endpoint } => json!({
            "type": "endpoint_added", "endpoint": endpoint.address,
            "node": endpoint.expected_node, "origin": endpoint.origin,
        }),
        WatchItem::EndpointRemoved { endpoint } => json!({
            "type": "endpoint_removed", "endpoint": endpoint.address,
            "node": endpoint.expected_node, "origin": endpoint.origin,
        }),
        WatchItem::DiscoveryFailed { error, retry_in } => json!({
            "type": "discovery_failed", "error": error_text(error.as_ref()),
            "retry_in_ms": retry_in.as_millis() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::NodeEndpoint;
    use crate::report::NodeResult;

    #[test]
    fn a_wait_says_where_it_followed_the_node() {
        let move_line = |from: Option<&str>, old: Option<&str>, new: Option<&str>| {
            wait_event(
                "pod p",
                &WaitEvent::Found {
                    node: "w3",
                    from,
                    to: "10.0.0.2:1",
                    previous_instance: old,
                    instance: new,
                },
            )
        };
        assert_eq!(
            move_line(Some("10.0.0.1:1"), Some("a"), Some("b")),
            "node w3: its agent moved from 10.0.0.1:1 to 10.0.0.2:1 (a new agent: instance a -> b); waiting for pod p there\n"
        );
        assert_eq!(
            move_line(Some("10.0.0.2:1"), Some("b"), Some("b")),
            "node w3: its agent answers again at 10.0.0.2:1 (the same agent, instance b); waiting for pod p there\n"
        );
        assert_eq!(
            move_line(None, None, None),
            "node w3: found at 10.0.0.2:1; waiting for pod p there\n"
        );
        let outcome = WaitOutcome {
            endpoint: NodeEndpoint::parse("10.0.0.2:1", "t").unwrap(),
            end: WaitEnd::Dumpable,
            last: v1::WaitMigratableResponse {
                node: "w3".into(),
                dumpable: true,
                sequence: 2,
                ..Default::default()
            },
            moves: vec![crate::AgentMove {
                from: "10.0.0.1:1".into(),
                to: "10.0.0.2:1".into(),
                previous_instance: Some("a".into()),
                instance: None,
            }],
        };
        let doc = wait_json(&outcome, std::time::Duration::from_secs(1));
        assert_eq!(doc["endpoint"], "10.0.0.2:1");
        assert_eq!(
            doc["agent_moves"],
            json!([{"from": "10.0.0.1:1", "to": "10.0.0.2:1", "previous_instance": "a", "instance": null}])
        );
    }

    #[test]
    fn streamed_json_equals_the_json_tree() {
        let mount = v1::MountReport {
            node: "n1".into(),
            mount_point: "/a b".into(),
            state: v1::MountState::Interim as i32,
            ..Default::default()
        };
        let report = ClusterReport {
            nodes: vec![NodeResult {
                endpoint: NodeEndpoint::parse("10.0.0.1:1", "t").unwrap(),
                info: None,
                result: Ok(vec![mount.clone(), mount]),
                attempts: 1,
                elapsed: std::time::Duration::from_millis(3),
                scan: Some(crate::ScanAge {
                    age: std::time::Duration::from_millis(42_500),
                    stale: true,
                }),
            }],
            elapsed: std::time::Duration::from_millis(5),
            coverage_unverified: Vec::new(),
        };
        let mut out = Vec::new();
        write_collect_json(&report, &mut out).unwrap();
        let streamed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(streamed, collect_json(&report));
        assert_eq!(streamed["mounts"][1]["state"], "INTERIM");
        assert_eq!(streamed["summary"]["INTERIM"], 2);
        assert_eq!(streamed["nodes"][0]["stale"], true);
        assert_eq!(streamed["nodes"][0]["scan_age_ms"], 42_500);
        assert!(
            collect_table(&report).contains(
                "STALE: node 10.0.0.1:1: its current scan has stalled; these mounts come from its last good scan, 42 s old\n"
            ),
            "{}",
            collect_table(&report)
        );
    }

    #[test]
    fn a_check_blocked_by_tasks_alone_names_them() {
        let outcome = CheckOutcome {
            endpoint: NodeEndpoint::parse("10.0.0.1:1", "t").unwrap(),
            response: v1::CheckMigratableResponse {
                dumpable: false,
                node: "n1".into(),
                mounts_checked: 0,
                blocking_tasks: vec![v1::TaskBlocker {
                    pid: 42,
                    tid: 42,
                    comm: "automount".into(),
                    reason: v1::TaskReason::PacketModePipe as i32,
                    fd: 6,
                    pipe_ino: 900,
                    message: "The packetized mode for pipes is not supported yet".into(),
                }],
                ..Default::default()
            },
        };
        let text = check_text("pod p", &outcome);
        assert!(
            text.contains(
                "pod p on node n1 is NOT migratable now: 0 of 0 autofs mounts block the dump\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("1 task(s) of the tree CRIU dumps stop the dump:\n  pid 42 (automount): PACKET_MODE_PIPE: The packetized mode for pipes is not supported yet\n"),
            "{text}"
        );
        assert!(
            text.ends_with("retrying will not help until what blocks is fixed\n"),
            "{text}"
        );
        let json = check_json(&outcome);
        assert_eq!(json["blocking_tasks"][0]["reason"], "PACKET_MODE_PIPE");
        assert_eq!(json["blocking_tasks"][0]["pipe_ino"], 900);
    }

    #[test]
    fn a_stale_check_answer_says_so() {
        let outcome = CheckOutcome {
            endpoint: NodeEndpoint::parse("10.0.0.1:1", "t").unwrap(),
            response: v1::CheckMigratableResponse {
                dumpable: true,
                node: "n1".into(),
                scan_age_ms: 42_500,
                stale: true,
                ..Default::default()
            },
        };
        let text = check_text("pod p", &outcome);
        assert!(
            text.starts_with("warning: node n1's current scan has stalled; this answer comes from its last good scan, 42 s old"),
            "{text}"
        );
        assert_eq!(check_json(&outcome)["stale"], true);
    }

    #[test]
    fn every_document_writes_a_mount_report_in_the_order_scan_json_does() {
        let mount = v1::MountReport {
            node: "n1".into(),
            mount_point: "/home".into(),
            state: v1::MountState::Interim as i32,
            ..Default::default()
        };
        // The agent's `scan --json` serializes the message straight: declaration order.
        let scan_json = serde_json::to_string(&mount).unwrap();
        let check = CheckOutcome {
            endpoint: NodeEndpoint::parse("10.0.0.1:1", "t").unwrap(),
            response: v1::CheckMigratableResponse {
                blocking: vec![mount.clone()],
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_string(&check_json(&check)["blocking"][0]).unwrap(),
            scan_json
        );
        assert_eq!(
            serde_json::to_string(&mount_json(&mount)).unwrap(),
            scan_json
        );
        // Extra fields follow the message's own.
        let doc = serde_json::to_string(&check_json(&check)).unwrap();
        assert!(doc.starts_with("{\"dumpable\":"), "{doc}");
        assert!(doc.ends_with(",\"endpoint\":\"10.0.0.1:1\"}"), "{doc}");
    }
}
