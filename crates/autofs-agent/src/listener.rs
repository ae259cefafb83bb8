//! Connections before a peer has authenticated, bounded: every listener accepts at most its
//! share of the descriptor budget at once (the accept loop waits for a free slot), a peer must
//! finish the TLS handshake and send the HTTP/2 preface within a deadline or lose its
//! connection, TCP keepalive is set on every accepted socket, and accept errors (`EMFILE`)
//! back off instead of spinning, with a rate-limited log.
//!
//! The agent binds its own listeners, so tonic's `tcp_keepalive` never applies to them; and
//! tonic's TLS takes no handshake deadline nor a certificate policy. So connections are made
//! ready here — slot, keepalive, TLS, preface — and only then handed to the servers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::metrics as m;

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest pause between accept attempts after resource errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this period per listener and kind; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How one listener admits connections.
#[derive(Clone)]
pub struct Admission {
    /// Listener name in logs and metrics (`grpc`, `metrics`, `health`).
    pub name: &'static str,
    /// Connections open at once, admitted or being admitted.
    pub max_connections: usize,
    /// TLS handshake plus HTTP/2 preface must complete within this.
    pub handshake_timeout: Duration,
    /// Idle time before TCP keepalive probes start (probes every third of it, 3 of them).
    pub keepalive: Duration,
    /// TLS, when the listener serves it.
    pub tls: Option<TlsAcceptor>,
    /// Require the HTTP/2 preface (gRPC listeners; the metrics listener speaks HTTP/1).
    pub http2: bool,
}

/// Who is at the other end of a connection, as the service sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Unique per connection for the life of the process.
    pub connection: u64,
    /// The subject of the client certificate (mutual TLS), if any.
    pub identity: Option<String>,
}

impl PeerInfo {
    /// What budgets are shared by: the certificate identity, else the peer's IP address.
    pub fn client_key(&self) -> String {
        match &self.identity {
            Some(subject) => format!("cert:{subject}"),
            None => format!("ip:{}", self.remote.ip()),
        }
    }
}

/// An admitted connection. Holds its listener slot until dropped.
pub struct Conn {
    io: Io,
    /// Bytes read during admission (the HTTP/2 preface), replayed before the socket's.
    replay: Vec<u8>,
    replayed: usize,
    peer: PeerInfo,
    _slot: Slot,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A listener slot; counts the connection as open while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    listener: &'static str,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, listener: &'static str) -> Slot {
        m::connection_opened(listener);
        Slot {
            _permit: permit,
            listener,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        m::connection_closed(self.listener);
    }
}

impl Conn {
    /// The peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Why a connection was closed before it was handed to a server.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no TLS handshake and HTTP/2 preface within {0:?}")]
    Timeout(Duration),
    #[error("client certificate refused: {0}")]
    Certificate(io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("not HTTP/2 (no preface)")]
    NotHttp2,
    #[error("closed during the handshake: {0}")]
    Io(io::Error),
}

impl Admission {
    /// The [`Refusal`] reasons this listener can count: none for plaintext HTTP/1 (nothing
    /// is awaited before serving), the handshake's with TLS, the preface's with HTTP/2.
    fn refusal_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.tls.is_some() || self.http2 {
            reasons.extend(["handshake_timeout", "io"]);
        }
        if self.tls.is_some() {
            reasons.extend(["tls", "client_certificate"]);
        }
        if self.http2 {
            reasons.push("not_http2");
        }
        reasons
    }
}

impl Refusal {
    fn reason(&self) -> &'static str {
        match self {
            Refusal::Timeout(_) => "handshake_timeout",
            Refusal::Certificate(_) => "client_certificate",
            Refusal::Tls(_) => "tls",
            Refusal::NotHttp2 => "not_http2",
            Refusal::Io(_) => "io",
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped, yielding admitted connections
/// (for `serve_with_incoming`).
pub fn incoming(
    listener: TcpListener,
    admission: Admission,
) -> impl tokio_stream::Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(accept_loop(listener, admission, tx));
    tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok)
}

async fn accept_loop(listener: TcpListener, admission: Admission, tx: mpsc::Sender<Conn>) {
    let slots = Arc::new(Semaphore::new(admission.max_connections.max(1)));
    let admission = Arc::new(admission);
    let name = admission.name;
    m::listener_started(name, &admission.refusal_reasons());
    let mut accept_errors = RateLimitedLog::default();
    let refusals = Arc::new(std::sync::Mutex::new(RateLimitedLog::default()));
    let mut backoff = Duration::ZERO;
    loop {
        // Wait for a free slot before accepting: past the cap, peers wait in the kernel's
        // backlog and cost the agent nothing.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => {
                backoff = Duration::ZERO;
                conn
            }
            Err(e) if is_connection_error(&e) => continue, // that peer's problem, not ours
            Err(e) => {
                m::accept_error(name);
                // EMFILE and friends: retrying at once only spins; wait, longer each time.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                if let Some(suppressed) = accept_errors.should_log() {
                    tracing::warn!(listener = name, error = %e, suppressed, retry_in = ?backoff, "accept failed");
                }
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                continue;
            }
        };
        let slot = Slot::new(permit, name);
        let admission = admission.clone();
        let tx = tx.clone();
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            match admit(stream, remote, slot, &admission).await {
                Ok(conn) => {
                    let _ = tx.send(conn).await;
                }
                Err(refusal) => {
                    m::connection_refused(name, refusal.reason());
                    let log = refusals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .should_log();
                    match (&refusal, log) {
                        (Refusal::Certificate(_), Some(suppressed)) => {
                            tracing::warn!(listener = name, peer = %remote, suppressed, "{refusal}");
                        }
                        _ => tracing::debug!(listener = name, peer = %remote, "{refusal}"),
                    }
                }
            }
        });
    }
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Keepalive, then TLS and the HTTP/2 preface under one deadline.
async fn admit(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    admission: &Admission,
) -> Result<Conn, Refusal> {
    let keepalive = TcpKeepalive::new()
        .with_time(admission.keepalive)
        .with_interval((admission.keepalive / 3).max(Duration::from_secs(1)))
        .with_retries(3);
    if let Err(e) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(peer = %remote, error = %e, "cannot set TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
    let deadline = crate::timer::after(admission.handshake_timeout);
    let timeout = || Refusal::Timeout(admission.handshake_timeout);
    let (io, identity) = match &admission.tls {
        None => (Io::Plain(stream), None),
        Some(acceptor) => {
            let tls = crate::timer::until(deadline, acceptor.accept(stream))
                .await
                .ok_or_else(timeout)?
                .map_err(classify_tls_error)?;
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| crate::tls::subject(leaf));
            (Io::Tls(Box::new(tls)), identity)
        }
    };
    let mut conn = Conn {
        io,
        replay: Vec::new(),
        replayed: 0,
        peer: PeerInfo {
            remote,
            connection: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
            identity,
        },
        _slot: slot,
    };
    if admission.http2 {
        crate::timer::until(deadline, read_preface(&mut conn.io))
            .await
            .ok_or_else(timeout)??;
        conn.replay = H2_PREFACE.to_vec();
    }
    Ok(conn)
}

/// Reads the HTTP/2 preface, refusing the peer at the first byte that differs from it.
async fn read_preface(io: &mut Io) -> Result<(), Refusal> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < buf.len() {
        let n = io.read(&mut buf[filled..]).await.map_err(Refusal::Io)?;
        if n == 0 {
            return Err(Refusal::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            return Err(Refusal::NotHttp2);
        }
    }
    Ok(())
}

fn classify_tls_error(e: io::Error) -> Refusal {
    let certificate = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if certificate {
        Refusal::Certificate(e)
    } else {
        Refusal::Tls(e)
    }
}

/// Errors of one incoming connection (it was reset before we took it): accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Lets one message through per [`LOG_EVERY`] and counts the ones it holds back.
#[derive(Debug, Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// `Some(messages suppressed since the last one)` when this one may be logged.
    fn should_log(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_errors_logs_once_and_counts_the_rest() {
        let mut log = RateLimitedLog::default();
        assert_eq!(log.should_log(), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.should_log(), None);
        }
        log.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(log.should_log(), Some(1000));
    }
}
