//! One Kubernetes list, page by page, through whatever [`Client`] discovery was given, with
//! the API server's load shedding retried: `429 Too Many Requests` (API Priority and Fairness,
//! max-in-flight), `5xx` (an API server restarting behind a load balancer) and connections
//! dropped mid-request. A retry waits what the server's `Retry-After` says, else the crate's
//! exponential backoff; no wait may end past the discovery deadline. The request is sent with
//! [`Client::send`] because the `Retry-After` header is lost once kube-rs turns an answer into
//! an error.

use std::time::Duration;

use hyper::StatusCode;
use kube::Client;
use kube::api::ListParams;
use kube::client::Body;
use kube::core::{ObjectList, Request, Status};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{KubeError, PAGE};
use crate::backoff::{Backoff, BackoffConfig};

/// What to list and by when.
pub(super) struct Lister<'a> {
    /// The client.
    pub client: &'a Client,
    /// `listing pods in namespace N`, `listing nodes`: the start of every error.
    pub what: String,
    /// The collection's URL path (`/api/v1/namespaces/N/pods`).
    pub url_path: String,
    /// The list's `kind` (`PodList`); `List` is accepted too.
    pub kind: &'static str,
    /// No retry waits past this instant.
    pub deadline: Instant,
    /// What [`Lister::deadline`] is after the start (for messages).
    pub within: Duration,
    /// Delays between retries when the server gives no `Retry-After`.
    pub backoff: BackoffConfig,
}

/// Why one request failed.
enum Failure {
    /// Trying again may help: a 429, a 5xx, a dropped connection; with the server's
    /// `Retry-After`, if any.
    Transient {
        last: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help.
    Final(KubeError),
}

impl Lister<'_> {
    /// Every item of every page, handed to `page` one page at a time.
    ///
    /// # Errors
    ///
    /// [`KubeError::Api`] for a refusal (403, 404, …), [`KubeError::Unavailable`] when the
    /// server kept shedding load (or dropping the connection) until the deadline,
    /// [`KubeError::Request`] / [`KubeError::Credentials`] (via `classify`) for other request
    /// failures, [`KubeError::Parse`] for an answer that is not the expected list, and what
    /// `page` returns.
    pub async fn list<K>(
        &self,
        params: ListParams,
        classify: impl Fn(kube::Error) -> KubeError,
        mut page: impl FnMut(Vec<K>) -> Result<(), KubeError>,
    ) -> Result<(), KubeError>
    where
        K: Clone + DeserializeOwned,
    {
        let request = Request::new(&self.url_path);
        let mut token: Option<String> = None;
        loop {
            let mut params = params.clone().limit(PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let list: ObjectList<K> = self.page(&request, &params, &classify).await?;
            // A list without `kind` is what kube-rs calls `List`; anything else named is not
            // the resource asked for.
            if list.types.kind != self.kind && list.types.kind != "List" {
                return Err(KubeError::Parse(format!(
                    "kind is {}, expected {}",
                    list.types.kind, self.kind
                )));
            }
            page(list.items)?;
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) if token.as_ref() == Some(&next) => {
                    return Err(KubeError::Parse(format!(
                        "the API server sent the same continue token twice ({next})"
                    )));
                }
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// One page, retried while the failure is transient and the deadline allows.
    async fn page<K: Clone + DeserializeOwned>(
        &self,
        request: &Request,
        params: &ListParams,
        classify: &impl Fn(kube::Error) -> KubeError,
    ) -> Result<ObjectList<K>, KubeError> {
        let mut backoff = Backoff::new(self.backoff);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (last, retry_after) = match self.once(request, params, classify).await {
                Ok(list) => return Ok(list),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient { last, retry_after }) => (last, retry_after),
            };
            let wait = retry_after.unwrap_or_else(|| backoff.next_delay());
            if Instant::now() + wait > self.deadline {
                return Err(KubeError::Unavailable {
                    what: self.what.clone(),
                    attempts,
                    within: self.within,
                    last: match retry_after {
                        Some(after) => format!(
                            "{last} (Retry-After {} s would end past the deadline)",
                            after.as_secs()
                        ),
                        None => last,
                    },
                });
            }
            tracing::info!(
                what = %self.what, attempt = attempts, wait_ms = wait.as_millis() as u64,
                "{last}; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request.
    async fn once<K: Clone + DeserializeOwned>(
        &self,
        request: &Request,
        params: &ListParams,
        classify: &impl Fn(kube::Error) -> KubeError,
    ) -> Result<ObjectList<K>, Failure> {
        let mut req = request
            .list(params)
            .map_err(|e| Failure::Final(classify(kube::Error::BuildRequest(e))))?
            .map(Body::from);
        // kube-rs names its tracing span after this, as `Api::list` does.
        req.extensions_mut().insert("list");
        let res = match self.client.send(req).await {
            Ok(res) => res,
            Err(e) if is_dropped_connection(&e) => {
                return Err(Failure::Transient {
                    last: format!("connection dropped: {}", crate::render::error_text(&e)),
                    retry_after: None,
                });
            }
            Err(e) => return Err(Failure::Final(classify(e))),
        };
        let status = res.status();
        let retry_after = res
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            // "Retry-After: 0" is no hint: retried at once, every retry would hit a server
            // that is shedding load; the backoff decides then.
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
        let body = match res.into_body().collect_bytes().await {
            Ok(body) => body,
            Err(e) if is_dropped_connection(&e) => {
                return Err(Failure::Transient {
                    last: format!(
                        "connection dropped in the answer: {}",
                        crate::render::error_text(&e)
                    ),
                    retry_after: None,
                });
            }
            Err(e) => return Err(Failure::Final(classify(e))),
        };
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::Final(classify(kube::Error::SerdeError(e))));
        }
        // The API's `Status` object; load shedding in front of the handlers answers in plain
        // text.
        let (reason, message, retry_after) = match serde_json::from_slice::<Status>(&body) {
            Ok(s) => {
                let from_body = s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(s.into()));
                (s.reason, s.message, retry_after.or(from_body))
            }
            Err(_) => (
                status.canonical_reason().unwrap_or("").replace(' ', ""),
                String::from_utf8_lossy(&body).trim().to_owned(),
                retry_after,
            ),
        };
        if is_transient(status) {
            let reason = status.canonical_reason().unwrap_or(&reason);
            return Err(Failure::Transient {
                last: format!("HTTP {} {reason}: {message}", status.as_u16()),
                retry_after,
            });
        }
        Err(Failure::Final(KubeError::Api {
            what: self.what.clone(),
            code: status.as_u16(),
            reason,
            message,
        }))
    }
}

/// 429 and the 5xx that a restarting or overloaded API server (or the load balancer in front
/// of it) answers; not 501 / 505, which no retry changes.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// Whether the connection was reset or closed under a request or its answer (not refused,
/// not a TLS failure, not a timeout).
fn is_dropped_connection(e: &kube::Error) -> bool {
    use std::io::ErrorKind;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_shedding_and_server_errors_are_transient_refusals_are_not() {
        for code in [429u16, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400u16, 401, 403, 404, 410, 501, 505] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
