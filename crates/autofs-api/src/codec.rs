//! The protobuf codec of the `autofs.v1` service, client and server: tonic-prost's, with an
//! encoding buffer sized for streams that sit idle.
//!
//! tonic encodes a response stream into one buffer per stream and hands it to HTTP/2 once it
//! holds `yield_threshold` bytes (32 KiB by default); the buffer keeps its grown capacity for
//! as long as the stream lives. A `WatchMounts` stream sends its whole initial snapshot in one
//! burst and then waits, often for hours, so with the defaults every watcher kept a 64 KiB
//! buffer. Handing the bytes over at 6 KiB keeps the buffer within its initial 8 KiB while
//! still sending a dozen or more reports per hand-over.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial capacity of a stream's encoding buffer (tonic's default).
const BUFFER_SIZE: usize = 8 * 1024;
/// Encoded bytes after which they are handed to HTTP/2: below [`BUFFER_SIZE`] by more than a
/// typical report, so the buffer does not grow.
const YIELD_THRESHOLD: usize = 6 * 1024;

/// [`ProstCodec`] with the encoding buffer described in the module docs; decoding is
/// tonic-prost's.
#[derive(Debug, Clone)]
pub struct StreamCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StreamCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StreamCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}
