//! The gRPC surface: one file per service. Each handler converts the request into domain types
//! (naming the field that fails), calls [`crate::service::Identity`], and converts back.

mod admin;
mod auth;
mod caller;
pub mod codec;
mod events;
mod ext_authz;
mod logging;
pub mod methods;
mod mfa;
mod requester;
mod stream;
mod strict_requests;
mod token;
mod user;

pub use admin::AdminApi;
pub use auth::AuthApi;
pub use events::EventApi;
pub use ext_authz::{
    AuthorizationServer, EMAIL_HEADER, EMAIL_VERIFIED_HEADER, ExtAuthzApi, SESSION_ID_HEADER, USER_ID_HEADER,
};
pub use logging::RpcLogLayer;
pub use strict_requests::StrictRequests;
pub use token::{TokenApi, claims_message as token_claims_message};
pub use user::UserApi;

use chrono::{DateTime, Utc};

use crate::{
    domain::{FieldViolation, SessionId, SessionInfo, User, UserId},
    service::SessionTokens,
};

/// Code generated from `proto/identity/v1/*.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("identity.v1");

    /// Serialized descriptors of the `identity.v1` files, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/identity_descriptor.bin"));
}

/// The token of an `authorization` value `Bearer <token>` (the scheme in any case, RFC 9110
/// §11.1); `None` for another scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn user_message(user: &User) -> proto::User {
    proto::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        full_name: user.full_name.clone(),
        is_active: user.is_active,
        created_at: Some(timestamp(user.created_at)),
        email_verified: user.email_verified(),
        email_verified_at: user.email_verified_at.map(timestamp),
        roles: user.roles.iter().map(|role| role.as_str().to_owned()).collect(),
        external_id: user.external_id.clone(),
    }
}

/// A session as listed; `current` marks the caller's own.
fn session_message(session: &SessionInfo, current: Option<SessionId>) -> proto::Session {
    proto::Session {
        id: session.id.to_string(),
        created_at: Some(timestamp(session.created_at)),
        last_used_at: Some(timestamp(session.last_used_at)),
        expires_at: Some(timestamp(session.expires_at)),
        client_address: session.origin.address.clone().unwrap_or_default(),
        user_agent: session.origin.user_agent.clone().unwrap_or_default(),
        current: current == Some(session.id),
    }
}

/// A user id from a request.
fn parse_user_id(field: &'static str, raw: &str) -> Result<UserId, FieldViolation> {
    parse_uuid(field, raw)
}

/// A session id from a request.
fn parse_session_id(field: &'static str, raw: &str) -> Result<SessionId, FieldViolation> {
    parse_uuid(field, raw)
}

fn parse_uuid<T: std::str::FromStr>(field: &'static str, raw: &str) -> Result<T, FieldViolation> {
    match raw.trim() {
        "" => Err(FieldViolation::new(field, "is required")),
        text if text.len() > 64 => Err(FieldViolation::new(field, "is not a UUID")),
        text => text.parse().map_err(|_| FieldViolation::new(field, "is not a UUID")),
    }
}

fn tokens_message(tokens: SessionTokens) -> proto::Tokens {
    // Whole seconds, as in the token's own `iat` and `exp`.
    let seconds_until = |at: DateTime<Utc>| {
        i32::try_from((at.timestamp() - tokens.issued_at.timestamp()).max(0)).unwrap_or(i32::MAX)
    };
    proto::Tokens {
        expires_in: seconds_until(tokens.access.expires_at),
        refresh_expires_in: seconds_until(tokens.refresh_expires_at),
        access_token: tokens.access.token,
        token_type: "Bearer".into(),
        refresh_token: tokens.refresh.expose().to_owned(),
    }
}
