//! The codec of the `identity.v1` services (wired in by `build.rs`): prost's encoding, and a
//! decoder that answers a request it cannot decode (invalid UTF-8 in a string, a wrong wire
//! type, a truncated or garbage body, nesting past prost's recursion limit) with
//! INVALID_ARGUMENT and a generic message. tonic-prost answers INTERNAL with prost's own text,
//! which blames the server for the caller's bytes and describes the decoder to a stranger.

use std::marker::PhantomData;

use prost::{Message, bytes::Buf};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// What a caller is told about bytes that are not a valid message of the method's type.
pub const MALFORMED: &str = "malformed request";

/// [`tonic_prost::ProstCodec`] with [`StrictDecoder`] in place of its decoder.
#[derive(Debug, Clone, Copy)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Decodes `U`; any decode error becomes INVALID_ARGUMENT [`MALFORMED`].
#[derive(Debug, Clone, Copy)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Taken out of tonic's buffer first (no copy: the message's bytes, shared), so that
        // prost reads a plain `Bytes`, whose reads and skips cost a few instructions, rather
        // than going through the buffer's window at every field.
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message).map(Some).map_err(|error| {
            tracing::debug!(%error, "undecodable request");
            Status::invalid_argument(MALFORMED)
        })
    }
}
