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

/// The verified claims of `request` if its token names `role`, for a tonic handler behind
/// [`crate::IdentityAuthLayer`]: UNAUTHENTICATED when the request carries no verified claims
/// (the layer is not in front of this handler), PERMISSION_DENIED when the token lacks the role.
/// A role granted since the token was issued shows at the user's next refresh; a role removed
/// ends the user's sessions, so the layer already refuses tokens that still name it.
///
/// ```
/// # fn handler(request: tonic::Request<()>) -> Result<(), tonic::Status> {
/// let claims = identity_client::require_role(&request, "billing.read")?;
/// println!("{} may read invoices (roles: {:?})", claims.sub, claims.roles);
/// # Ok(())
/// # }
/// ```
pub fn require_role<'a, T>(
    request: &'a tonic::Request<T>,
    role: &str,
) -> Result<&'a VerifiedClaims, tonic::Status> {
    let claims = request
        .extensions()
        .get::<VerifiedClaims>()
        .ok_or_else(|| tonic::Status::unauthenticated("no verified token"))?;
    if !claims.has_role(role) {
        return Err(tonic::Status::permission_denied(format!("this call needs the role {role}")));
    }
    Ok(claims)
}

/// The verified claims of `request` if the user proved a second factor (TOTP or a recovery
/// code) no more than `max_age` ago, for a sensitive call behind [`crate::IdentityAuthLayer`]:
/// the token names `otp` in `amr` and its `auth_time` is recent enough. UNAUTHENTICATED
/// otherwise (as RFC 9470's step-up challenge answers 401): the client asks the user for a
/// code, calls `UserService.StepUp` with it, and retries with the access token that returns.
///
/// ```
/// # fn handler(request: tonic::Request<()>) -> Result<(), tonic::Status> {
/// use std::time::Duration;
///
/// let claims = identity_client::require_recent_mfa(&request, Duration::from_secs(300))?;
/// println!("{} proved a second factor in the last five minutes", claims.sub);
/// # Ok(())
/// # }
/// ```
pub fn require_recent_mfa<T>(
    request: &tonic::Request<T>,
    max_age: std::time::Duration,
) -> Result<&VerifiedClaims, tonic::Status> {
    let claims = request
        .extensions()
        .get::<VerifiedClaims>()
        .ok_or_else(|| tonic::Status::unauthenticated("no verified token"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    if !claims.has_recent_mfa(max_age.as_secs(), now) {
        return Err(tonic::Status::unauthenticated(format!(
            "this call needs a second factor proved within the last {}s: step up (UserService.StepUp) and retry",
            max_age.as_secs()
        )));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use identity_contract::{SessionId, TokenId, UserId};

    use super::*;

    fn with_roles(roles: &[&str]) -> tonic::Request<()> {
        with_claims(roles, Vec::new(), None)
    }

    fn with_claims(roles: &[&str], amr: Vec<String>, auth_time: Option<i64>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(VerifiedClaims::new(AccessClaims {
            iss: "identity".into(),
            sub: UserId::new(),
            aud: "identity".into(),
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: TokenId::new(),
            sid: SessionId::new(),
            email: "a@example.com".into(),
            email_verified: true,
            name: "A".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            amr,
            auth_time,
        }));
        request
    }

    #[test]
    fn require_role_lets_holders_through_and_tells_the_others_why() {
        assert!(require_role(&with_roles(&["billing.read", "x"]), "billing.read").is_ok());
        let denied = require_role(&with_roles(&["billing.write"]), "billing.read").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let anonymous = require_role(&tonic::Request::new(()), "billing.read").unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn require_recent_mfa_wants_otp_in_amr_and_a_recent_auth_time() {
        let now = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        )
        .unwrap();
        let five_minutes = std::time::Duration::from_secs(300);
        let fresh = with_claims(&[], identity_contract::amr(true), Some(now - 10));
        assert!(require_recent_mfa(&fresh, five_minutes).is_ok());
        let stale = with_claims(&[], identity_contract::amr(true), Some(now - 600));
        assert_eq!(
            require_recent_mfa(&stale, five_minutes).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let password_only = with_claims(&[], identity_contract::amr(false), Some(now));
        assert_eq!(
            require_recent_mfa(&password_only, five_minutes).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let old_token = with_claims(&[], Vec::new(), None);
        assert!(require_recent_mfa(&old_token, five_minutes).is_err());
        assert!(require_recent_mfa(&tonic::Request::new(()), five_minutes).is_err());
    }
}
