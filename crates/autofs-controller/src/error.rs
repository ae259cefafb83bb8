//! Errors, typed where they are made: discovery and configuration errors stop a command before
//! any node is asked; a [`NodeError`] is per node and lands in the cluster report next to the
//! answers of the nodes that did respond.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Finding the agents failed; nothing was asked yet.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Discovery produced no endpoint at all.
    #[error("no agent endpoints: {0}")]
    Empty(String),
    /// An address is not `host:port`.
    #[error("{origin}: `{input}` is not a host:port address: {reason}")]
    InvalidAddress {
        /// Where the address came from (`--nodes`, `FILE:LINE`, a DNS name…).
        origin: String,
        /// The address as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same endpoint was listed twice.
    #[error("duplicate node endpoint {address}: listed by {first} and again by {second}")]
    Duplicate {
        /// The endpoint.
        address: String,
        /// Where it was first listed.
        first: String,
        /// Where it was listed again.
        second: String,
    },
    /// A nodes file could not be read.
    #[error("cannot read nodes file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A DNS lookup failed or returned nothing.
    #[error("DNS discovery of {name}")]
    Dns {
        /// The name looked up.
        name: String,
        /// Why it failed.
        #[source]
        source: crate::discovery::dns::DnsError,
    },
    /// Kubernetes API discovery failed.
    #[cfg(feature = "kube")]
    #[error("Kubernetes discovery")]
    Kube(#[from] crate::discovery::kube::KubeError),
}

/// Controller-level errors (bad configuration, unknown node).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Discovery failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The TLS settings do not fit together or a file holds no certificate.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A TLS file could not be read.
    #[error("TLS configuration: {what} {}", path.display())]
    TlsFile {
        /// Which file (`CA certificate`, `client certificate`, `client key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `check --node NAME` names no discovered agent.
    #[error("node {name} is not among the {known} discovered agents{}", if unreachable.is_empty() { String::new() } else { format!(" that answered ({} did not: {})", unreachable.len(), unreachable.join("; ")) })]
    UnknownNode {
        /// The requested node.
        name: String,
        /// How many agents answered the handshake.
        known: usize,
        /// Errors of the agents that did not answer (one of them may be the node).
        unreachable: Vec<String>,
    },
    /// `check --node NAME --wait` names a node the cluster does not have: Kubernetes
    /// discovery, with every Node listed, names no node `NAME`
    /// ([`Source::names_every_node`](crate::discovery::Source::names_every_node)); waiting
    /// cannot make it appear.
    #[error(
        "node {name} is not a node of the cluster: Kubernetes lists {nodes} Linux node(s), none named so"
    )]
    NotInCluster {
        /// The requested node.
        name: String,
        /// How many nodes discovery named.
        nodes: usize,
    },
    /// The one node asked failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// One node failed to answer; the others are unaffected.
#[derive(Debug, Clone, thiserror::Error)]
pub struct NodeError {
    /// The endpoint (`host:port`) that was asked.
    pub endpoint: String,
    /// The node's name, when known (from discovery or the handshake).
    pub node: Option<String>,
    /// What went wrong.
    #[source]
    pub kind: NodeErrorKind,
}

impl NodeError {
    /// An error of the node at `endpoint`.
    pub fn new(endpoint: &str, node: Option<&str>, kind: NodeErrorKind) -> NodeError {
        NodeError {
            endpoint: endpoint.to_owned(),
            node: node.map(str::to_owned),
            kind,
        }
    }

    /// Whether a retry may help (only transport-level `UNAVAILABLE`).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, NodeErrorKind::Unavailable(_))
    }

    /// Whether the agent refused the request for what it is: see
    /// [`NodeErrorKind::is_refusal`].
    pub fn is_refusal(&self) -> bool {
        self.kind.is_refusal()
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node {node} ({}): {}", self.endpoint, self.kind),
            None => write!(f, "agent at {}: {}", self.endpoint, self.kind),
        }
    }
}

/// Why one node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeErrorKind {
    /// The endpoint cannot be turned into a gRPC URI, or the TLS settings into a channel.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(#[source] Cause),
    /// The agent could not be reached (refused, reset, unreachable, TLS failure); retried.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The per-node deadline passed.
    #[error("no answer within {}{}", fmt_duration(*.timeout), .last.as_ref().map(|l| format!(" (last error: {l})")).unwrap_or_default())]
    DeadlineExceeded {
        /// The per-node deadline.
        timeout: Duration,
        /// The error of the last failed attempt, if any.
        last: Option<String>,
    },
    /// The node was never asked: every concurrency slot stayed busy until its deadline.
    #[error("never asked: all {concurrency} concurrent slots stayed busy until the deadline of {} (raise --concurrency or --timeout)", fmt_duration(*.timeout))]
    NeverAsked {
        /// The per-node deadline.
        timeout: Duration,
        /// The concurrency limit.
        concurrency: usize,
    },
    /// The agent answered with a non-retryable gRPC status.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The agent speaks another major API version.
    #[error(
        "agent {agent_version} speaks API v{agent_major}, this controller speaks v{ours}; refusing to use it"
    )]
    VersionMismatch {
        /// The agent's `api_major`.
        agent_major: u32,
        /// Ours ([`autofs_api::API_MAJOR`]).
        ours: u32,
        /// The agent's version string.
        agent_version: String,
    },
    /// Discovery expected another node at this endpoint.
    #[error("expected node {expected}, but the agent says it is {actual}")]
    IdentityMismatch {
        /// The node discovery expected.
        expected: String,
        /// The node the agent reported.
        actual: String,
    },
    /// Another agent (another `agent_instance`) already answered as this node at another
    /// endpoint. (The same agent reached at two endpoints is no error: the later endpoint is
    /// left out of the result.)
    #[error("the same node already answered at {first_endpoint}; ignoring this endpoint")]
    DuplicateNode {
        /// The endpoint that answered first.
        first_endpoint: String,
    },
    /// The agent streamed more reports than the per-node limit; its list was dropped.
    #[error(
        "sent more than {limit} mounts (the per-node limit, --max-mounts-per-node); its list was dropped"
    )]
    TooManyMounts {
        /// The limit.
        limit: usize,
    },
    /// The reports of all nodes reached the memory bound while this node was streaming; its
    /// list was dropped, the others kept.
    #[error("the cluster report reached its memory bound of {} MiB (--max-report-memory) while this node was streaming; its list was dropped", .limit_bytes >> 20)]
    ReportMemory {
        /// The bound, in bytes.
        limit_bytes: usize,
    },
    /// Discovery found the node's agent but it cannot be asked (its pod is not running or
    /// has no IP); the node was not contacted.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The agent sent data that violates the API contract.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl NodeErrorKind {
    /// Whether the agent refused the request itself, so that asking this agent the same again
    /// cannot help: an invalid request (`INVALID_ARGUMENT`, e.g. a container id that is not
    /// hex), a target it does not have (`NOT_FOUND`, e.g. a `--pid` of another node), an RPC
    /// it does not implement (`UNIMPLEMENTED`), or an agent of another API major.
    pub fn is_refusal(&self) -> bool {
        match self {
            NodeErrorKind::Rpc { code, .. } => matches!(
                code,
                tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::Unimplemented
            ),
            NodeErrorKind::VersionMismatch { .. } => true,
            _ => false,
        }
    }

    /// Whether the agent refused the request itself as invalid (`INVALID_ARGUMENT`): every
    /// agent is sent the same request, so every agent would refuse it (bad input).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            NodeErrorKind::Rpc {
                code: tonic::Code::InvalidArgument,
                ..
            }
        )
    }

    /// Classifies a gRPC status: `UNAVAILABLE` is the only retryable code.
    pub fn from_status(status: &tonic::Status) -> NodeErrorKind {
        let message = status_text(status);
        match status.code() {
            tonic::Code::Unavailable => NodeErrorKind::Unavailable(Cause::text(message)),
            code => NodeErrorKind::Rpc { code, message },
        }
    }
}

/// The text of a node's failure as people read it, and — when it came from an error value
/// (a transport error of the connection, an invalid URI) — that error as its
/// [`source`](std::error::Error::source), so a program can walk to the cause (for example
/// down to the [`std::io::Error`] of a refused connection) instead of parsing the text.
///
/// The text already quotes the source chain, so `{cause}` alone reads completely; shared,
/// so a [`NodeError`] stays [`Clone`].
#[derive(Debug, Clone)]
pub struct Cause {
    text: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause that is only text (a status the agent answered with, a stream that ended).
    pub fn text(text: impl Into<String>) -> Cause {
        Cause {
            text: text.into(),
            source: None,
        }
    }

    /// A cause that keeps the error it came from as its source; `text` is what to print.
    pub fn with_source(
        text: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            text: text.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The text, as `Display` writes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The same cause with `hint` appended to its text (the source is kept).
    pub fn with_hint(mut self, hint: &str) -> Cause {
        self.text.push_str(hint);
        self
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(text: String) -> Cause {
        Cause::text(text)
    }
}

impl From<&str> for Cause {
    fn from(text: &str) -> Cause {
        Cause::text(text)
    }
}

/// A status's message with its source chain (tonic puts "tcp connect error" etc. there).
fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    if text.is_empty() {
        text = format!("{:?}", status.code());
    }
    text
}

/// `1.5s`, `200ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
