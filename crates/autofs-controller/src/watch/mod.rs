//! One merged stream of `WatchMounts` events from every node. Each node has its own task that
//! connects, shakes hands, follows the stream and, when it breaks, reconnects with backoff;
//! one broken node never stalls the others. Dropping the [`WatchStream`] stops every task.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use autofs_api::v1;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::client::{self, Client};
use crate::collector::{Collector, Inner};
use crate::endpoint::NodeEndpoint;
use crate::error::{Cause, NodeError, NodeErrorKind};

/// Items buffered before node tasks wait for the consumer.
const BUFFER: usize = 1024;

/// One item of the merged stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A node's stream (re)started; its current mounts follow as `ADDED` events with
    /// sequence numbers starting again at 1.
    Connected {
        /// The endpoint.
        endpoint: NodeEndpoint,
        /// The handshake answer (boxed: it is the largest item).
        info: Box<v1::GetNodeInfoResponse>,
    },
    /// An event of one node (`event.node` names it; `event.sequence` is per stream).
    Event {
        /// The endpoint.
        endpoint: NodeEndpoint,
        /// The event (boxed: it carries a whole mount report).
        event: Box<v1::MountEvent>,
    },
    /// Discovery found the node's agent not ready (its pod is not running or has no IP):
    /// the node is not watched. Sent once, first.
    NotReady {
        /// Why ([`NodeErrorKind::NotReady`]).
        error: NodeError,
    },
    /// The agent refused the watch for what it is (an invalid filter, a `--pid` it does not
    /// have, another API major: [`NodeErrorKind::is_refusal`]): asking again cannot help, so
    /// the node is not watched any more. Sent once, last for that node.
    Refused {
        /// Why.
        error: NodeError,
    },
    /// A node's stream broke or could not start; it is retried after `retry_in`.
    Disconnected {
        /// Why.
        error: NodeError,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// The merged stream; also a [`tokio_stream::Stream`].
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<WatchItem>,
    // Aborted on drop: no node task outlives the stream.
    _tasks: JoinSet<()>,
}

impl WatchStream {
    /// The next item; `None` once no node is followed any more (every node was not ready or
    /// refused the watch): while one is, tasks run until the stream is dropped.
    pub async fn next(&mut self) -> Option<WatchItem> {
        self.rx.recv().await
    }
}

impl tokio_stream::Stream for WatchStream {
    type Item = WatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        self.rx.poll_recv(cx)
    }
}

impl Collector {
    /// Follows every node's `WatchMounts` (with `filter`) until the stream is dropped.
    /// Spawns one task per node, so it must be called within a Tokio runtime.
    ///
    /// ```no_run
    /// use autofs_controller::{Collector, CollectorConfig, NodeEndpoint, WatchItem};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let nodes = vec![NodeEndpoint::parse("10.0.0.1:50051", "example")?];
    /// let collector = Collector::new(nodes, CollectorConfig::default())?;
    /// let mut events = collector.watch(Default::default());
    /// while let Some(item) = events.next().await {
    ///     if let WatchItem::Event { event, .. } = item {
    ///         println!("{} #{} {:?}", event.node, event.sequence, event.kind());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, filter: v1::ListMountsRequest) -> WatchStream {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut tasks = JoinSet::new();
        let claims = Claims::default();
        for ep in &self.inner.endpoints {
            tasks.spawn(follow(
                self.inner.clone(),
                ep.clone(),
                filter.clone(),
                tx.clone(),
                claims.clone(),
            ));
        }
        WatchStream { rx, _tasks: tasks }
    }
}

/// Which endpoint follows each agent process (`agent_instance`): an agent reached at two
/// endpoints (a dual-stack pod's IPv4 and IPv6 addresses) is followed at one of them, so its
/// events are not merged in twice; the other stands by and takes over when that stream breaks.
#[derive(Clone, Default)]
struct Claims(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl Claims {
    /// Whether `endpoint` may follow `instance` (nobody else does); an empty instance (an
    /// agent older than the field) is never shared.
    fn claim(&self, instance: &str, endpoint: &str) -> bool {
        if instance.is_empty() {
            return true;
        }
        let mut claims = self.0.lock().unwrap_or_else(|p| p.into_inner());
        claims
            .entry(instance.to_owned())
            .or_insert_with(|| endpoint.to_owned())
            == endpoint
    }

    /// `endpoint` no longer follows `instance`.
    fn release(&self, instance: &str, endpoint: &str) {
        let mut claims = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if claims.get(instance).is_some_and(|e| e == endpoint) {
            claims.remove(instance);
        }
    }
}

/// One node, forever: connect, stream, back off, repeat.
async fn follow(
    inner: Arc<Inner>,
    ep: NodeEndpoint,
    filter: v1::ListMountsRequest,
    tx: mpsc::Sender<WatchItem>,
    claims: Claims,
) {
    if let Some(why) = &ep.not_ready {
        let error = NodeError::new(
            &ep.address,
            ep.expected_node.as_deref(),
            NodeErrorKind::NotReady(why.clone()),
        );
        let _ = tx.send(WatchItem::NotReady { error }).await;
        return;
    }
    let mut backoff = Backoff::new(inner.config.backoff);
    loop {
        let mut name = ep.expected_node.clone();
        let kind = match start(&inner, &ep, &filter, &claims).await {
            Err((said, kind)) => {
                name = name.or(said);
                kind
            }
            Ok((info, None)) => {
                // Another endpoint follows this very agent: stand by, silently.
                tracing::debug!(endpoint = %ep.address, node = %info.node, "the same agent is followed at another endpoint; standing by");
                tokio::time::sleep(inner.config.backoff.max).await;
                continue;
            }
            Ok((info, Some(mut stream))) => {
                let instance = info.agent_instance.clone();
                name = Some(info.node.clone());
                let node = info.node.clone();
                if tx
                    .send(WatchItem::Connected {
                        endpoint: ep.clone(),
                        info: Box::new(info),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                let kind = loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            if event.node != node {
                                break NodeErrorKind::Malformed(format!(
                                    "event {} names node `{}`",
                                    event.sequence, event.node
                                ));
                            }
                            // A stream that delivers is healthy: the next break starts
                            // the backoff afresh.
                            backoff.reset();
                            let item = WatchItem::Event {
                                endpoint: ep.clone(),
                                event: Box::new(event),
                            };
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            break NodeErrorKind::Unavailable(Cause::text(
                                "the agent ended the stream",
                            ));
                        }
                        Err(status) => break client::status_kind(&status),
                    }
                };
                claims.release(&instance, &ep.address);
                kind
            }
        };
        let error = NodeError::new(&ep.address, name.as_deref(), kind);
        if error.is_refusal() {
            let _ = tx.send(WatchItem::Refused { error }).await;
            return;
        }
        let retry_in = backoff.next_delay();
        if tx
            .send(WatchItem::Disconnected { error, retry_in })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// Connect + handshake + open the stream, within the per-node deadline and the shared
/// concurrency limit (the stream itself then runs without either). No stream (`None`) when
/// another endpoint already follows this agent (`claims`): nothing is asked of it then. A
/// failure comes with the name the agent gave in the handshake, when it got that far.
async fn start(
    inner: &Inner,
    ep: &NodeEndpoint,
    filter: &v1::ListMountsRequest,
    claims: &Claims,
) -> Result<
    (
        v1::GetNodeInfoResponse,
        Option<tonic::Streaming<v1::MountEvent>>,
    ),
    (Option<String>, NodeErrorKind),
> {
    let _permit = inner.limit.acquire().await;
    let deadline = client::deadline_after(inner.config.timeout);
    let mut said: Option<String> = None;
    // The agent this endpoint claimed: released again when the stream is not opened after
    // all, or the endpoint would keep the claim through every later failure (the agent
    // unreachable here, or refusing) and the endpoint standing by would never take over.
    let mut claimed: Option<String> = None;
    let setup = async {
        let mut c = Client::new(inner.connector.channel(ep, true)?);
        let info = client::node_info(&mut c, deadline)
            .await
            .map_err(|kind| inner.connector.explain_handshake(kind))?;
        if !info.node.trim().is_empty() {
            said = Some(info.node.clone());
        }
        client::check_node_info(&info, ep)?;
        if !claims.claim(&info.agent_instance, &ep.address) {
            return Ok((info, None));
        }
        claimed = Some(info.agent_instance.clone());
        let request = v1::WatchMountsRequest {
            filter: Some(filter.clone()),
        };
        let stream = c
            .watch_mounts(tonic::Request::new(request))
            .await
            .map_err(|s| client::status_kind(&s))?
            .into_inner();
        Ok((info, Some(stream)))
    };
    let result = tokio::time::timeout_at(deadline, setup)
        .await
        .unwrap_or(Err(NodeErrorKind::DeadlineExceeded {
            timeout: inner.config.timeout,
            last: None,
        }));
    if let (Err(_), Some(instance)) = (&result, &claimed) {
        claims.release(instance, &ep.address);
    }
    result.map_err(|kind| {
        let kind = match kind {
            // The agent or tonic enforcing the handshake's grpc-timeout: the same deadline.
            NodeErrorKind::DeadlineExceeded { .. } => NodeErrorKind::DeadlineExceeded {
                timeout: inner.config.timeout,
                last: None,
            },
            kind => kind,
        };
        (said, kind)
    })
}
