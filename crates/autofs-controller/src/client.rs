//! One agent connection: channel construction (timeouts, TLS, keep-alive), the version
//! handshake, and checks that what an agent sends obeys the API contract.

use std::path::PathBuf;
use std::time::Duration;

use autofs_api::v1::{self, autofs_inspector_client::AutofsInspectorClient};
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::endpoint::NodeEndpoint;
use crate::error::{Cause, Error, NodeErrorKind};

/// The generated client over a tonic channel.
pub type Client = AutofsInspectorClient<Channel>;

/// TLS client settings: the CA that agents' certificates chain to, and optionally a client
/// identity for agents that require mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificate(s), PEM.
    pub ca: PathBuf,
    /// Client certificate chain, PEM (mutual TLS).
    pub cert: Option<PathBuf>,
    /// Client private key, PEM (mutual TLS).
    pub key: Option<PathBuf>,
    /// Name to verify in every agent's certificate instead of the host of its endpoint
    /// (agents addressed by pod IP usually carry one shared DNS name).
    pub domain: Option<String>,
}

impl TlsOptions {
    /// Reads the files now, so a missing file is one clear error before any node is asked.
    ///
    /// # Errors
    ///
    /// - [`Error::TlsFile`] when the CA certificate, client certificate or client key cannot
    ///   be read (the [`std::io::Error`] is its source).
    /// - [`Error::Tls`] when the CA file holds no PEM certificate, or only one of `cert` and
    ///   `key` is given.
    pub fn load(&self) -> Result<ClientTlsConfig, Error> {
        let read = |what: &'static str, p: &PathBuf| {
            std::fs::read(p).map_err(|source| Error::TlsFile {
                what,
                path: p.clone(),
                source,
            })
        };
        let ca = read("CA certificate", &self.ca)?;
        if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Tls(format!(
                "CA certificate {}: no PEM certificate in it",
                self.ca.display()
            )));
        }
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Tls(
                    "a client certificate and its key go together (give both or neither)".into(),
                ));
            }
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }
}

/// Builds channels to agents.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    pub tls: Option<ClientTlsConfig>,
    pub connect_timeout: Duration,
}

impl Connector {
    /// A lazily connecting channel: connection failures surface as `UNAVAILABLE` statuses
    /// of the first call, the one code the retry loop acts on.
    ///
    /// # Errors
    ///
    /// [`NodeErrorKind::InvalidEndpoint`] when the address makes no URI or the TLS settings
    /// no channel (the tonic error is its source).
    pub fn channel(&self, ep: &NodeEndpoint, keep_alive: bool) -> Result<Channel, NodeErrorKind> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", ep.address))
            .map_err(|e| NodeErrorKind::InvalidEndpoint(Cause::with_source(e.to_string(), e)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if keep_alive {
            // Long-lived watch streams: notice a peer that vanished without a FIN/RST.
            endpoint = endpoint
                .http2_keep_alive_interval(Duration::from_secs(15))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
        }
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                NodeErrorKind::InvalidEndpoint(Cause::with_source(format!("TLS: {e}"), e))
            })?;
        }
        Ok(endpoint.connect_lazy())
    }

    /// A handshake (`GetNodeInfo`) failure, with what it may mean: a plaintext client whose
    /// connection is lost under its first call is what an agent serving TLS does to it
    /// (depending on timing the client sees a broken pipe, a closed connection, or the TLS
    /// alert read as a bad HTTP/2 frame).
    pub fn explain_handshake(&self, kind: NodeErrorKind) -> NodeErrorKind {
        match kind {
            NodeErrorKind::Unavailable(cause)
                if self.tls.is_none()
                    && cause.as_str().starts_with(LOST)
                    && !cause.as_str().contains("--tls-ca") =>
            {
                NodeErrorKind::Unavailable(cause.with_hint(
                    " (lost under the first call: does the agent serve TLS? Then give --tls-ca)",
                ))
            }
            kind => kind,
        }
    }

    /// A connected channel, or why there is none. The attempt's connect timeout is cut to
    /// the node's deadline; when that cut is what ended it, the answer is the deadline
    /// (`None` in the error), never an `UNAVAILABLE` racing it.
    pub async fn connect(
        &self,
        ep: &NodeEndpoint,
        deadline: Instant,
    ) -> Result<Channel, Option<NodeErrorKind>> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", ep.address))
            .map_err(|e| {
                Some(NodeErrorKind::InvalidEndpoint(Cause::with_source(
                    e.to_string(),
                    e,
                )))
            })?
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                Some(NodeErrorKind::InvalidEndpoint(Cause::with_source(
                    format!("TLS: {e}"),
                    e,
                )))
            })?;
        }
        let own_limit = deadline_after(self.connect_timeout);
        let cut_by_deadline = deadline <= own_limit;
        match tokio::time::timeout_at(own_limit.min(deadline), endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => {
                let mut text = error_chain(&e);
                if self.tls.is_some() && dropped(&e) {
                    text.push_str(
                        " (does the agent serve TLS? A plaintext agent drops the TLS handshake)",
                    );
                }
                Err(Some(NodeErrorKind::Unavailable(Cause::with_source(
                    text, e,
                ))))
            }
            Err(_) if cut_by_deadline => Err(None),
            Err(_) => Err(Some(NodeErrorKind::Unavailable(Cause::text(format!(
                "no connection within the connect timeout of {}",
                crate::error::fmt_duration(self.connect_timeout)
            ))))),
        }
    }
}

/// Whether the peer reset or closed the connection under `e` (an I/O error in its sources).
fn dropped(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | UnexpectedEof
            )
        })
    })
}

/// An error and its sources, `: `-separated, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s = s.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = source.and_then(std::error::Error::source);
    }
    text
}

/// The instant `d` from now; for a `d` past what an instant can hold (a timeout of
/// `u64::MAX` seconds), a century from now: no deadline in practice, never an overflow.
pub fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A request carrying the time left until `deadline` as its `grpc-timeout`, so the agent
/// stops working when the controller stops waiting.
///
/// `grpc-timeout` holds at most 8 digits of hours (about 11,400 years): a longer time left is
/// sent as that, which no agent will reach (tonic would panic on it).
pub(crate) fn request<T>(message: T, deadline: Instant) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let left = deadline.saturating_duration_since(Instant::now());
    req.set_timeout(left.clamp(Duration::from_millis(1), MAX_GRPC_TIMEOUT));
    req
}

/// The longest `grpc-timeout`: 99,999,999 hours (the gRPC spec's 8 digits).
const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(99_999_999 * 3600);

/// Classifies a failed call, once, from what happened:
/// - `DEADLINE_EXCEEDED` (the agent enforcing the `grpc-timeout` we sent) and tonic's own
///   "Timeout expired" (the client enforcing it) are the node's deadline — every request
///   carries exactly the time left until it ([`request`]). Its `timeout` is filled in by the
///   caller, which knows the configured one.
/// - A connection the agent reset or closed under the call is `UNAVAILABLE` (retried), whatever
///   code the transport gave it.
/// - An undecodable message is a contract violation.
pub(crate) fn status_kind(status: &tonic::Status) -> NodeErrorKind {
    let code = status.code();
    let timeout_expired = tonic::TimeoutExpired(()).to_string();
    if code == tonic::Code::DeadlineExceeded
        || (code == tonic::Code::Cancelled && status.message() == timeout_expired)
    {
        return NodeErrorKind::DeadlineExceeded {
            timeout: Duration::ZERO,
            last: None,
        };
    }
    if code != tonic::Code::Unavailable
        && let Some(cause) = connection_lost(status)
    {
        // With TLS 1.3 the client's handshake ends before the agent checks the client
        // certificate, so its refusal (an alert) arrives under the first call.
        let hint = if cause.contains("CertificateRequired") {
            " (the agent requires a client certificate: --tls-cert and --tls-key)"
        } else if cause.contains("UnknownCA") || cause.contains("BadCertificate") {
            " (the agent does not accept this client certificate: is it signed by the CA the agent trusts?)"
        } else {
            ""
        };
        return NodeErrorKind::Unavailable(Cause::text(format!("{LOST}{cause}{hint}")));
    }
    if code == tonic::Code::Internal && status.message().contains("decode") {
        return NodeErrorKind::Malformed(status.message().to_owned());
    }
    NodeErrorKind::from_status(status)
}

/// How the text of a call whose connection went away starts.
const LOST: &str = "the connection was lost: ";

/// What happened, when the call failed because the connection went away (reset, closed,
/// broken, refused by the agent's TLS after the handshake, or the request was cancelled with
/// it) rather than because the agent answered with an error.
fn connection_lost(status: &tonic::Status) -> Option<String> {
    use std::io::ErrorKind::{
        BrokenPipe, ConnectionAborted, ConnectionReset, InvalidData, UnexpectedEof,
    };
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        // The connection itself failed as HTTP/2 (this side sent GOAWAY): what the peer sent
        // is no HTTP/2 at all — typically the TLS records of an agent serving TLS.
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.is_library()
            && matches!(
                h2.reason(),
                Some(h2::Reason::FRAME_SIZE_ERROR | h2::Reason::PROTOCOL_ERROR)
            )
        {
            return Some(format!(
                "{e} (the peer does not speak plaintext HTTP/2: an agent serving TLS needs --tls-ca)"
            ));
        }
        // InvalidData: what the TLS layer under the connection failed with (an alert the
        // agent sent, such as certificate_required). h2 holds the I/O error of a connection
        // that broke under a stream (an agent killed mid-wait) inside itself, not as a source.
        let io = e
            .downcast_ref::<std::io::Error>()
            .or_else(|| e.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(io) = io
            && matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | InvalidData
            )
        {
            return Some(io.to_string());
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && (hyper.is_canceled() || hyper.is_closed() || hyper.is_incomplete_message())
        {
            return Some(
                e.source()
                    .map_or_else(|| hyper.to_string(), |cause| format!("{hyper}: {cause}")),
            );
        }
        source = e.source();
    }
    None
}

/// GetNodeInfo, as the agent answered it (see [`check_node_info`]).
pub(crate) async fn node_info(
    client: &mut Client,
    deadline: Instant,
) -> Result<v1::GetNodeInfoResponse, NodeErrorKind> {
    Ok(client
        .get_node_info(request(v1::GetNodeInfoRequest {}, deadline))
        .await
        .map_err(|s| status_kind(&s))?
        .into_inner())
}

/// The handshake's verdict: refuses agents of another API major, nameless agents and agents
/// that are not the node discovery expected.
pub(crate) fn check_node_info(
    info: &v1::GetNodeInfoResponse,
    ep: &NodeEndpoint,
) -> Result<(), NodeErrorKind> {
    if info.api_major != autofs_api::API_MAJOR {
        return Err(NodeErrorKind::VersionMismatch {
            agent_major: info.api_major,
            ours: autofs_api::API_MAJOR,
            agent_version: info.agent_version.clone(),
        });
    }
    if info.node.trim().is_empty() {
        return Err(NodeErrorKind::Malformed(
            "GetNodeInfo returned an empty node name".into(),
        ));
    }
    if let Some(expected) = &ep.expected_node
        && *expected != info.node
    {
        return Err(NodeErrorKind::IdentityMismatch {
            expected: expected.clone(),
            actual: info.node.clone(),
        });
    }
    Ok(())
}

/// A mount report must name the node that sent it and carry a real state.
pub(crate) fn check_report(m: &v1::MountReport, node: &str) -> Result<(), NodeErrorKind> {
    if m.node != node {
        return Err(NodeErrorKind::Malformed(format!(
            "report of mount {} ({}) names node `{}`",
            m.mount_id, m.mount_point, m.node
        )));
    }
    match v1::MountState::try_from(m.state) {
        Ok(v1::MountState::Unspecified) | Err(_) => Err(NodeErrorKind::Malformed(format!(
            "report of mount {} ({}) has state {}, which is not a verdict",
            m.mount_id, m.mount_point, m.state
        ))),
        // An ERROR report of an unparseable mountinfo line may have no mount point: it is a
        // per-mount verdict, not a malformed answer, and must not hide the node's other mounts.
        Ok(state) if m.mount_point.is_empty() && state != v1::MountState::Error => Err(
            NodeErrorKind::Malformed(format!("report of mount {} has no mount point", m.mount_id)),
        ),
        Ok(_) if !is_container_id(&m.container_id) => Err(NodeErrorKind::Malformed(format!(
            "report of mount {} ({}) has container id {:?}, which is not hex",
            m.mount_id,
            m.mount_point,
            m.container_id.chars().take(80).collect::<String>()
        ))),
        Ok(_) => Ok(()),
    }
}

/// Empty, or up to 64 hex digits.
fn is_container_id(id: &str) -> bool {
    id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Every error in the chain below `e`, outermost first.
    fn chain<'a>(
        e: &'a (dyn std::error::Error + 'static),
    ) -> Vec<&'a (dyn std::error::Error + 'static)> {
        std::iter::successors(Some(e), |&e| e.source()).collect()
    }

    #[test]
    fn an_unreadable_tls_file_keeps_its_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("missing-ca.pem");
        let err = TlsOptions {
            ca: ca.clone(),
            ..TlsOptions::default()
        }
        .load()
        .unwrap_err();
        let Error::TlsFile { what, path, source } = &err else {
            panic!("expected TlsFile, got {err:?}");
        };
        assert_eq!((*what, path), ("CA certificate", &ca));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        // The chain reads as the flattened message did: message, then cause.
        let io = err
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("TLS configuration: CA certificate {}", ca.display())
        );
    }

    #[tokio::test]
    async fn a_refused_connection_keeps_the_transport_error_and_its_io_cause() {
        let closed = autofs_testkit::closed_port::ClosedPort::bind().unwrap();
        let ep = NodeEndpoint::parse(&closed.addr().to_string(), "test").unwrap();
        let connector = Connector {
            tls: None,
            connect_timeout: Duration::from_secs(30),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let kind = connector.connect(&ep, deadline).await.unwrap_err().unwrap();
        let NodeErrorKind::Unavailable(cause) = &kind else {
            panic!("expected Unavailable, got {kind:?}");
        };
        let links = chain(&kind);
        assert!(
            links[2].downcast_ref::<tonic::transport::Error>().is_some(),
            "the cause's source is the transport error: {links:?}"
        );
        let refused = links
            .iter()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        assert!(refused, "an io::Error ConnectionRefused in {links:?}");
        // The text still quotes the whole chain for people.
        assert!(cause.as_str().contains("Connection refused"), "{cause}");
        assert!(kind.to_string().starts_with("unavailable: "), "{kind}");
    }

    #[test]
    fn an_invalid_endpoint_keeps_the_uri_error() {
        let ep = NodeEndpoint {
            address: "bad host:1".into(),
            expected_node: None,
            origin: "test".into(),
            not_ready: None,
        };
        let connector = Connector {
            tls: None,
            connect_timeout: Duration::from_secs(1),
        };
        let kind = connector.channel(&ep, false).unwrap_err();
        assert!(
            matches!(kind, NodeErrorKind::InvalidEndpoint(_)),
            "{kind:?}"
        );
        assert!(
            chain(&kind)
                .iter()
                .any(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
            "{kind:?}"
        );
    }
}
