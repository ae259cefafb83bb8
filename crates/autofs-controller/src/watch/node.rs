//! Following one node's agent: connect, shake hands, stream `WatchMounts`, and when the
//! stream breaks, back off and start again, until the watch stops this task.

use std::sync::Arc;
use std::time::Duration;

use autofs_api::v1;
use tokio::sync::{Notify, mpsc};

use super::WatchItem;
use crate::backoff::Backoff;
use crate::client::{self, Client};
use crate::collector::Inner;
use crate::endpoint::NodeEndpoint;
use crate::error::{Cause, NodeError, NodeErrorKind};

/// Which endpoint follows each agent process (`agent_instance`): an agent reached at two
/// endpoints (a dual-stack pod's IPv4 and IPv6 addresses) is followed at one of them, so its
/// events are not merged in twice; the other stands by and takes over when that stream breaks.
#[derive(Clone, Default)]
pub(super) struct Claims(Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

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

    /// `endpoint` follows nothing any more (its task was stopped, and with it the release
    /// it would have made when its stream ended).
    pub(super) fn release_endpoint(&self, endpoint: &str) {
        let mut claims = self.0.lock().unwrap_or_else(|p| p.into_inner());
        claims.retain(|_, e| e != endpoint);
    }
}

/// What every node task of one watch shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub inner: Arc<Inner>,
    pub filter: v1::ListMountsRequest,
    pub tx: mpsc::Sender<WatchItem>,
    pub claims: Claims,
    /// Told each time a node's agent cannot be followed where it was found (its stream broke
    /// or could not start, or its pod is not ready): discovery may know where it went.
    pub lost: Arc<Notify>,
    /// When an agent that refused the watch for what it is gets asked again (`None`: never).
    pub ask_refused_again: Option<Duration>,
}

/// How a node's task ended (it runs until the watch stops it otherwise).
pub(super) enum Ended {
    /// The endpoint's pod is not ready, or the consumer went away.
    Quietly,
    /// The agent refused the watch (`text`: the error as the item said it); `again`: whether
    /// asking it again may help (it refused for what it is, not for the filter).
    Refused { text: String, again: bool },
}

/// One node, until the watch stops it: connect, stream, back off, repeat. An endpoint whose
/// pod is not ready is reported once and not followed. `quiet`: the refusal already reported
/// for this endpoint, not reported again.
pub(super) async fn follow(shared: Shared, ep: NodeEndpoint, quiet: Option<String>) -> Ended {
    let Shared {
        inner,
        filter,
        tx,
        claims,
        lost,
        ask_refused_again,
    } = shared;
    if let Some(why) = &ep.not_ready {
        let error = NodeError::new(
            &ep.address,
            ep.expected_node.as_deref(),
            NodeErrorKind::NotReady(why.clone()),
        );
        lost.notify_one();
        let _ = tx.send(WatchItem::NotReady { error }).await;
        return Ended::Quietly;
    }
    let mut backoff = Backoff::new(inner.config.backoff);
    // The node this endpoint serves, as far as known: Kubernetes says it, or the last agent
    // that answered here named it; failures to reconnect name it too.
    let mut name = ep.expected_node.clone();
    loop {
        let kind = match start(&inner, &ep, &filter, &claims).await {
            Err((said, kind)) => {
                // The node Kubernetes names stays: an agent naming another is the failure.
                if ep.expected_node.is_none() && said.is_some() {
                    name = said;
                }
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
                    return Ended::Quietly;
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
                                return Ended::Quietly;
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
            // A filter refused as invalid is refused by every agent: asking again cannot help.
            let again = !error.kind.is_invalid_request();
            let text = error.to_string();
            if quiet.as_deref() != Some(text.as_str()) {
                let asked_again_in = ask_refused_again.filter(|_| again);
                let _ = tx
                    .send(WatchItem::Refused {
                        error,
                        asked_again_in,
                    })
                    .await;
            }
            return Ended::Refused { text, again };
        }
        let retry_in = backoff.next_delay();
        lost.notify_one();
        if tx
            .send(WatchItem::Disconnected { error, retry_in })
            .await
            .is_err()
        {
            return Ended::Quietly;
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
