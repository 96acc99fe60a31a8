//! The tower layer: refuses requests without a good bearer token, and hands the handler the
//! token's claims in the request extensions.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::server::NamedService;
use tower::{Layer, Service};

use crate::auth::IdentityAuth;

/// Wraps a tonic server (`Server::builder().layer(auth.layer())`) or one service
/// (`auth.layer().layer(MyServiceServer::new(...))`, which keeps its gRPC name, so that health
/// and reflection can stay open next to it) in [`IdentityAuthService`].
#[derive(Debug, Clone)]
pub struct IdentityAuthLayer {
    auth: IdentityAuth,
}

impl IdentityAuthLayer {
    pub fn new(auth: IdentityAuth) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for IdentityAuthLayer {
    type Service = IdentityAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityAuthService { inner, auth: self.auth.clone() }
    }
}

/// For each request: verifies the bearer token ([`IdentityAuth::authenticate`]); if it is good,
/// inserts its [`crate::VerifiedClaims`] into the request extensions and calls the inner
/// service, otherwise answers UNAUTHENTICATED with a short reason, without calling it.
#[derive(Debug, Clone)]
pub struct IdentityAuthService<S> {
    inner: S,
    auth: IdentityAuth,
}

impl<S: NamedService> NamedService for IdentityAuthService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for IdentityAuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The service that was polled ready serves this request; its clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match auth.authenticate(request.headers()).await {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(rejection) => {
                    tracing::debug!(reason = %rejection, path = request.uri().path(), "request refused");
                    Ok(rejection.to_status().into_http())
                }
            }
        })
    }
}
