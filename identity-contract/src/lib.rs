//! The access-token contract, defined once for the identity server (which signs) and for
//! identity-client (which verifies locally): typed ids, the claims, the header, the validation
//! rules, the signing algorithms and the JWK shape. A change here changes both sides at once; `tests/contract.rs` pins
//! that a token one side accepts the other accepts too, and that forgeries fail on both.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod claims;
mod ids;
mod jwk;
mod rules;

pub use claims::{AMR_OTP, AMR_PASSWORD, AccessClaims, amr};
pub use ids::{SessionId, TokenId, UserId};
/// The JWT library both sides use, so that keys and errors are the same types.
pub use jsonwebtoken;
pub use jwk::{JwkMembers, KeyRejected, PublicJwk, PublicKey, SigningAlgorithm, VerificationKey};
pub use rules::{
    ACCESS_TOKEN_TYPE, AccessTokenRules, MAX_ACCESS_TOKEN_LIFETIME, Rejected, header, key_id, sign,
};
