//! The claims a request carries once the layer has verified its token: the contract's
//! [`AccessClaims`] (typed `sub`, `sid`, `jti`), wrapped so that only this crate can vouch for
//! them. A handler that finds a [`VerifiedClaims`] knows every check has passed.

use std::ops::Deref;

use identity_contract::AccessClaims;

/// The claims of a verified, unexpired access token whose session is not revoked (RFC 9068
/// shape, as `identity` issues them). [`crate::IdentityAuthLayer`] puts one in the extensions
/// of every request it lets through; its fields are [`AccessClaims`]'s, through `Deref`:
///
/// ```
/// # fn handler(request: tonic::Request<()>) -> Result<(), tonic::Status> {
/// use identity_client::{UserId, VerifiedClaims};
///
/// let claims = request
///     .extensions()
///     .get::<VerifiedClaims>()
///     .ok_or_else(|| tonic::Status::unauthenticated("no verified token"))?;
/// let user: UserId = claims.sub;
/// println!("call from user {user} ({}) in session {}", claims.email, claims.sid);
/// if !claims.email_verified {
///     return Err(tonic::Status::failed_precondition("verify your email address first"));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims(AccessClaims);

impl VerifiedClaims {
    pub(crate) fn new(claims: AccessClaims) -> Self {
        Self(claims)
    }

    /// The claims themselves, e.g. to keep them past the request.
    pub fn into_inner(self) -> AccessClaims {
        self.0
    }
}

impl Deref for VerifiedClaims {
    type Target = AccessClaims;

    fn deref(&self) -> &AccessClaims {
        &self.0
    }
}

impl AsRef<AccessClaims> for VerifiedClaims {
    fn as_ref(&self) -> &AccessClaims {
        &self.0
    }
}
