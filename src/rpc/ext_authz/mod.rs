//! Envoy external authorization (`envoy.service.auth.v3.Authorization/Check`), so that Envoy,
//! Istio, Contour or Emissary can ask this service about each request at the edge: an active
//! bearer token (signature, window, revocation set; the cached check ValidateToken makes, no
//! database round trip) is allowed with the caller's identity in `x-identity-*` headers for the
//! upstream; anything else is denied with HTTP 401 and `www-authenticate: Bearer`. With
//! `IDENTITY_EXT_AUTHZ_REQUIRED_ROLE`, an active token without that role is denied with 403
//! (`insufficient_scope`): the caller is known, and logging in again would not help.
//!
//! Every answer is a CheckResponse, never a gRPC error: Envoy treats an error as a failure of
//! the authorization service, which `failure_mode_allow` turns into an *allowed* request.

mod request;
mod server;

pub use request::CheckRequest;
pub use server::AuthorizationServer;

use envoy_types::pb::{
    envoy::{
        config::core::v3::{HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction},
        service::auth::v3::{
            CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response::HttpResponse,
        },
        r#type::v3::{HttpStatus, StatusCode as HttpStatusCode},
    },
    google::rpc,
};

use crate::{domain::Role, service::Identity, tokens::VerifiedToken};

/// The headers the upstream receives on an allowed request, each set (replacing any copy the
/// client sent) from the verified token.
pub const USER_ID_HEADER: &str = "x-identity-user-id";
pub const SESSION_ID_HEADER: &str = "x-identity-session-id";
pub const EMAIL_HEADER: &str = "x-identity-email";
/// `true` or `false`: whether the email in [`EMAIL_HEADER`] was verified when the token was issued.
pub const EMAIL_VERIFIED_HEADER: &str = "x-identity-email-verified";

pub struct ExtAuthzApi {
    identity: std::sync::Arc<Identity>,
    /// The role a token must carry to be allowed (`IDENTITY_EXT_AUTHZ_REQUIRED_ROLE`).
    required_role: Option<Role>,
}

impl ExtAuthzApi {
    pub fn new(identity: std::sync::Arc<Identity>, required_role: Option<Role>) -> Self {
        Self { identity, required_role }
    }

    /// The answer to one Check: it waits on nothing (no database, no other task).
    #[tracing::instrument(skip_all)]
    fn check(&self, request: &CheckRequest) -> CheckResponse {
        let Some(header) = request.authorization() else {
            return denied(Denial::NoToken);
        };
        let Some(token) = std::str::from_utf8(header).ok().and_then(super::bearer_token) else {
            tracing::debug!("ext_authz: authorization is not a bearer token");
            return denied(Denial::InvalidToken);
        };
        match self.identity.validate(token) {
            Ok(verified) => match &self.required_role {
                Some(role) if !verified.claims.has_role(role.as_str()) => {
                    tracing::debug!(user_id = %verified.claims.sub, "ext_authz: the token lacks the required role");
                    denied(Denial::MissingRole)
                }
                _ => allowed(&verified),
            },
            Err(reason) => {
                tracing::debug!(%reason, "ext_authz: inactive token");
                denied(Denial::InvalidToken)
            }
        }
    }
}

/// A header set on the request, replacing every copy already there: `append_action` says so to
/// Envoy versions that read it, and the deprecated `append` left unset reads as `false` (also
/// replace) to the older ones.
fn set_header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value, raw_value: Vec::new() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..HeaderValueOption::default()
    }
}

fn allowed(verified: &VerifiedToken) -> CheckResponse {
    let claims = &verified.claims;
    // Set, not removed: Envoy applies `headers_to_remove` after the headers it sets, so listing
    // these there would strip the values given here. Setting replaces every forged copy.
    let headers = vec![
        set_header(USER_ID_HEADER, claims.sub.to_string()),
        set_header(SESSION_ID_HEADER, claims.sid.to_string()),
        set_header(EMAIL_HEADER, claims.email.clone()),
        set_header(EMAIL_VERIFIED_HEADER, claims.email_verified.to_string()),
    ];
    CheckResponse {
        status: Some(rpc::Status { code: tonic::Code::Ok.into(), ..rpc::Status::default() }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            ..OkHttpResponse::default()
        })),
        ..CheckResponse::default()
    }
}

/// Why a request is refused, as RFC 6750 §3 tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// No credentials: the bare challenge.
    NoToken,
    /// A token that is not a well-formed active one.
    InvalidToken,
    /// An active token without `IDENTITY_EXT_AUTHZ_REQUIRED_ROLE`: 403, as §3.1 says for a
    /// token that does not carry the privileges the request needs.
    MissingRole,
}

fn denied(denial: Denial) -> CheckResponse {
    let (http_status, code, message, challenge) = match denial {
        Denial::NoToken => {
            (HttpStatusCode::Unauthorized, tonic::Code::Unauthenticated, "no active bearer token", "Bearer")
        }
        Denial::InvalidToken => (
            HttpStatusCode::Unauthorized,
            tonic::Code::Unauthenticated,
            "no active bearer token",
            "Bearer error=\"invalid_token\"",
        ),
        Denial::MissingRole => (
            HttpStatusCode::Forbidden,
            tonic::Code::PermissionDenied,
            "the token lacks the required role",
            "Bearer error=\"insufficient_scope\"",
        ),
    };
    let response = DeniedHttpResponse {
        status: Some(HttpStatus { code: http_status.into() }),
        headers: vec![set_header("www-authenticate", challenge.to_owned())],
        body: String::new(),
    };
    CheckResponse {
        status: Some(rpc::Status { code: code.into(), message: message.into(), details: Vec::new() }),
        http_response: Some(HttpResponse::DeniedResponse(response)),
        ..CheckResponse::default()
    }
}
