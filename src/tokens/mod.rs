//! Access tokens (Ed25519-signed JWTs), the keys that sign and verify them, and refresh tokens.

mod jwt;
mod keys;
mod refresh;

pub use jwt::{AccessClaims, AccessTokenSubject, IssuedAccessToken, TokenIssuer, TokenRejected};
pub use keys::{Jwk, KeyError, KeyRing, SigningKey, generate_key_pem};
pub use refresh::{RefreshToken, RefreshTokenDigest};
