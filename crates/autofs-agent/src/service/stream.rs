//! What every server stream shares: a producer task feeds a bounded channel, so a slow client
//! applies backpressure (the producer waits) and a client that goes away closes the channel
//! and stops the producer; a client that reads nothing for [`STALL_LIMIT`] loses its stream;
//! a status set by the producer ends the stream after its last message; the client's
//! deadline is honoured by the producer.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

/// Messages buffered per stream before the producer waits for the client.
pub(super) const STREAM_BUFFER: usize = 32;

/// A message on its way to a stream's client. Boxed: the channel's slots, which it allocates
/// in blocks of 32 and keeps for reuse while the stream lives, then hold a pointer each rather
/// than a whole message (a `MountEvent` is 424 bytes), so an idle stream does not keep tens of
/// KiB of slots from its initial burst.
pub(super) type Outgoing<T> = Box<T>;
/// A client that reads nothing for this long loses its stream (and frees the slot).
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// A server stream as tonic takes it.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How a stream ends after its last message: normally, or with the status a producer set
/// when it had to stop early. The status reaches the client even when the channel is full.
#[derive(Clone, Default)]
pub(super) struct Ending(Arc<std::sync::Mutex<Option<Status>>>);

impl Ending {
    pub(super) fn fail(&self, status: Status) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
    }

    pub(super) fn stream<T: Send + 'static>(
        self,
        rx: mpsc::Receiver<Outgoing<T>>,
    ) -> EventStream<T> {
        let last = std::iter::from_fn(move || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(Err)
        });
        Box::pin(
            ReceiverStream::new(rx)
                .map(|item| Ok(*item))
                .chain(tokio_stream::iter(last)),
        )
    }
}

/// Sends one message, giving up on a client that has not read for [`STALL_LIMIT`]. `Err` with
/// the call's code when the stream must stop (client gone or stalled; `ending` says which to
/// the client).
pub(super) async fn send<T>(
    tx: &mpsc::Sender<Outgoing<T>>,
    item: T,
    ending: &Ending,
) -> Result<(), tonic::Code> {
    match tokio::time::timeout(STALL_LIMIT, tx.send(Box::new(item))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(tonic::Code::Cancelled), // the client went away
        Err(_) => {
            ending.fail(Status::resource_exhausted(format!(
                "the client read nothing for {} s; stream closed to free its slot",
                STALL_LIMIT.as_secs()
            )));
            Err(tonic::Code::ResourceExhausted)
        }
    }
}

/// The client's deadline (`grpc-timeout`), which a stream must honour itself. Values beyond
/// the 8 digits gRPC allows, or otherwise unusable, mean no deadline (never a panic).
pub(super) fn deadline<T>(req: &Request<T>) -> Option<Instant> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    crate::timer::after(d)
}

pub(super) use crate::timer::sleep_until;

/// Resolves once the server is shutting down.
pub(super) async fn shutting_down(mut shutdown: watch::Receiver<bool>) {
    // A dropped sender also means the server is going away.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
