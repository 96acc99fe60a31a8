//! Access tokens (Ed25519-signed JWTs), the keys that sign and verify them, refresh tokens, and
//! what makes a signed token inactive early: the revocation set.

mod cache;
mod jwt;
mod keys;
mod refresh;
mod revocation;

pub use cache::{VerifiedToken, VerifiedTokenCache};
pub use jwt::{AccessClaims, AccessTokenSubject, IssuedAccessToken, TokenIssuer, TokenRejected};
pub use keys::{GENERATED_KEY_FILE, KeyError, KeyRing, SigningKey, generate_key_pem};
pub use refresh::{RefreshToken, RefreshTokenDigest};
pub use revocation::RevocationSet;
