//! A watch over discovery sources that can change: discovery runs again and the set of
//! endpoints followed changes with it. A DaemonSet rolling update replaces each node's agent
//! pod by one with a new IP; nodes join and leave. Without this, a watch would retry the old
//! pod's address forever and never see the new one.
//!
//! Rounds run every `refresh_interval`, and sooner, with backoff (from the backoff's initial
//! delay up to that interval), after a node task says its agent was lost, while a round fails,
//! after a round stopped following an agent (its replacement is often listed a little later:
//! a headless Service drops a terminating pod's record at once and adds the new pod's when it
//! is ready), and while an endpoint's pod is not ready. The backoff starts again only when a
//! round finds a new agent to follow or stops following one, so pods that come and go without
//! ever running (elsewhere in a large rollout, a node without an agent pod) cannot keep rounds
//! fast: their rounds back off to the interval. Rounds start at least [`MIN_GAP`] apart.
//!
//! Only a round that succeeds changes the set: "discovery could not answer" never stops a
//! node's task. A round that could not see everything the first discovery saw (a gap it did
//! not have: one DNS address family failing) adds what it found and removes nothing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::WatchItem;
use super::node::{self, Ended, Shared};
use crate::backoff::{Backoff, BackoffConfig};
use crate::collector::Collector;
use crate::endpoint::NodeEndpoint;

/// The least time between the starts of two rounds, whatever asks for them.
pub(crate) const MIN_GAP: Duration = Duration::from_secs(1);

/// What makes two discovered endpoints the same one to follow: a change of address, of the
/// node it must name, or of readiness is a new endpoint (a pod that turns ready at the address
/// it had while not ready is followed only from then on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    expected_node: Option<String>,
    ready: bool,
}

impl Key {
    fn of(ep: &NodeEndpoint) -> Key {
        Key {
            address: ep.address.clone(),
            expected_node: ep.expected_node.clone(),
            ready: ep.not_ready.is_none(),
        }
    }
}

/// One endpoint's task; aborted when dropped (with the watch).
struct Followed {
    endpoint: NodeEndpoint,
    /// `None` once it ended for good (its end was looked at).
    task: Option<JoinHandle<Ended>>,
}

impl Followed {
    fn start(shared: &Shared, endpoint: NodeEndpoint) -> Followed {
        let mut followed = Followed {
            endpoint,
            task: None,
        };
        followed.spawn(shared, None);
        followed
    }

    /// Starts its task; `quiet`: the refusal already reported.
    fn spawn(&mut self, shared: &Shared, quiet: Option<String>) {
        let task = node::follow(shared.clone(), self.endpoint.clone(), quiet);
        self.task = Some(tokio::spawn(task));
    }

    /// Stops the task and waits until it has: it sends nothing after this returns.
    async fn stop(mut self) {
        if let Some(mut task) = self.task.take() {
            task.abort();
            let _ = (&mut task).await;
        }
    }

    /// A task that ended because its agent refused the watch for what it is starts again,
    /// reporting the refusal again only if it changed: the agent may have been replaced in
    /// place. Other ends are final.
    async fn ask_again_if_refused(&mut self, shared: &Shared) {
        if !self.task.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(task) = self.task.take() else {
            return;
        };
        if let Ok(Ended::Refused { text, again: true }) = task.await {
            self.spawn(shared, Some(text));
        }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The endpoints a round adds and removes: `found` against the keys followed now, in
/// discovery's order, each key once.
fn plan<'a, T>(
    followed: &HashMap<Key, T>,
    found: &'a [NodeEndpoint],
) -> (Vec<&'a NodeEndpoint>, Vec<Key>) {
    let mut seen = std::collections::HashSet::new();
    let added = found
        .iter()
        .filter(|ep| {
            let key = Key::of(ep);
            !followed.contains_key(&key) && seen.insert(key)
        })
        .collect();
    let now: std::collections::HashSet<Key> = found.iter().map(Key::of).collect();
    let mut removed: Vec<Key> = followed
        .keys()
        .filter(|k| !now.contains(*k))
        .cloned()
        .collect();
    removed.sort_by(|a, b| a.address.cmp(&b.address));
    (added, removed)
}

/// Whether a round may stop following endpoints it does not list: only when it has no gap
/// (`round_gaps`, [`crate::discovery::Discovered::coverage_unverified`]) the first discovery
/// did not have (`first_gaps`: a Kubernetes source that may never list nodes has that gap
/// in every round).
fn may_remove(first_gaps: &[String], round_gaps: &[String]) -> bool {
    round_gaps.iter().all(|g| first_gaps.contains(g))
}

/// Follows the collector's endpoints, then keeps the set current until the watch is dropped.
pub(super) async fn refresh(collector: Collector, shared: Shared) {
    let config = collector.config();
    let interval = config.refresh_interval;
    let mut backoff = Backoff::new(BackoffConfig {
        initial: config.backoff.initial.min(interval),
        max: interval,
    });
    let mut followed: HashMap<Key, Followed> = HashMap::new();
    for ep in collector.endpoints() {
        followed
            .entry(Key::of(ep))
            .or_insert_with(|| Followed::start(&shared, ep.clone()));
    }
    // `Some(delay)`: the next round is due sooner than the interval.
    let mut soon: Option<Duration> = None;
    // A round stopped following an agent: look again soon, backing off to the interval.
    let mut searching = false;
    let mut last_round = Instant::now();
    let mut last_asked = Instant::now();
    loop {
        let due = Instant::now() + soon.unwrap_or(interval);
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = shared.lost.notified() => tokio::time::sleep(backoff.next_delay()).await,
        }
        // Agents that refused the watch are asked again once per interval.
        if last_asked.elapsed() >= interval {
            last_asked = Instant::now();
            for f in followed.values_mut() {
                f.ask_again_if_refused(&shared).await;
            }
        }
        tokio::time::sleep_until(last_round + MIN_GAP).await;
        last_round = Instant::now();
        let found = match collector.rediscover().await {
            Ok(found) => found,
            Err(error) => {
                let retry_in = backoff.next_delay();
                tracing::info!(error = %crate::render::error_text(&error), ?retry_in, "discovery failed; the watch keeps its endpoints");
                let item = WatchItem::DiscoveryFailed {
                    error: std::sync::Arc::new(error),
                    retry_in,
                };
                if shared.tx.send(item).await.is_err() {
                    return;
                }
                soon = Some(retry_in);
                continue;
            }
        };
        let (added, mut removed) = plan(&followed, found.endpoints());
        let gaps = &found.inner.coverage_unverified;
        if !removed.is_empty() && !may_remove(&collector.inner.coverage_unverified, gaps) {
            tracing::info!(gaps = ?gaps, kept = removed.len(), "discovery could not see everything: no endpoint is let go this round");
            removed.clear();
        }
        if added.iter().any(|ep| ep.not_ready.is_none()) {
            backoff.reset();
        }
        if removed.iter().any(|k| k.ready) {
            backoff.reset();
            searching = true;
        }
        for key in removed {
            let Some(gone) = followed.remove(&key) else {
                continue;
            };
            let endpoint = gone.endpoint.clone();
            gone.stop().await;
            shared.claims.release_endpoint(&endpoint.address);
            // An endpoint whose pod was not ready was never followed: nothing to report.
            if key.ready
                && shared
                    .tx
                    .send(WatchItem::EndpointRemoved { endpoint })
                    .await
                    .is_err()
            {
                return;
            }
        }
        for ep in added {
            if ep.not_ready.is_none()
                && shared
                    .tx
                    .send(WatchItem::EndpointAdded {
                        endpoint: ep.clone(),
                    })
                    .await
                    .is_err()
            {
                return;
            }
            followed.insert(Key::of(ep), Followed::start(&shared, ep.clone()));
        }
        // A pod that is not ready yet, or the replacement of an agent no longer listed, is
        // looked for again soon: it is usually starting.
        soon = (searching || followed.keys().any(|k| !k.ready)).then(|| backoff.next_delay());
        if soon.is_some_and(|d| d >= interval / 2) {
            // Backed off to the interval (the delay is drawn from its upper half).
            searching = false;
        }
        // What tasks said during the round (the stopped ones among them) this round has
        // looked into; a task still failing says so again at its next attempt.
        let _ = tokio::time::timeout(Duration::ZERO, shared.lost.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, node: Option<&str>, not_ready: bool) -> NodeEndpoint {
        NodeEndpoint {
            address: address.into(),
            expected_node: node.map(Into::into),
            origin: "test".into(),
            not_ready: not_ready.then(|| "phase Pending".into()),
        }
    }

    #[test]
    fn only_a_round_that_sees_what_the_first_saw_lets_endpoints_go() {
        let forbidden = "cannot list nodes: coverage of nodes without an agent pod is unknown";
        let aaaa = "dns agents: AAAA lookup failed (Server Failure)";
        assert!(may_remove(&[], &[]));
        assert!(may_remove(&[forbidden.into()], &[forbidden.into()]));
        assert!(!may_remove(&[], &[aaaa.into()]));
        assert!(!may_remove(
            &[forbidden.into()],
            &[forbidden.into(), aaaa.into()]
        ));
    }

    #[test]
    fn a_round_adds_what_is_new_and_removes_what_discovery_no_longer_lists() {
        let followed: HashMap<Key, ()> = [
            ep("10.0.0.1:1", Some("a"), false),
            ep("pod/ns/b-new", Some("b"), true),
            ep("10.0.0.3:1", Some("c"), false),
        ]
        .iter()
        .map(|e| (Key::of(e), ()))
        .collect();
        let found = [
            // a: unchanged.
            ep("10.0.0.1:1", Some("a"), false),
            // b: the pending pod got its IP and turned ready.
            ep("10.0.0.2:1", Some("b"), false),
            // c: its pod IP now serves another node's agent (an IP reused).
            ep("10.0.0.3:1", Some("d"), false),
            // listed twice (two sources): added once.
            ep("10.0.0.4:1", None, false),
            ep("10.0.0.4:1", None, false),
        ];
        let (added, removed) = plan(&followed, &found);
        let added: Vec<&str> = added.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(added, ["10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]);
        let removed: Vec<(&str, Option<&str>)> = removed
            .iter()
            .map(|k| (k.address.as_str(), k.expected_node.as_deref()))
            .collect();
        assert_eq!(
            removed,
            [("10.0.0.3:1", Some("c")), ("pod/ns/b-new", Some("b"))]
        );

        // Readiness alone is a change: the same address turning ready is followed anew.
        let followed: HashMap<Key, ()> = [(Key::of(&ep("10.0.0.5:1", Some("e"), true)), ())].into();
        let found = [ep("10.0.0.5:1", Some("e"), false)];
        let (added, removed) = plan(&followed, &found);
        assert_eq!(added.len(), 1);
        assert_eq!(removed.len(), 1);
        assert!(!removed[0].ready);
    }
}
