//! How an access token is signed and checked, for both sides: the header (the signing key's
//! algorithm, `typ: at+jwt`, a `kid`), the `jsonwebtoken::Validation` (issuer, audience, required
//! claims, and exactly the algorithm of the key that verifies: a key is pinned to its own, so a
//! token cannot choose how it is checked) and the validity window (expired from the `exp` second
//! on, not valid before `nbf`, not issued in the future, with a leeway the server sets to zero and
//! a consumer may configure), and a ceiling on the lifetime `exp - iat` (the server's
//! access-token TTL; a consumer's own setting). Each side looks keys up its own way between
//! [`key_id`] and [`AccessTokenRules::decode`]; everything else is here.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, Validation, errors::ErrorKind};

use crate::{AccessClaims, SigningAlgorithm, VerificationKey};
/// RFC 9068 media type of a JWT access token, set as the `typ` header.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// The `typ` spellings accepted (RFC 9068 allows the full media type too), in any case.
const ACCEPTED_TYPES: [&str; 2] = [ACCESS_TOKEN_TYPE, "application/at+jwt"];
/// Claims whose presence `jsonwebtoken` checks; `jti`, `sid`, `email` and `name` are required
/// by [`AccessClaims`] itself.
const REQUIRED_CLAIMS: [&str; 6] = ["exp", "nbf", "iat", "iss", "aud", "sub"];

/// Why a token fails the contract. Each side maps it to its own error (the server only logs
/// it; identity-client answers UNAUTHENTICATED with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token header (alg, typ or kid)")]
    Header,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("invalid token claims")]
    InvalidClaims,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is later than now (plus the leeway): nobody issues tokens in the future, so it
    /// was forged or minted on a clock that is wrong.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the longest lifetime the issuer gives: a token minted with a
    /// stolen key to last for years, or by a misconfigured issuer.
    #[error("token lifetime too long")]
    LifetimeTooLong,
}

/// The header of every access token signed with `algorithm` by the key `kid`.
pub fn header(algorithm: SigningAlgorithm, kid: &str) -> Header {
    Header { typ: Some(ACCESS_TOKEN_TYPE.into()), kid: Some(kid.to_owned()), ..Header::new(algorithm.jwt()) }
}

/// Signs `claims` with the private key (of `algorithm`) whose public JWK has key id `kid`.
pub fn sign(
    claims: &AccessClaims,
    algorithm: SigningAlgorithm,
    kid: &str,
    key: &EncodingKey,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&header(algorithm, kid), claims, key)
}

/// Checks the header (one of the [`SigningAlgorithm`]s, an access-token `typ`, a kid) without
/// verifying anything else, and returns the kid to look the verification key up by. Whether the
/// algorithm is the key's own is [`AccessTokenRules::decode`]'s check.
pub fn key_id(token: &str) -> Result<String, Rejected> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejected::Malformed)?;
    let typ_ok = header
        .typ
        .as_deref()
        .is_some_and(|typ| ACCEPTED_TYPES.iter().any(|accepted| typ.eq_ignore_ascii_case(accepted)));
    if SigningAlgorithm::from_jwt(header.alg).is_none() || !typ_ok {
        return Err(Rejected::Header);
    }
    header.kid.ok_or(Rejected::Header)
}

/// The longest access-token lifetime the server can be configured to give
/// (`IDENTITY_ACCESS_TOKEN_TTL` at most 24 h): the ceiling a consumer that does not know the
/// server's TTL can safely assume.
pub const MAX_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The checks for one issuer and audience.
#[derive(Debug, Clone)]
pub struct AccessTokenRules {
    /// One per [`SigningAlgorithm::ALL`], each accepting that algorithm only.
    validations: [Validation; 3],
    leeway: i64,
    /// Longest `exp - iat` accepted, in seconds.
    max_lifetime: i64,
}

impl AccessTokenRules {
    /// Rules for tokens from `issuer` to `audience`, with `leeway` on both ends of the validity
    /// window for clocks that disagree (the server, on its own clock, uses zero), accepting
    /// lifetimes (`exp - iat`) up to `max_lifetime` (the server: its access-token TTL; a
    /// consumer: that TTL if it knows it, else [`MAX_ACCESS_TOKEN_LIFETIME`]). The leeway does
    /// not stretch the lifetime: the issuer stamps both ends from one clock reading.
    pub fn new(issuer: &str, audience: &str, leeway: Duration, max_lifetime: Duration) -> Self {
        let validations = SigningAlgorithm::ALL.map(|algorithm| {
            let mut validation = Validation::new(algorithm.jwt());
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&REQUIRED_CLAIMS);
            // The window is checked by `check_window`, on every call including cache hits, with
            // one rule on both sides; jsonwebtoken's own (`exp` still valid at its second) differs.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.leeway = 0;
            validation
        });
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        // A TTL with a fraction of a second still allows its whole seconds' worth of `exp`.
        let max_lifetime = seconds(max_lifetime) + i64::from(max_lifetime.subsec_nanos() > 0);
        Self { validations, leeway: seconds(leeway), max_lifetime }
    }

    /// Verifies the signature with `key`, by its algorithm only (a header naming another is
    /// refused as [`Rejected::Header`]), and checks issuer, audience, claims and lifetime (the
    /// header must have passed [`key_id`]). The window is not checked: see
    /// [`AccessTokenRules::check_window`].
    pub fn decode(&self, token: &str, key: &VerificationKey) -> Result<AccessClaims, Rejected> {
        let claims = self.decode_claims(token, key)?;
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime {
            return Err(Rejected::LifetimeTooLong);
        }
        Ok(claims)
    }

    fn decode_claims(&self, token: &str, key: &VerificationKey) -> Result<AccessClaims, Rejected> {
        let index =
            SigningAlgorithm::ALL.iter().position(|algorithm| *algorithm == key.algorithm).unwrap_or(0);
        let validation = &self.validations[index];
        jsonwebtoken::decode::<AccessClaims>(token, &key.key, validation).map(|data| data.claims).map_err(
            |error| match error.kind() {
                ErrorKind::InvalidSignature => Rejected::BadSignature,
                ErrorKind::InvalidIssuer => Rejected::WrongIssuer,
                ErrorKind::InvalidAudience => Rejected::WrongAudience,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => Rejected::Malformed,
                ErrorKind::InvalidAlgorithm => Rejected::Header,
                _ => Rejected::InvalidClaims,
            },
        )
    }

    /// Whether `claims` are inside their validity window at `now` (seconds since the Unix
    /// epoch): expired from the `exp` second on, not valid before `nbf`, not issued after now,
    /// each widened by the leeway.
    pub fn check_window(&self, claims: &AccessClaims, now: i64) -> Result<(), Rejected> {
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(Rejected::Expired);
        }
        if now.saturating_add(self.leeway) < claims.nbf {
            return Err(Rejected::NotYetValid);
        }
        if now.saturating_add(self.leeway) < claims.iat {
            return Err(Rejected::IssuedInFuture);
        }
        Ok(())
    }

    /// Every check in order (header, key, signature and claims, window) when the keys are at
    /// hand; `key_for` finds the verification key of a kid.
    pub fn verify<'k>(
        &self,
        token: &str,
        key_for: impl FnOnce(&str) -> Option<&'k VerificationKey>,
        now: i64,
    ) -> Result<AccessClaims, Rejected> {
        let kid = key_id(token)?;
        let key = key_for(&kid).ok_or(Rejected::UnknownKey)?;
        let claims = self.decode(token, key)?;
        self.check_window(&claims, now)?;
        Ok(claims)
    }
}
