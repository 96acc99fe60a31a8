//! Access tokens (JWTs signed with EdDSA, ES256 or RS256), the keys that sign and verify them, refresh tokens, and
//! what makes a signed token inactive early: the revocation set.

mod cache;
mod jwt;
mod keys;
mod refresh;
mod revocation;

pub use cache::{VerifiedToken, VerifiedTokenCache};
pub use jwt::{AccessClaims, AccessTokenSubject, IssuedAccessToken, TokenIssuer, TokenRejected};
pub use keys::{KeyError, KeyRing, SigningKey, generate_key_pem, generated_key_file};
pub use refresh::{RefreshToken, RefreshTokenDigest};
pub use revocation::{RevocationBatch, RevocationSet};
