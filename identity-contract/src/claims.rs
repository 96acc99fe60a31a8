//! The claims of an access token (RFC 9068 shape) as both sides read and write them. The ids are
//! typed: a token whose `sub`, `sid` or `jti` is not a UUID does not decode, so it is invalid,
//! and no code downstream has to parse or re-check them.

use serde::{Deserialize, Serialize};

use crate::{SessionId, TokenId, UserId};

/// The claims of an access token. Times are whole seconds since the Unix epoch; the ids travel
/// as plain UUID strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the server's configured issuer.
    pub iss: String,
    /// The user the token was issued to.
    pub sub: UserId,
    /// Audience: the server's configured audience (a single string).
    pub aud: String,
    /// Expiry: the token is expired from this second on.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before: the token is not valid before this second.
    pub nbf: i64,
    /// The token's own id.
    pub jti: TokenId,
    /// The session the token belongs to; revoking the session revokes the token.
    pub sid: SessionId,
    pub email: String,
    /// Whether the user proved control of `email` (a verification or password-reset link) when
    /// the token was issued. Tokens from before the claim existed read as `false`.
    #[serde(default)]
    pub email_verified: bool,
    /// The user's full name.
    pub name: String,
    /// The roles the user held when the token was issued (sorted; names of lower-case a-z, 0-9,
    /// `.`, `_`, `:`, `-`). A role granted since appears at the next refresh; removing one ends
    /// the user's sessions, so no token outlives the roles it names. Absent from tokens issued
    /// before roles existed, which read as none.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl AccessClaims {
    /// Whether the token names `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}
