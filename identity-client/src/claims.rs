//! The claims of an access token that the layer has verified.

use serde::Deserialize;
use uuid::Uuid;

/// The claims of a verified, unexpired access token whose session is not revoked (RFC 9068
/// shape, as `identity` issues them). [`crate::IdentityAuthLayer`] puts one in the extensions
/// of every request it lets through:
///
/// ```
/// # fn handler(request: tonic::Request<()>) -> Result<(), tonic::Status> {
/// use identity_client::VerifiedClaims;
///
/// let claims = request
///     .extensions()
///     .get::<VerifiedClaims>()
///     .ok_or_else(|| tonic::Status::unauthenticated("no verified token"))?;
/// println!("call from user {} ({})", claims.sub, claims.email);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VerifiedClaims {
    /// Issuer: the configured [`crate::AuthConfig::issuer`].
    pub iss: String,
    /// The user id (a UUID, as text).
    pub sub: String,
    /// Audience: the configured [`crate::AuthConfig::audience`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// The token's own id.
    pub jti: String,
    /// The session the token belongs to; revoking the session revokes the token.
    pub sid: Uuid,
    pub email: String,
    /// The user's full name.
    pub name: String,
}

impl VerifiedClaims {
    /// The user id, when `sub` is a UUID (it always is in tokens `identity` issues).
    pub fn user_id(&self) -> Option<Uuid> {
        self.sub.parse().ok()
    }
}
