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
    /// How the user authenticated (RFC 8176): `["pwd"]`, or `["pwd", "otp"]` when a second
    /// factor (a TOTP code or a recovery code) was part of the login or of a later step-up.
    /// Absent from tokens issued before the claim existed, which read as none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the user last authenticated in this session (login or step-up), in seconds since
    /// the epoch (OpenID Connect Core 1.0 §2). Absent from tokens issued before the claim existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// The `amr` value of a password login (RFC 8176).
pub const AMR_PASSWORD: &str = "pwd";
/// The `amr` value of a one-time code as second factor (RFC 8176).
pub const AMR_OTP: &str = "otp";

/// The `amr` claim of a session authenticated with a password, and a second factor or not.
pub fn amr(second_factor: bool) -> Vec<String> {
    let mut methods = vec![AMR_PASSWORD.to_owned()];
    if second_factor {
        methods.push(AMR_OTP.to_owned());
    }
    methods
}

impl AccessClaims {
    /// Whether the token names `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Whether the user proved a second factor within `max_age` seconds before `now`: the token
    /// names `otp` in `amr` and its `auth_time` is that recent (and not in the future).
    pub fn has_recent_mfa(&self, max_age_secs: u64, now: i64) -> bool {
        let Some(auth_time) = self.auth_time else { return false };
        let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
        self.amr.iter().any(|method| method == AMR_OTP) && auth_time <= now && now - auth_time <= max_age
    }
}
