//! The Prometheus endpoint: `GET /metrics` as text on a listener of its own (anything else:
//! 404), over the connections the listener admits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use crate::listener::Conn;

/// Serves `GET /metrics` on the admitted connections of `incoming` until `shutdown` resolves.
pub async fn serve(
    incoming: impl tokio_stream::Stream<Item = std::io::Result<Conn>>,
    handle: PrometheusHandle,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    tokio::pin!(incoming);
    loop {
        let conn = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(conn)) => conn,
                Some(Err(_)) => continue,
                None => return,
            },
            () = &mut shutdown => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let peer = conn.peer().remote;
            let service = hyper::service::service_fn(move |req| respond(req, handle.clone()));
            let io = hyper_util::rt::TokioIo::new(conn);
            // The header deadline also closes connections that never send a request.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                // None (no bound) for a duration no instant can be that far from now.
                .header_read_timeout(crate::timer::after(header_timeout).map(|_| header_timeout))
                .serve_connection(io, service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "metrics connection ended with an error");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(handle.render()))),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found: metrics are at /metrics\n",
            ))),
    };
    Ok(response.expect("static response parts are valid"))
}

/// Binds the metrics listener.
///
/// # Errors
///
/// An error naming `addr`, with the bind error, when it cannot be listened on.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}
