//! tonic's own services (grpc.health.v1, grpc.reflection) decode with tonic-prost, which
//! answers a request it cannot decode with INTERNAL and prost's text (health), or ends the call
//! as if all were well (reflection drops the stream). [`StrictRequests`] wraps such a service: it
//! checks each request message as it arrives, before the service reads it, and a call with one
//! that does not decode ends with INVALID_ARGUMENT [`MALFORMED`], as [`super::codec`] does for
//! our own services (and Envoy's Check, served with that codec: [`super::AuthorizationServer`]).

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use http::HeaderMap;
use http_body::Frame;
use prost::{
    Message,
    bytes::{Bytes, BytesMut},
};
use tonic::{Status, body::Body, server::NamedService};
use tower::Service;

use super::codec::MALFORMED;
use crate::transport::MAX_REQUEST_BYTES;

/// A gRPC message's prefix: a compression flag and the length, big-endian.
const PREFIX: usize = 5;

/// `S`, every one of whose methods takes `M`, with its requests checked as the module says.
pub struct StrictRequests<S, M> {
    inner: S,
    /// The service's own size limit: a message over it is left for the service to refuse.
    limit: usize,
    message: PhantomData<fn() -> M>,
}

impl<S, M> StrictRequests<S, M> {
    /// For a service held to [`MAX_REQUEST_BYTES`].
    pub fn new(inner: S) -> Self {
        Self::with_limit(inner, MAX_REQUEST_BYTES)
    }

    /// For a service whose `max_decoding_message_size` is `limit`.
    pub fn with_limit(inner: S, limit: usize) -> Self {
        Self { inner, limit, message: PhantomData }
    }
}

impl<S: Clone, M> Clone for StrictRequests<S, M> {
    fn clone(&self) -> Self {
        Self::with_limit(self.inner.clone(), self.limit)
    }
}

impl<S: NamedService, M> NamedService for StrictRequests<S, M> {
    const NAME: &'static str = S::NAME;
}

impl<S, M> Service<http::Request<Body>> for StrictRequests<S, M>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    M: Message + Default + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let malformed = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            Body::new(CheckedRequest::<M> {
                inner: body,
                pending: BytesMut::new(),
                limit: self.limit,
                mode: Mode::Checking,
                malformed: Arc::clone(&malformed),
                message: PhantomData,
            })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let (mut parts, body) = response.await?.into_parts();
            // An error before any answer is sent "trailers-only", in the headers.
            if malformed.load(Ordering::Acquire) && parts.headers.contains_key("grpc-status") {
                report_malformed(&mut parts.headers);
            }
            let body = Body::new(CheckedResponse { inner: body, malformed });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

fn report_malformed(headers: &mut HeaderMap) {
    headers.remove("grpc-status-details-bin");
    // Fails only for metadata that cannot be a header; this status has none.
    let _ = Status::invalid_argument(MALFORMED).add_header(headers);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Checking,
    /// Past a message over the size limit, which the service refuses itself; or at the end.
    PassingThrough,
    Failed,
}

/// A request body handed on one whole message at a time, each checked to decode as `M`.
struct CheckedRequest<M> {
    inner: Body,
    /// Bytes received and not yet handed on: less than one message and one chunk.
    pending: BytesMut,
    limit: usize,
    mode: Mode,
    malformed: Arc<AtomicBool>,
    message: PhantomData<fn() -> M>,
}

enum Next {
    Message(Bytes),
    Incomplete,
    Malformed,
    TooLarge,
}

/// The first message in `pending`, taken out if it is whole and decodes.
fn next_message<M: Message + Default>(pending: &mut BytesMut, limit: usize) -> Next {
    let Some(prefix) = pending.get(..PREFIX) else { return Next::Incomplete };
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if prefix[0] != 0 {
        // A compressed message: these services accept no compression.
        return Next::Malformed;
    }
    if length > limit {
        return Next::TooLarge;
    }
    if pending.len() < PREFIX + length {
        return Next::Incomplete;
    }
    let message = pending.split_to(PREFIX + length).freeze();
    match M::decode(&message[PREFIX..]) {
        Ok(_) => Next::Message(message),
        Err(error) => {
            tracing::debug!(%error, "undecodable request");
            Next::Malformed
        }
    }
}

impl<M: Message + Default> http_body::Body for CheckedRequest<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            match this.mode {
                Mode::Failed => return Poll::Ready(None),
                Mode::PassingThrough if this.pending.is_empty() => {
                    return Pin::new(&mut this.inner).poll_frame(cx);
                }
                Mode::PassingThrough => {
                    return Poll::Ready(Some(Ok(Frame::data(this.pending.split().freeze()))));
                }
                Mode::Checking => {}
            }
            match next_message::<M>(&mut this.pending, this.limit) {
                Next::Message(message) => return Poll::Ready(Some(Ok(Frame::data(message)))),
                Next::Malformed => {
                    // Set before the service can see the error, so the answer reads it.
                    this.malformed.store(true, Ordering::Release);
                    this.mode = Mode::Failed;
                    this.pending.clear();
                    return Poll::Ready(Some(Err(Status::invalid_argument(MALFORMED))));
                }
                Next::TooLarge => {
                    this.mode = Mode::PassingThrough;
                    continue;
                }
                Next::Incomplete => {}
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending.extend_from_slice(&data),
                    Err(trailers) if this.pending.is_empty() => return Poll::Ready(Some(Ok(trailers))),
                    // Trailers cut a message short: hand on what came, the service reports it.
                    Err(_) => this.mode = Mode::PassingThrough,
                },
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                // The same for a body that ends part-way through a message.
                None if !this.pending.is_empty() => this.mode = Mode::PassingThrough,
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A response body whose final status becomes INVALID_ARGUMENT if a request message was
/// malformed (reflection ends its stream with OK when its request stream fails).
struct CheckedResponse {
    inner: Body,
    malformed: Arc<AtomicBool>,
}

impl http_body::Body for CheckedResponse {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !self.malformed.load(Ordering::Acquire) {
            return Poll::Ready(frame);
        }
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    report_malformed(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
