use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::KeyRing;

/// RFC 9068 media type of a JWT access token, set as the `typ` header.
const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token (RFC 9068 shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub sid: String,
    pub email: String,
    pub name: String,
}

impl AccessClaims {
    pub fn session_id(&self) -> Option<Uuid> {
        self.sid.parse().ok()
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.sub.parse().ok()
    }
}

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

/// What an access token is for the user and session it describes.
pub struct AccessTokenSubject<'a> {
    pub user_id: Uuid,
    pub email: &'a str,
    pub full_name: &'a str,
    pub session_id: Uuid,
    /// The access token never outlives its session.
    pub session_expires_at: DateTime<Utc>,
}

/// Signs and verifies access tokens with one key ring, issuer and audience.
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
    validation: Validation,
}

impl TokenIssuer {
    pub fn new(keys: Arc<KeyRing>, issuer: String, audience: String, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Time is checked below against the service's own clock, with no leeway: these are
        // tokens this service signed itself, on one clock.
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self { keys, issuer, audience, ttl, validation }
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
            sub: subject.user_id.to_string(),
            aud: self.audience.clone(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: Uuid::new_v4().to_string(),
            sid: subject.session_id.to_string(),
            email: subject.email.to_owned(),
            name: subject.full_name.to_owned(),
        };
        let header = Header {
            typ: Some(ACCESS_TOKEN_TYPE.into()),
            kid: Some(self.keys.signing.kid.clone()),
            ..Header::new(Algorithm::EdDSA)
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.keys.signing.encoding)?;
        // The token carries whole seconds; report the instant it really stops being valid.
        let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at);
        Ok(IssuedAccessToken { token, expires_at })
    }

    /// Checks the header, signature, issuer, audience and validity window of `token` at `now`.
    /// Revocation is the caller's business.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenRejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejected::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if header.alg != Algorithm::EdDSA || !typ_ok {
            return Err(TokenRejected::Header);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.verifying.get(kid))
            .ok_or(TokenRejected::UnknownKey)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|_| TokenRejected::Invalid)?
            .claims;
        let now = now.timestamp();
        if now >= claims.exp {
            return Err(TokenRejected::Expired);
        }
        if now < claims.nbf {
            return Err(TokenRejected::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::generate_key_pem;

    fn issuer_with_key(dir: &std::path::Path, name: &str) -> TokenIssuer {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, generate_key_pem().unwrap()).unwrap();
        }
        let keys = KeyRing::load(Some(&path), dir, &[]).unwrap();
        TokenIssuer::new(Arc::new(keys), "identity".into(), "identity".into(), Duration::from_secs(900))
    }

    fn subject(now: DateTime<Utc>) -> AccessTokenSubject<'static> {
        AccessTokenSubject {
            user_id: Uuid::new_v4(),
            email: "a@example.com",
            full_name: "A",
            session_id: Uuid::new_v4(),
            session_expires_at: now + chrono::TimeDelta::days(30),
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
