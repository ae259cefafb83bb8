//! One merged stream of `WatchMounts` events from every node. Each node has its own task that
//! connects, shakes hands, follows the stream and, when it breaks, reconnects with backoff;
//! one broken node never stalls the others (`node`). Over discovery sources that can change,
//! discovery runs again and the set of nodes followed changes with it (`refresh`). Dropping
//! the [`WatchStream`] stops every task.

mod node;
mod refresh;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use autofs_api::v1;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::collector::Collector;
use crate::endpoint::NodeEndpoint;
use crate::error::{Error, NodeError};

/// The least [`crate::CollectorConfig::refresh_interval`]: discovery runs are never closer than
/// a second apart.
pub const MIN_REFRESH_INTERVAL: Duration = refresh::MIN_GAP;

/// Items buffered before node tasks wait for the consumer.
const BUFFER: usize = 1024;

/// One item of the merged stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// the endpoint is not watched. Sent once for the endpoint, first; when discovery runs
    /// again ([`Collector::rediscovers`]) and finds the pod ready, it is followed from then
    /// on (an [`WatchItem::EndpointAdded`] for its address).
    NotReady {
        /// Why ([`NodeErrorKind::NotReady`](crate::NodeErrorKind::NotReady)).
        error: NodeError,
    },
    /// The agent refused the watch for what it is (an invalid filter, a `--pid` it does not
    /// have, another API major, no `WatchMounts`:
    /// [`NodeErrorKind::is_refusal`](crate::NodeErrorKind::is_refusal)): asking again at once
    /// cannot help, so the endpoint is not watched. Over a fixed list, sent once, last for
    /// that node. When discovery runs again ([`Collector::rediscovers`]), an agent that
    /// refused for what it is (not for the filter) is asked again every
    /// `asked_again_in`, quietly while it refuses the same way: it may be replaced in place
    /// (an upgrade at the same address).
    Refused {
        /// Why.
        error: NodeError,
        /// When the endpoint is asked again; `None`: never.
        asked_again_in: Option<Duration>,
    },
    /// A node's stream broke or could not start; it is retried after `retry_in` (and, when
    /// discovery runs again, discovery is asked where the agent went).
    Disconnected {
        /// Why.
        error: NodeError,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Discovery, run again, found an agent endpoint the watch did not follow (a new agent
    /// pod of a rolling update, a node that joined): it is followed from now on, and its
    /// [`WatchItem::Connected`] follows once it answers (unless its agent is already followed
    /// at another endpoint, a dual-stack pod's other address: it then stands by). Not sent
    /// for an endpoint whose pod is not ready ([`WatchItem::NotReady`] instead).
    EndpointAdded {
        /// The endpoint found.
        endpoint: NodeEndpoint,
    },
    /// Discovery, run again, no longer lists an endpoint the watch followed (its agent pod
    /// was deleted or replaced, its DNS record or nodes-file line removed): it is not
    /// followed any more. Says nothing of the node itself: its new agent, when discovery
    /// lists one, comes as an [`WatchItem::EndpointAdded`].
    EndpointRemoved {
        /// The endpoint no longer discovered.
        endpoint: NodeEndpoint,
    },
    /// Running discovery again failed: the watch goes on following the endpoints it has, and
    /// discovery runs again after `retry_in` (sooner when a node's stream breaks meanwhile,
    /// never within a second).
    DiscoveryFailed {
        /// Why ([`Error::Discovery`] or another error of [`Collector::rediscover`]).
        error: Arc<Error>,
        /// Delay before the next round.
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
    /// The next item. Over a fixed list of endpoints, `None` once no node is followed any
    /// more (every node was not ready or refused the watch); while one is, tasks run until the
    /// stream is dropped. When discovery runs again ([`Collector::rediscovers`]) the stream
    /// never ends by itself: a node not followed now may be found later.
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
    /// A collector made by [`Collector::discover`] over sources that can change
    /// ([`Collector::rediscovers`]) also runs discovery again, so that the watch follows the
    /// cluster's agents as they change (a DaemonSet rolling update gives each node's new agent
    /// pod a new IP; nodes join and leave): every [`CollectorConfig::refresh_interval`],
    /// and, with backoff (from [`BackoffConfig::initial`] up to that interval), soon after a
    /// node's stream breaks or while an agent pod is not ready. Endpoints discovery adds are
    /// followed ([`WatchItem::EndpointAdded`]), those it no longer lists are not
    /// ([`WatchItem::EndpointRemoved`]); a round that fails changes nothing
    /// ([`WatchItem::DiscoveryFailed`]). Not with a `pid` filter: a host pid names a
    /// different process on every node, so such a watch follows only the endpoints it starts
    /// with.
    ///
    /// [`CollectorConfig::refresh_interval`]: crate::CollectorConfig::refresh_interval
    /// [`BackoffConfig::initial`]: crate::BackoffConfig::initial
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
        let shared = node::Shared {
            inner: self.inner.clone(),
            filter,
            tx,
            claims: node::Claims::default(),
            lost: Arc::new(Notify::new()),
            ask_refused_again: None,
        };
        if self.rediscovers() && shared.filter.pid.is_none() {
            let shared = node::Shared {
                ask_refused_again: Some(self.inner.config.refresh_interval),
                ..shared
            };
            tasks.spawn(refresh::refresh(self.clone(), shared));
        } else {
            for ep in &self.inner.endpoints {
                let task = node::follow(shared.clone(), ep.clone(), None);
                tasks.spawn(async move {
                    task.await;
                });
            }
        }
        WatchStream { rx, _tasks: tasks }
    }
}
