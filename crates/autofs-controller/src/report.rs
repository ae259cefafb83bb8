//! What a fan-out returns: one [`NodeResult`] per endpoint — an answer or a [`NodeError`] —
//! so a partial cluster answer is explicit, never silent.

use std::collections::BTreeMap;
use std::time::Duration;

use autofs_api::v1;

use crate::endpoint::NodeEndpoint;
use crate::error::NodeError;

/// The outcome of one operation on one node.
#[derive(Debug, Clone)]
pub struct NodeResult<T> {
    /// The endpoint asked.
    pub endpoint: NodeEndpoint,
    /// The handshake answer, when the agent got that far.
    pub info: Option<v1::GetNodeInfoResponse>,
    /// The answer, or why there is none.
    pub result: Result<T, NodeError>,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// Time spent on this node, retries included.
    pub elapsed: Duration,
    /// How old the agent said the scan behind its answer is (`collect`: the `ListMounts`
    /// metadata), when it said so.
    pub scan: Option<ScanAge>,
}

/// The age of the scan an agent answered from, and whether it is the last good scan because
/// the current one has stalled (initial metadata `autofs-scan-age-ms`, `autofs-scan-stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanAge {
    /// Age of the scan, counted from its start, when the agent answered.
    pub age: Duration,
    /// The node's current scan has stalled: the answer is its last good scan, not what the
    /// node looks like now.
    pub stale: bool,
}

impl ScanAge {
    /// From a response's metadata; `None` when the agent did not say.
    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Option<ScanAge> {
        let age_ms: u64 = md
            .get(autofs_api::SCAN_AGE_HEADER)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stale = md.get(autofs_api::STALE_HEADER).is_some_and(|v| {
            v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        });
        Some(ScanAge {
            age: Duration::from_millis(age_ms),
            stale,
        })
    }
}

impl<T> NodeResult<T> {
    /// The node's name: from the handshake, else what discovery expected, else what a
    /// refused agent said it was.
    pub fn node_name(&self) -> Option<&str> {
        self.info
            .as_ref()
            .map(|i| i.node.as_str())
            .or(self.endpoint.expected_node.as_deref())
            .or_else(|| self.result.as_ref().err()?.node.as_deref())
    }

    /// The node name, or the endpoint when the name is unknown.
    pub fn label(&self) -> &str {
        self.node_name().unwrap_or(&self.endpoint.address)
    }
}

/// Handshake result of one agent (the `nodes` command).
pub type NodeStatus = NodeResult<()>;

/// Every mount of every node that answered, and the error of every node that did not.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// One entry per endpoint, in discovery order.
    pub nodes: Vec<NodeResult<Vec<v1::MountReport>>>,
    /// Wall time of the whole fan-out.
    pub elapsed: Duration,
    /// Why the nodes asked may not be every node of the cluster (from discovery:
    /// [`crate::discovery::Discovered::coverage_unverified`]); empty when no gap is known.
    pub coverage_unverified: Vec<String>,
}

impl ClusterReport {
    /// Every mount of every node that answered.
    pub fn mounts(&self) -> impl Iterator<Item = &v1::MountReport> {
        self.nodes
            .iter()
            .filter_map(|n| n.result.as_ref().ok())
            .flatten()
    }

    /// The mounts of node `name`, if it answered.
    pub fn node_mounts(&self, name: &str) -> Option<&[v1::MountReport]> {
        self.nodes
            .iter()
            .find(|n| n.node_name() == Some(name) && n.result.is_ok())
            .and_then(|n| n.result.as_deref().ok())
    }

    /// The errors of the nodes that did not answer.
    pub fn failed(&self) -> impl Iterator<Item = &NodeError> {
        self.nodes.iter().filter_map(|n| n.result.as_ref().err())
    }

    /// The nodes that answered from the last good scan because their current scan has
    /// stalled: their lists are not what the node looks like now.
    pub fn stale(&self) -> impl Iterator<Item = &NodeResult<Vec<v1::MountReport>>> {
        self.nodes
            .iter()
            .filter(|n| n.result.is_ok() && n.scan.is_some_and(|s| s.stale))
    }

    /// Whether every node answered, each with a view of its whole node, and the nodes are
    /// known to be all of them: an agent whose view of /proc is restricted
    /// ([`v1::GetNodeInfoResponse::view_restricted`]) may be blind to mount namespaces, and
    /// discovery that could not check its coverage ([`ClusterReport::coverage_unverified`])
    /// may have missed nodes, so the list is not known to be all there is.
    pub fn is_complete(&self) -> bool {
        self.nodes.iter().all(|n| n.result.is_ok())
            && self.restricted().next().is_none()
            && self.coverage_unverified.is_empty()
    }

    /// The nodes that answered from a restricted view, with why (the agent's `view_problems`).
    pub fn restricted(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.nodes.iter().filter_map(|n| {
            let info = n.info.as_ref().filter(|i| i.view_restricted)?;
            n.result
                .is_ok()
                .then(|| (n.label(), info.view_problems.as_slice()))
        })
    }

    /// Mount count per state (`ACTIVE`, `INTERIM`, …), states with no mount left out.
    pub fn summary(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for m in self.mounts() {
            *counts.entry(state_name(m.state)).or_insert(0) += 1;
        }
        counts
    }
}

/// `ACTIVE`, …; `UNKNOWN(n)` for a value this controller does not know (as in JSON).
pub fn state_name(state: i32) -> String {
    autofs_api::json::name::<v1::MountState>(state).into_owned()
}

/// `PIPE_NOT_EMPTY`, …; `UNKNOWN(n)` for a value this controller does not know (as in JSON).
pub fn reason_name(reason: i32) -> String {
    autofs_api::json::name::<v1::Reason>(reason).into_owned()
}

/// The answer of `check`: which node answered and what it said.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The endpoint asked.
    pub endpoint: NodeEndpoint,
    /// The agent's answer.
    pub response: v1::CheckMigratableResponse,
}
