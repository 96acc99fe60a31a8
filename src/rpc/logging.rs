//! The edge of every RPC: a request id (taken from `x-request-id` or generated, and echoed
//! back), a tracing span carrying it with the method and peer address (so audit events inside
//! the handler carry them too), one log line with the status code and latency, and the status
//! code fix-up below. Never metadata values or bodies, which carry passwords and tokens. When
//! the server exports traces, the request runs under its trace subscriber, in a span that
//! continues the caller's trace (see [`crate::telemetry::Traces`]).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, header::HeaderName};
use tonic::{
    Code,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::telemetry::RpcTracing;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// Longest client-chosen request id kept; a longer or non-printable one is replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The layer; with `tracing`, each RPC runs under the server's trace subscriber.
#[derive(Clone, Default)]
pub struct RpcLogLayer {
    tracing: Option<RpcTracing>,
}

impl RpcLogLayer {
    pub fn new(tracing: Option<RpcTracing>) -> Self {
        Self { tracing }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog { inner, tracing: self.tracing.clone() }
    }
}

#[derive(Clone)]
pub struct RpcLog<S> {
    inner: S,
    tracing: Option<RpcTracing>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + 'static,
    ResBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let request_id = request_id(&request);
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        let path = request.uri().path();
        let method = super::methods::label(path);
        let peer = peer_addr(&request);
        let Some(tracing) = &self.tracing else {
            // A path that names no served method is logged as sent: a log field is no label.
            let logged = if method == super::methods::OTHER { path } else { method };
            // Fields are formatted by the subscriber, only if it records them.
            let span = tracing::info_span!(
                "rpc",
                method = %logged,
                request_id = request_id.to_str().unwrap_or_default(),
                peer = tracing::field::display(PeerAddr(peer))
            );
            let response = span.in_scope(|| self.inner.call(request));
            return Box::pin(finish(response, method, request_id, started, None).instrument(span));
        };
        let span = tracing.rpc_span(
            request.headers(),
            method,
            request_id.to_str().unwrap_or_default(),
            &PeerAddr(peer).to_string(),
        );
        let dispatch = tracing.dispatch();
        let response =
            tracing::dispatcher::with_default(dispatch, || span.in_scope(|| self.inner.call(request)));
        let traced = Some(span.clone());
        Box::pin(tracing.run(finish(response, method, request_id, started, traced).instrument(span)))
    }
}

/// Waits for the response, then tags it with the request id, fixes up its status code, and
/// logs and counts it (and records its status on `traced`, the RPC's exported span).
async fn finish<F, ResBody, E>(
    response: F,
    method: &'static str,
    request_id: HeaderValue,
    started: Instant,
    traced: Option<tracing::Span>,
) -> Result<http::Response<ResBody>, E>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: std::fmt::Display,
{
    let mut result = response.await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &mut result {
        Ok(response) => {
            response.headers_mut().insert(REQUEST_ID, request_id);
            let code = remap_status(response.headers_mut());
            record(method, code, started.elapsed().as_secs_f64());
            if let Some(span) = &traced {
                crate::telemetry::record_rpc_status(span, code);
            }
            if method.starts_with("/grpc.") {
                tracing::debug!(target: "rpc", code = ?code, latency_ms, "rpc");
            } else {
                tracing::info!(target: "rpc", code = ?code, latency_ms, "rpc");
            }
        }
        Err(error) => tracing::warn!(target: "rpc", %error, latency_ms, "rpc failed"),
    }
    result
}

/// `method` is a [`super::methods::label`]: served methods only, so that a caller cannot mint
/// label values with invented paths.
fn record(method: &'static str, code: Code, seconds: f64) {
    metrics::counter!(crate::metrics::RPC_REQUESTS, "method" => method, "code" => code_name(code))
        .increment(1);
    metrics::histogram!(crate::metrics::RPC_DURATION, "method" => method).record(seconds);
}

/// The canonical name of a status code, as gRPC's own documentation and exporters spell it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status of a response. An error is sent "trailers-only", in the headers; a success has
/// no status in its headers and sends OK in the trailers.
///
/// tonic answers OUT_OF_RANGE for a message over the decode limit, but gRPC's status table says
/// a message over the server's limit is RESOURCE_EXHAUSTED, which is also what a client should
/// act on (send less). Told apart by tonic's message (percent-encoded in the header) from the
/// service's own OUT_OF_RANGE (a stream cursor past the retention), which stays.
fn remap_status(headers: &mut http::HeaderMap) -> Code {
    let code = headers
        .get(&GRPC_STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32);
    let too_large = headers
        .get(&GRPC_MESSAGE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|message| message.replace("%20", " ").contains("message length too large"));
    if code == Code::OutOfRange && too_large {
        headers.insert(GRPC_STATUS, HeaderValue::from(Code::ResourceExhausted as i32));
        return Code::ResourceExhausted;
    }
    code
}

/// The client's `x-request-id` if it is a sane token, else a new UUID.
fn request_id<B>(request: &http::Request<B>) -> HeaderValue {
    request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| {
            let bytes = value.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

struct PeerAddr(Option<SocketAddr>);

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => Ok(()),
        }
    }
}

fn peer_addr<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions.get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr).or_else(|| {
        extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|tls| tls.get_ref().remote_addr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_message_becomes_resource_exhausted_and_nothing_else_changes() {
        let mut headers = http::HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from(Code::OutOfRange as i32));
        headers.insert(
            GRPC_MESSAGE,
            HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%205%20bytes",
            ),
        );
        assert_eq!(remap_status(&mut headers), Code::ResourceExhausted);
        assert_eq!(headers[&GRPC_STATUS], "8");
        let mut cursor = http::HeaderMap::new();
        cursor.insert(GRPC_STATUS, HeaderValue::from(Code::OutOfRange as i32));
        cursor.insert(GRPC_MESSAGE, HeaderValue::from_static("after_cursor%201%20is%20older"));
        assert_eq!(remap_status(&mut cursor), Code::OutOfRange);
        headers.insert(GRPC_STATUS, HeaderValue::from(Code::Unauthenticated as i32));
        assert_eq!(remap_status(&mut headers), Code::Unauthenticated);
        assert_eq!(remap_status(&mut http::HeaderMap::new()), Code::Ok);
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_anything_else_replaced() {
        let with = |value: &str| {
            let mut request = http::Request::new(());
            request.headers_mut().insert(REQUEST_ID, HeaderValue::from_str(value).unwrap());
            request_id(&request)
        };
        assert_eq!(with("abc-123"), "abc-123");
        assert_ne!(with(&"x".repeat(200)), "x".repeat(200));
        assert_ne!(with("has space"), "has space");
        assert_eq!(request_id(&http::Request::new(())).len(), 36);
    }
}
