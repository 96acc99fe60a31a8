//! The `envoy.service.auth.v3.Authorization` service, served here rather than by envoy-types'
//! generated server, which decodes Envoy's whole `CheckRequest` (every attribute, every header
//! into a map of owned strings) with tonic-prost, and needed [`crate::rpc::StrictRequests`] to
//! decode it once more first for our rules on undecodable bytes. This one decodes once, only
//! what Check reads ([`CheckRequest`]), with our [`StrictCodec`]; the answer is envoy-types'
//! `CheckResponse`.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use tonic::{
    Status,
    body::Body,
    server::{Grpc, NamedService, UnaryService},
};
use tower::Service;

use super::{ExtAuthzApi, request::CheckRequest};
use crate::rpc::codec::StrictCodec;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Serves Check with [`ExtAuthzApi`], taking requests up to `max_request_bytes`.
#[derive(Clone)]
pub struct AuthorizationServer {
    api: Arc<ExtAuthzApi>,
    max_request_bytes: usize,
}

impl AuthorizationServer {
    pub fn new(api: ExtAuthzApi, max_request_bytes: usize) -> Self {
        Self { api: Arc::new(api), max_request_bytes }
    }
}

impl NamedService for AuthorizationServer {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> Service<http::Request<B>> for AuthorizationServer
where
    B: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK {
            return Box::pin(ready(Ok(Status::unimplemented("").into_http())));
        }
        let check = Check(Arc::clone(&self.api));
        let mut grpc = Grpc::new(StrictCodec::<CheckResponse, CheckRequest>::default())
            .max_decoding_message_size(self.max_request_bytes);
        Box::pin(async move { Ok(grpc.unary(check, request).await) })
    }
}

/// The one method; Check answers without waiting on anything.
struct Check(Arc<ExtAuthzApi>);

impl UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = Ready<Result<tonic::Response<CheckResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        ready(Ok(tonic::Response::new(self.0.check(request.get_ref()))))
    }
}
