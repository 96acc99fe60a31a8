//! identity-client: what a Rust service needs to call `identity` and to accept its access tokens.
//!
//! - [`proto`]: the generated tonic clients of every `identity.v1` service, and their messages.
//! - [`IdentityAuthLayer`]: a tower layer for tonic servers that verifies each request's bearer
//!   token locally (Ed25519 keys from `GetJwks`, a cache of verified tokens) against a set of
//!   revoked sessions kept current by `WatchRevocations`, and hands the handler
//!   [`VerifiedClaims`] in the request extensions; [`require_role`] checks the token's `roles`,
//!   [`require_recent_mfa`] that the user proved a second factor recently (`amr`, `auth_time`).
//! - The token contract it verifies by, shared with the server (`identity-contract`):
//!   [`AccessClaims`] and the typed ids [`UserId`], [`SessionId`], [`TokenId`].
//!
//! ```no_run
//! # async fn run(service: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! use identity_client::{AuthConfig, IdentityAuth, ServiceKey};
//!
//! // WatchRevocations needs a service credential: here a key from
//! // `identity service-key create orders --permission watch_revocations --out orders.key`.
//! let config = AuthConfig { service_key: Some(ServiceKey::from_file("orders.key")?), ..AuthConfig::default() };
//! let auth = IdentityAuth::connect_to("http://127.0.0.1:50051", config).await?;
//! tonic::transport::Server::builder()
//!     .layer(auth.layer())
//!     .add_routes(service)
//!     .serve("127.0.0.1:8080".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod auth;
mod claims;
mod config;
mod error;
mod jwks;
mod layer;
mod revocations;
mod verify;

pub use auth::IdentityAuth;
pub use claims::{VerifiedClaims, require_recent_mfa, require_role};
pub use config::{AuthConfig, RevocationPolicy, ServiceKey};
pub use error::{Error, Rejection};
pub use identity_contract::{AccessClaims, SessionId, TokenId, UserId};
pub use layer::{IdentityAuthLayer, IdentityAuthService};

/// Code generated from `proto/identity/v1/*.proto` (package `identity.v1`): clients only.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("identity.v1");

    pub use admin_service_client::AdminServiceClient;
    pub use auth_service_client::AuthServiceClient;
    pub use token_service_client::TokenServiceClient;
    pub use user_service_client::UserServiceClient;
}
