//! The example's service, hand-written without a `.proto`: `/example.v1.WhoAmI/Get` takes an
//! empty message and answers the verified `sub` of the caller (a `google.protobuf.StringValue`
//! on the wire, through prost's built-in `Message` impls for `()` and `String`). It is served
//! behind [`IdentityAuthLayer`](identity_client::IdentityAuthLayer), next to an unauthenticated
//! grpc.health.v1 whose `example.v1.WhoAmI` entry follows the revocation stream.
//!
//! Included by the example's `main.rs` and by the identity-client tests (`#[path]`), which
//! start it on port 0.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::Pin,
    task::{Context, Poll},
};

use identity_client::{IdentityAuth, VerifiedClaims};
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    body::Body,
    server::{Grpc, NamedService, UnaryService},
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tonic_prost::ProstCodec;
use tower::Layer;

pub const GET_PATH: &str = "/example.v1.WhoAmI/Get";

/// The gRPC service `example.v1.WhoAmI`, with one unary method, `Get`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhoAmIServer;

impl NamedService for WhoAmIServer {
    const NAME: &'static str = "example.v1.WhoAmI";
}

/// The handler of `Get`: the caller's user id, from the claims the layer verified.
struct Get;

impl UnaryService<()> for Get {
    type Response = String;
    type Future = Ready<Result<Response<String>, Status>>;

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let claims = request.extensions().get::<VerifiedClaims>();
        ready(
            claims
                .map(|claims| Response::new(claims.sub.to_string()))
                .ok_or_else(|| Status::unauthenticated("no verified token")),
        )
    }
}

impl tower::Service<http::Request<Body>> for WhoAmIServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == GET_PATH {
            Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<String, ()>::default());
                Ok(grpc.unary(Get, request).await)
            })
        } else {
            Box::pin(ready(Ok(Status::unimplemented("no such method").into_http())))
        }
    }
}

/// Serves WhoAmI behind the auth layer, and health, on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    auth: IdentityAuth,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Ready only while every revocation is known.
    let mut synchronised = auth.watch_synchronised();
    let reporter = tokio::spawn(async move {
        loop {
            let status = if *synchronised.borrow_and_update() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(WhoAmIServer::NAME, status).await;
            if synchronised.changed().await.is_err() {
                break;
            }
        }
    });
    let result = Server::builder()
        .add_service(health_service)
        .add_service(auth.layer().layer(WhoAmIServer))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await;
    reporter.abort();
    result
}
