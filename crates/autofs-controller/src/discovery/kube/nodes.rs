//! The cluster's Nodes, against which the agent pods are counted: a node where the DaemonSet
//! has no pod (a taint it does not tolerate, a nodeSelector or affinity that leaves the node
//! out, a new node whose pod is not created yet) must be reported as a node that could not be
//! asked, not left out of the answer. Nodes labelled with another operating system
//! (`kubernetes.io/os: windows`) are left out: CRIU and autofs exist on Linux only.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::Node;

use super::KubeError;
use crate::endpoint::NodeEndpoint;

/// The nodes of every page, with what makes each one unfit for work (NotReady, cordoned):
/// [`NodePage::add`] each page, then take the endpoints of the nodes
/// [`NodePage::without_agent`].
#[derive(Debug, Default)]
pub struct NodePage {
    /// Node name → its state when it is NotReady or unschedulable, and its blocking taints.
    nodes: BTreeMap<String, NodeFacts>,
    /// `name: why` of nodes left out (not Linux).
    pub skipped: Vec<String>,
}

#[derive(Debug, Default)]
struct NodeFacts {
    /// `NotReady (KubeletNotReady: …)`, `unschedulable (cordoned)`: empty for a healthy node.
    state: Vec<String>,
    /// `key=value:Effect` of its NoSchedule / NoExecute taints.
    taints: Vec<String>,
}

impl NodePage {
    /// Adds the nodes of one page.
    ///
    /// # Errors
    ///
    /// [`KubeError::Parse`] for a node without a name.
    pub fn add<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) -> Result<(), KubeError> {
        for node in nodes {
            let name = node
                .metadata
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| KubeError::Parse("a node without a name".into()))?;
            let os = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/os"));
            if let Some(os) = os.filter(|os| *os != "linux") {
                self.skipped
                    .push(format!("{name}: kubernetes.io/os is {os}, not linux"));
                continue;
            }
            self.nodes.insert(name, facts(node));
        }
        Ok(())
    }

    /// How many nodes were listed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was listed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `NotReady (…), unschedulable (cordoned)` when node `name` is unfit for work.
    pub fn state(&self, name: &str) -> Option<String> {
        let facts = self.nodes.get(name)?;
        (!facts.state.is_empty()).then(|| facts.state.join(", "))
    }

    /// One not-ready endpoint per node that is not in `covered` (the nodes that have an agent
    /// pod, running or not), in name order: address `node/NAME`, expecting `NAME`.
    /// `terminating` names the pod on a node whose only agent pod is being deleted.
    pub fn without_agent(
        &self,
        covered: &HashSet<&str>,
        terminating: &BTreeMap<String, String>,
    ) -> Vec<NodeEndpoint> {
        self.nodes
            .iter()
            .filter(|(name, _)| !covered.contains(name.as_str()))
            .map(|(name, facts)| {
                let mut why = match terminating.get(name) {
                    Some(pod) => format!("no agent pod on this node but {pod}, which is terminating"),
                    None => {
                        let mut why = String::from(
                            "no autofs-agent pod on this node (taints/nodeSelector? the DaemonSet's tolerations, nodeSelector or affinity may leave it out, or its pod is not created yet",
                        );
                        if !facts.taints.is_empty() {
                            why.push_str("; node taints: ");
                            why.push_str(&facts.taints.join(", "));
                        }
                        why.push(')');
                        why
                    }
                };
                if !facts.state.is_empty() {
                    why.push_str("; node is ");
                    why.push_str(&facts.state.join(", "));
                }
                NodeEndpoint {
                    address: format!("node/{name}"),
                    expected_node: Some(name.clone()),
                    origin: format!("node {name}"),
                    not_ready: Some(why),
                }
            })
            .collect()
    }
}

/// A node's state and blocking taints.
fn facts(node: &Node) -> NodeFacts {
    let mut state = Vec::new();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            let mut text = String::from("NotReady");
            let detail: Vec<&str> = [
                (c.status != "False").then_some(c.status.as_str()),
                c.reason.as_deref(),
                c.message.as_deref(),
            ]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
            if !detail.is_empty() {
                text.push_str(" (");
                if c.status != "False" {
                    text.push_str("Ready is ");
                }
                text.push_str(&detail.join(": "));
                text.push(')');
            }
            state.push(text);
        }
        None => state.push("NotReady (no Ready condition)".into()),
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable) == Some(true) {
        state.push("unschedulable (cordoned)".into());
    }
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .map(|t| match t.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}={v}:{}", t.key, t.effect),
            None => format!("{}:{}", t.key, t.effect),
        })
        .collect();
    NodeFacts { state, taints }
}
