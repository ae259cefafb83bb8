//! Stream budgets: lists, watches and waits each have a global budget of their own (idle
//! watches never starve lists), and each client — its certificate identity under mutual TLS,
//! else its IP address — gets at most `max_streams_per_client` of each kind, so one client
//! cannot take them all.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Status};

use super::config::ServiceConfig;
use crate::listener::PeerInfo;

/// The kinds of stream, budgeted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum StreamKind {
    List,
    Watch,
    Wait,
}

impl StreamKind {
    /// The RPC's name (metrics and messages).
    pub(super) fn name(self) -> &'static str {
        match self {
            StreamKind::List => "ListMounts",
            StreamKind::Watch => "WatchMounts",
            StreamKind::Wait => "WaitMigratable",
        }
    }
}

/// The global and per-client budgets of every stream kind.
pub(super) struct Budgets {
    lists: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    waits: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    max_streams: usize,
    max_watches: usize,
}

impl Budgets {
    pub(super) fn new(config: &ServiceConfig) -> Self {
        // More slots than a semaphore holds are as good as that many (no agent serves that
        // many streams); asking for more must not panic at start.
        let slots = |n: usize| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        Self {
            lists: slots(config.max_streams),
            watches: slots(config.max_watches),
            waits: slots(config.max_watches),
            per_client: Arc::new(PerClient {
                limit: config.max_streams_per_client,
                open: Default::default(),
            }),
            max_streams: config.max_streams,
            max_watches: config.max_watches,
        }
    }

    /// The client's share first (a client at its limit takes nothing global), then a global
    /// slot of the kind. RESOURCE_EXHAUSTED when either is used up.
    pub(super) fn take(&self, kind: StreamKind, client: &str) -> Result<StreamSlot, Status> {
        let client_slot = self.per_client.try_take(kind, client).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "this client ({client}) already has {} {} streams open (--max-streams-per-client); close one or retry later",
                self.per_client.limit,
                kind.name()
            ))
        })?;
        let (global, limit) = match kind {
            StreamKind::List => (&self.lists, self.max_streams),
            StreamKind::Watch => (&self.watches, self.max_watches),
            StreamKind::Wait => (&self.waits, self.max_watches),
        };
        let global = global.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent streams ({} limit {limit}); retry later",
                kind.name()
            ))
        })?;
        Ok(StreamSlot {
            _client: client_slot,
            _global: global,
        })
    }
}

/// Streams open per client and kind. Entries exist only while a stream is open, so the map is
/// bounded by the global budgets.
struct PerClient {
    limit: usize,
    open: std::sync::Mutex<HashMap<(StreamKind, String), usize>>,
}

/// One client's share of a stream; given back on drop.
struct ClientSlot {
    owner: Arc<PerClient>,
    key: (StreamKind, String),
}

impl PerClient {
    fn try_take(self: &Arc<Self>, kind: StreamKind, client: &str) -> Option<ClientSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kind, client.to_owned());
        let n = open.entry(key.clone()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a running stream holds: its client's share and a global slot.
pub(super) struct StreamSlot {
    _client: ClientSlot,
    _global: OwnedSemaphorePermit,
}

/// Who sent a request, for budgets: the certificate identity, else the peer's IP address.
pub(super) fn client_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<PeerInfo>()
        .map_or_else(|| "unknown".to_owned(), PeerInfo::client_key)
}
