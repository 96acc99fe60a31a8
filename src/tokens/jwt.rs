//! Issuing and verifying this server's access tokens: the claims for a user and session, signed
//! with the active key, and checked against the key ring on the server's own clock. The
//! contract itself (claims, header, validation rules, window) is `identity_contract`'s, shared
//! with identity-client.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use identity_contract::{AccessTokenRules, Rejected, SessionId, TokenId, UserId};

use super::KeyRing;

pub use identity_contract::AccessClaims;

/// A freshly signed access token.
pub struct IssuedAccessToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAccessToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Why a token is not active. Never shown to the caller of ValidateToken (RFC 7662 answers
/// only `active=false`), but logged at debug level to help whoever debugs a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported header (alg, typ or kid)")]
    Header,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature or claims")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("session revoked")]
    Revoked,
}

impl From<Rejected> for TokenRejected {
    fn from(rejected: Rejected) -> Self {
        match rejected {
            Rejected::Malformed => Self::Malformed,
            Rejected::Header => Self::Header,
            Rejected::UnknownKey => Self::UnknownKey,
            Rejected::BadSignature
            | Rejected::InvalidClaims
            | Rejected::WrongIssuer
            | Rejected::WrongAudience => Self::Invalid,
            Rejected::Expired => Self::Expired,
            Rejected::NotYetValid | Rejected::IssuedInFuture => Self::NotYetValid,
            Rejected::LifetimeTooLong => Self::Invalid,
        }
    }
}

/// What an access token is for the user and session it describes.
pub struct AccessTokenSubject<'a> {
    pub user_id: UserId,
    pub email: &'a str,
    pub full_name: &'a str,
    pub email_verified: bool,
    pub session_id: SessionId,
    /// The access token never outlives its session.
    pub session_expires_at: DateTime<Utc>,
    /// The user's roles, sorted: the `roles` claim.
    pub roles: &'a [crate::domain::Role],
    /// When the session's owner last proved themselves (login or step-up): `auth_time`.
    pub auth_time: DateTime<Utc>,
    /// Whether that included a second factor: `amr` is `["pwd", "otp"]` rather than `["pwd"]`.
    pub second_factor: bool,
}

/// Signs and verifies access tokens with one key ring, issuer and audience.
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// No leeway: these are tokens this service signed itself, checked on its own clock. No
    /// lifetime beyond the configured TTL: lowering it also cuts short the tokens issued before.
    rules: AccessTokenRules,
}

impl TokenIssuer {
    pub fn new(keys: Arc<KeyRing>, issuer: String, audience: String, ttl: Duration) -> Self {
        let rules = AccessTokenRules::new(&issuer, &audience, Duration::ZERO, ttl);
        Self { keys, issuer, audience, ttl, rules }
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        subject: &AccessTokenSubject<'_>,
        now: DateTime<Utc>,
    ) -> Result<IssuedAccessToken, jsonwebtoken::errors::Error> {
        let ttl = chrono::TimeDelta::from_std(self.ttl).unwrap_or(chrono::TimeDelta::MAX);
        let expires_at = (now + ttl).min(subject.session_expires_at);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: subject.user_id,
            aud: self.audience.clone(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: TokenId::new(),
            sid: subject.session_id,
            email: subject.email.to_owned(),
            email_verified: subject.email_verified,
            name: subject.full_name.to_owned(),
            roles: subject.roles.iter().map(|role| role.as_str().to_owned()).collect(),
            amr: identity_contract::amr(subject.second_factor),
            auth_time: Some(subject.auth_time.timestamp()),
        };
        let signing = &self.keys.signing;
        let token = identity_contract::sign(&claims, signing.algorithm, &signing.kid, &signing.encoding)?;
        // The token carries whole seconds; report the instant it really stops being valid.
        let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at);
        Ok(IssuedAccessToken { token, expires_at })
    }

    /// Checks the header, signature, issuer, audience and validity window of `token` at `now`.
    /// Revocation is the caller's business.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenRejected> {
        Ok(self.rules.verify(token, |kid| self.keys.verifying.get(kid), now.timestamp())?)
    }

    /// Whether claims verified earlier (a cache hit) are still inside their window at `now`.
    pub fn check_window(&self, claims: &AccessClaims, now: DateTime<Utc>) -> Result<(), TokenRejected> {
        Ok(self.rules.check_window(claims, now.timestamp())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity_contract::SigningAlgorithm;

    use crate::tokens::generate_key_pem;

    fn issuer_with_key(dir: &std::path::Path, name: &str) -> TokenIssuer {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, generate_key_pem(SigningAlgorithm::EdDSA).unwrap()).unwrap();
        }
        let keys = KeyRing::load(Some(&path), dir, &[], SigningAlgorithm::EdDSA).unwrap();
        TokenIssuer::new(Arc::new(keys), "identity".into(), "identity".into(), Duration::from_secs(900))
    }

    fn subject(now: DateTime<Utc>) -> AccessTokenSubject<'static> {
        AccessTokenSubject {
            user_id: UserId::new(),
            email: "a@example.com",
            full_name: "A",
            email_verified: false,
            session_id: SessionId::new(),
            session_expires_at: now + chrono::TimeDelta::days(30),
            roles: &[],
            auth_time: now,
            second_factor: false,
        }
    }

    #[test]
    fn a_token_verifies_until_the_second_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer_with_key(dir.path(), "k.pem");
        let now = Utc::now();
        let issued = issuer.issue(&subject(now), now).unwrap();
        let claims = issuer.verify(&issued.token, now).unwrap();
        assert_eq!(claims.exp - claims.iat, 900);
        let at_exp = DateTime::from_timestamp(claims.exp, 0).unwrap();
        assert!(issuer.verify(&issued.token, at_exp - chrono::TimeDelta::seconds(1)).is_ok());
        assert_eq!(issuer.verify(&issued.token, at_exp), Err(TokenRejected::Expired));
    }

    #[test]
    fn an_access_token_never_outlives_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = issuer_with_key(dir.path(), "k.pem");
        let now = Utc::now();
        let subject =
            AccessTokenSubject { session_expires_at: now + chrono::TimeDelta::seconds(60), ..subject(now) };
        let claims = issuer.verify(&issuer.issue(&subject, now).unwrap().token, now).unwrap();
        assert_eq!(claims.exp, subject.session_expires_at.timestamp());
    }

    #[test]
    fn a_token_from_another_key_with_the_same_kid_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ours = issuer_with_key(dir.path(), "ours.pem");
        let mut theirs = issuer_with_key(dir.path(), "theirs.pem");
        let now = Utc::now();
        // Same kid header, different private key.
        let keys = Arc::get_mut(&mut theirs.keys).unwrap();
        keys.signing.kid = ours.keys.signing.kid.clone();
        let forged = theirs.issue(&subject(now), now).unwrap();
        assert_eq!(ours.verify(&forged.token, now), Err(TokenRejected::Invalid));
    }

    mod properties {
        use std::sync::OnceLock;

        use proptest::prelude::*;

        use super::*;

        struct Fixture {
            issuer: TokenIssuer,
            token: String,
            _dir: tempfile::TempDir,
        }

        fn fixture() -> &'static Fixture {
            static FIXTURE: OnceLock<Fixture> = OnceLock::new();
            FIXTURE.get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let issuer = issuer_with_key(dir.path(), "k.pem");
                let now = Utc::now();
                let token = issuer.issue(&subject(now), now).unwrap().token;
                Fixture { issuer, token, _dir: dir }
            })
        }

        proptest! {
            /// Any text is either rejected or is the genuine token; nothing panics.
            #[test]
            fn arbitrary_text_is_never_accepted(text in any::<String>()) {
                let fixture = fixture();
                prop_assert!(fixture.issuer.verify(&text, Utc::now()).is_err());
            }

            /// Changing any one byte of a genuine token makes it invalid (or leaves it equal,
            /// when the replacement is the same byte or an equivalent base64 spelling).
            #[test]
            fn a_token_with_one_byte_changed_is_rejected(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
                let fixture = fixture();
                let mut bytes = fixture.token.clone().into_bytes();
                let at = index.index(bytes.len());
                bytes[at] = byte;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                if let Ok(claims) = fixture.issuer.verify(&text, Utc::now()) {
                    // base64url has spare bits in a final character: only a token that decodes
                    // to the very same bytes may pass.
                    let genuine = fixture.issuer.verify(&fixture.token, Utc::now()).unwrap();
                    prop_assert_eq!(claims, genuine);
                }
            }
        }
    }
}
