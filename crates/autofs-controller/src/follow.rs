//! Following a node's agent across a rolling update: the agent DaemonSet gives the node's new
//! agent pod a new IP, so a wait whose agent cannot be asked any more runs discovery again
//! (with backoff, within the wait's deadline) and asks every agent discovery finds for its
//! name (`GetNodeInfo`), until one says it is the node. Only an agent that names itself the
//! node is ever taken for it.

use std::sync::Arc;
use std::time::Duration;

use autofs_api::v1;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::deadline_after;
use crate::collector::{Collector, Inner};
use crate::endpoint::NodeEndpoint;
use crate::error::{Error, NodeError, NodeErrorKind};

/// What happens during a wait ([`Collector::wait_migratable_events`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum WaitEvent<'a> {
    /// The agent's verdict: at the start of each `WaitMigratable` stream (sequence 1), and
    /// each time the set of blocking mounts changes.
    Verdict(&'a v1::WaitMigratableResponse),
    /// The node's agent could not be asked where it was (`error`: unreachable after
    /// `max_attempts` attempts, its pod not ready, or another node's agent answering at its
    /// address); discovery runs again to find it.
    Lost {
        /// The node waited for.
        node: &'a str,
        /// Why its agent could not be asked.
        error: &'a NodeError,
    },
    /// A discovery round failed, or found no agent that says it is the node (`error`: a
    /// [`Error::Discovery`] or [`Error::UnknownNode`]); the next round starts after
    /// `retry_in`. The wait goes on.
    NotFound {
        /// The node waited for.
        node: &'a str,
        /// Why this round did not find it.
        error: &'a Error,
        /// Delay before the next round.
        retry_in: Duration,
    },
    /// Discovery found the node's agent (it said so in its handshake), at `to`; the wait
    /// asks it from now on.
    Found {
        /// The node waited for.
        node: &'a str,
        /// Where the agent was lost; `None` when the node was found only after searching
        /// before the wait began.
        from: Option<&'a str>,
        /// Where it answers now (may equal `from`: restarted in place, or back).
        to: &'a str,
        /// The `agent_instance` of the agent lost, when it had shaken hands.
        previous_instance: Option<&'a str>,
        /// The `agent_instance` of the agent found (`None`: an agent older than the field).
        instance: Option<&'a str>,
    },
}

/// One time a wait followed its node's agent ([`crate::WaitOutcome::moves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMove {
    /// The endpoint where the agent was lost.
    pub from: String,
    /// The endpoint where discovery found the node's agent again.
    pub to: String,
    /// The `agent_instance` of the agent lost, when it had shaken hands.
    pub previous_instance: Option<String>,
    /// The `agent_instance` of the agent found, when it sent one.
    pub instance: Option<String>,
}

/// Whether a failure of the node's endpoint may mean its agent is now elsewhere.
pub(crate) fn is_lost(kind: &NodeErrorKind) -> bool {
    matches!(
        kind,
        NodeErrorKind::Unavailable(_)
            | NodeErrorKind::IdentityMismatch { .. }
            | NodeErrorKind::NotReady(_)
    )
}

/// The node's agent, found by its handshake.
pub(crate) struct Found {
    /// Where it answered.
    pub endpoint: NodeEndpoint,
    /// Its `agent_instance` (`None` when empty).
    pub instance: Option<String>,
    /// Whether it took more than one round (discovery ran again).
    pub searched: bool,
}

/// Why the search ended without the node.
pub(crate) enum NotFound {
    /// Its deadline passed; the last round's error (`None` when no round ended before it).
    Deadline(Option<Error>),
    /// Discovery says the cluster has no such node ([`Error::NotInCluster`]): searching on
    /// cannot find it.
    Absent(Error),
}

impl NotFound {
    /// The error of a node never found before the wait.
    pub fn into_error(self, node: &str) -> Error {
        match self {
            NotFound::Absent(e) => e,
            NotFound::Deadline(last) => last.unwrap_or_else(|| Error::UnknownNode {
                name: node.to_owned(),
                known: 0,
                unreachable: vec!["discovery did not answer before the deadline".into()],
            }),
        }
    }

    /// The error of a node lost at `ep` during a wait of `wait`: no answer within it, or
    /// the node is no longer in the cluster.
    pub fn into_lost_error(self, ep: &NodeEndpoint, node: &str, wait: Duration) -> Error {
        let last = match self {
            NotFound::Absent(e) => return e,
            NotFound::Deadline(last) => last,
        };
        let last = match &last {
            Some(e) => crate::render::error_text(e),
            None => "discovery did not answer before the deadline".into(),
        };
        Error::Node(NodeError::new(
            &ep.address,
            Some(node),
            NodeErrorKind::DeadlineExceeded {
                timeout: wait,
                last: Some(format!("node {node} not found again: {last}")),
            },
        ))
    }
}

impl Collector {
    /// Searches for the agent of `node` until `deadline` (`within` after the wait began):
    /// rounds of discovery (the first round of a search before the wait uses the endpoints
    /// already found) and handshakes, with backoff between them, each round bounded by the
    /// configured timeout. `lost`: the endpoint and agent instance that just failed; another
    /// agent answering as `node` is preferred to it. Ends at once, [`NotFound::Absent`], when
    /// a round's discovery names every node of the cluster and none is `node`
    /// ([`Collector::absent_from_cluster`]): a mistyped name, or a node removed from the
    /// cluster. A node being rolled over still has its Node, so it is searched on.
    pub(crate) async fn search_node(
        &self,
        node: &str,
        deadline: Instant,
        within: Duration,
        lost: Option<(&NodeEndpoint, Option<&str>)>,
        on_event: &(dyn Fn(&WaitEvent<'_>) + Send + Sync),
    ) -> Result<Found, NotFound> {
        let timeout = self.inner.config.timeout;
        let avoid = lost.and_then(|(_, instance)| instance);
        let mut backoff = Backoff::new(self.inner.config.backoff);
        let mut last: Option<Error> = None;
        let mut rounds = 0u32;
        loop {
            let fresh = lost.is_some() || rounds > 0;
            rounds += 1;
            let round = async {
                let collector = if fresh {
                    self.rediscover().await?
                } else {
                    self.clone()
                };
                if let Some(absent) = collector.absent_from_cluster(node) {
                    return Err(absent);
                }
                let round_by = deadline.min(deadline_after(timeout));
                collector
                    .find_by_handshake(node, round_by, timeout.min(within), avoid)
                    .await
            };
            match tokio::time::timeout_at(deadline, round).await {
                Ok(Ok(mut found)) => {
                    found.searched = rounds > 1;
                    return Ok(found);
                }
                Ok(Err(absent @ Error::NotInCluster { .. })) => {
                    return Err(NotFound::Absent(absent));
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => return Err(NotFound::Deadline(last)),
            }
            let retry_in = backoff.next_delay();
            if Instant::now() + retry_in >= deadline {
                return Err(NotFound::Deadline(last));
            }
            if let Some(error) = &last {
                tracing::info!(%node, error = %crate::render::error_text(error), ?retry_in, "node not found; discovering again");
                on_event(&WaitEvent::NotFound {
                    node,
                    error,
                    retry_in,
                });
            }
            tokio::time::sleep(retry_in).await;
        }
    }

    /// One round: every endpoint that may be `node` (Kubernetes names the node of each pod;
    /// other sources do not) is asked its name, by `deadline`; the agents that say they are
    /// `node`, one whose instance is not `avoid` first.
    async fn find_by_handshake(
        &self,
        node: &str,
        deadline: Instant,
        within: Duration,
        avoid: Option<&str>,
    ) -> Result<Found, Error> {
        let candidates: Vec<NodeEndpoint> = self
            .inner
            .endpoints
            .iter()
            .filter(|e| e.expected_node.as_deref().is_none_or(|n| n == node))
            .cloned()
            .collect();
        let known_elsewhere = self.inner.endpoints.len() - candidates.len();
        let asked = Collector {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                connector: self.inner.connector.clone(),
                endpoints: candidates,
                coverage_unverified: Vec::new(),
                limit: self.inner.limit.clone(),
                sources: Vec::new(),
            }),
        };
        let statuses = if asked.inner.endpoints.is_empty() {
            Vec::new()
        } else {
            asked
                .fan_out_until(deadline, within, |_, _, _| async {
                    Ok::<(), NodeErrorKind>(())
                })
                .await
        };
        let mut hits = Vec::new();
        let mut unreachable = Vec::new();
        let mut known = known_elsewhere;
        for s in statuses {
            match &s.result {
                Ok(()) if s.node_name() == Some(node) => hits.push(s),
                Ok(()) => known += 1,
                Err(e) => unreachable.push(e.to_string()),
            }
        }
        let instance_of = |s: &crate::NodeStatus| {
            s.info
                .as_ref()
                .map(|i| i.agent_instance.clone())
                .filter(|i| !i.is_empty())
        };
        let pick = hits
            .iter()
            .position(|s| avoid.is_none() || instance_of(s).as_deref() != avoid)
            .unwrap_or(0);
        match hits.into_iter().nth(pick) {
            Some(s) => Ok(Found {
                instance: instance_of(&s),
                endpoint: s.endpoint,
                searched: false,
            }),
            None => Err(Error::UnknownNode {
                name: node.to_owned(),
                known,
                unreachable,
            }),
        }
    }
}
