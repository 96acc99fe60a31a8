//! The access-token contract, defined once for the identity server (which signs) and for
//! identity-client (which verifies locally): typed ids, the claims, the header, the validation
//! rules and the JWK shape. A change here changes both sides at once.

mod ids;

pub use ids::{SessionId, TokenId, UserId};
