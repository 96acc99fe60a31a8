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

on_both_backends!(
    undecodable_requests_are_invalid_argument_with_a_generic_message,
    undecodable_requests_to_health_and_reflection_are_invalid_argument_too,
    undecodable_check_requests_are_invalid_argument_and_large_ones_within_the_limit_are_answered,
);

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

/// Opens a stream to the method at `path`, sends `bodies` as its messages, and reads answers
/// until the stream ends: how many came, and the status it ended with.
pub async fn stream_raw(app: &TestApp, path: &str, bodies: Vec<Vec<u8>>) -> (usize, Result<(), Status>) {
    let mut grpc = Grpc::new(app.channel.clone());
    grpc.ready().await.expect("the channel is ready");
    let path: http::uri::PathAndQuery = path.parse().expect("a valid path");
    let request = tonic::Request::new(tokio_stream::iter(bodies));
    let mut answers = match grpc.streaming(request, path, RawCodec).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (0, Err(status)),
    };
    let mut received = 0;
    loop {
        match answers.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

fn assert_malformed(outcome: Result<(), Status>, case: &str, path: &str) {
    let status = outcome.expect_err(case);
    assert_eq!(status.code(), Code::InvalidArgument, "{case} on {path}: {status:?}");
    assert_eq!(status.message(), "malformed request", "{case} on {path}");
}

/// Bytes that no request decodes from, whatever its fields: each case names what is wrong.
fn undecodable() -> [(&'static str, Vec<u8>); 5] {
    [
        // field 1 (email), length 2, bytes that are not UTF-8
        ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xff, 0xfe]),
        // field 1 sent as a varint where a string is declared
        ("a wrong wire type", vec![0x08, 0x01]),
        ("garbage", vec![0xff; 16]),
        // field 1, length 16, but only one byte follows
        ("a truncated field", vec![0x0a, 0x10, b'a']),
        // an unknown field 5 opening 200 nested groups, past prost's recursion limit
        ("deep nesting", vec![0x2b; 200]),
    ]
}

async fn undecodable_requests_are_invalid_argument_with_a_generic_message(app: TestApp) {
    let cases = undecodable();
    for path in ["/identity.v1.AuthService/Signup", "/identity.v1.AuthService/Login"] {
        for (case, body) in &cases {
            let status = call_raw(&app, path, body.clone()).await.expect_err(case);
            assert_eq!(status.code(), Code::InvalidArgument, "{case} on {path}: {status:?}");
            assert_eq!(status.message(), "malformed request", "{case} on {path}");
        }
    }
    assert_healthy(&app.channel).await;
}

/// tonic's own services (health, reflection) decode with tonic-prost, which answered INTERNAL
/// with prost's text (health) or ended the stream with OK (reflection).
async fn undecodable_requests_to_health_and_reflection_are_invalid_argument_too(app: TestApp) {
    const REFLECTION: [&str; 2] = [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    // ServerReflectionRequest { list_services: "" }: field 7, length 0.
    let list_services = vec![0x3a, 0x00];
    for (case, body) in undecodable() {
        let path = "/grpc.health.v1.Health/Check";
        assert_malformed(call_raw(&app, path, body.clone()).await.map(drop), case, path);
        let path = "/grpc.health.v1.Health/Watch";
        let (answers, outcome) = stream_raw(&app, path, vec![body.clone()]).await;
        assert_eq!(answers, 0, "{case} on {path}");
        assert_malformed(outcome, case, path);
        for path in REFLECTION {
            // A good request is answered; the bad one after it ends the stream.
            let (answers, outcome) = stream_raw(&app, path, vec![list_services.clone(), body.clone()]).await;
            assert_eq!(answers, 1, "{case} on {path}");
            assert_malformed(outcome, case, path);
        }
    }
    // Held to the same size limit as ours too: a service name of 20 kB.
    let mut oversized = vec![0x0a, 0xa0, 0x9c, 0x01];
    oversized.resize(4 + 20_000, b'a');
    let status = call_raw(&app, "/grpc.health.v1.Health/Check", oversized).await.expect_err("20 kB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_healthy(&app.channel).await;
}

/// Envoy's Check is decoded by envoy-types' generated server (tonic-prost, which answered
/// INTERNAL with prost's text); it takes requests up to 96 KiB, since Envoy sends every header.
async fn undecodable_check_requests_are_invalid_argument_and_large_ones_within_the_limit_are_answered(
    app: TestApp,
) {
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest,
        attribute_context::{HttpRequest, Request},
        authorization_client::AuthorizationClient,
    };
    const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
    for (case, body) in undecodable() {
        assert_malformed(call_raw(&app, CHECK, body).await.map(drop), case, CHECK);
    }
    let with_cookie = |bytes: usize| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    headers: [("cookie".to_owned(), "c".repeat(bytes))].into(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    };
    let mut client = AuthorizationClient::new(app.channel.clone());
    // Envoy's default header limit, 60 KiB: answered (denied: no token), past our usual 16 KiB.
    let answer = client.check(with_cookie(60 * 1024)).await.expect("a 60 KiB Check is answered");
    assert_eq!(answer.into_inner().status.map(|status| status.code), Some(Code::Unauthenticated as i32));
    let status = client.check(with_cookie(100 * 1024)).await.expect_err("past 96 KiB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_healthy(&app.channel).await;
}
