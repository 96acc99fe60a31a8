//! Bytes that are not the request they claim to be, sent as raw gRPC frames over a real HTTP/2
//! connection: each is INVALID_ARGUMENT with a generic message, never INTERNAL with decoder
//! details, and the server carries on.

use prost::bytes::{Buf, BufMut};
use tonic::{
    Code, Status,
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::{connections::assert_healthy, helpers::TestApp, on_both_backends};

on_both_backends!(undecodable_requests_are_invalid_argument_with_a_generic_message);

/// Sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls the unary method at `path` with `body` as the whole message.
pub async fn call_raw(app: &TestApp, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = Grpc::new(app.channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path: http::uri::PathAndQuery = path.parse().expect("a valid path");
    Ok(grpc.unary(tonic::Request::new(body), path, RawCodec).await?.into_inner())
}

async fn undecodable_requests_are_invalid_argument_with_a_generic_message(app: TestApp) {
    let cases: [(&str, Vec<u8>); 5] = [
        // field 1 (email), length 2, bytes that are not UTF-8
        ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xff, 0xfe]),
        // field 1 sent as a varint where a string is declared
        ("a wrong wire type", vec![0x08, 0x01]),
        ("garbage", vec![0xff; 16]),
        // field 1, length 16, but only one byte follows
        ("a truncated field", vec![0x0a, 0x10, b'a']),
        // an unknown field 5 opening 200 nested groups, past prost's recursion limit
        ("deep nesting", vec![0x2b; 200]),
    ];
    for path in ["/identity.v1.AuthService/Signup", "/identity.v1.AuthService/Login"] {
        for (case, body) in &cases {
            let status = call_raw(&app, path, body.clone()).await.expect_err(case);
            assert_eq!(status.code(), Code::InvalidArgument, "{case} on {path}: {status:?}");
            assert_eq!(status.message(), "malformed request", "{case} on {path}");
        }
    }
    assert_healthy(&app.channel).await;
}
