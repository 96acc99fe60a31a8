//! Why [`crate::IdentityAuth::connect`] fails, and why a request is refused.

/// Why an [`crate::IdentityAuth`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid identity server address: {0}")]
    InvalidAddress(#[source] tonic::transport::Error),
    #[error("cannot fetch the token signing keys (GetJwks): {}", .0.message())]
    Jwks(Box<tonic::Status>),
    #[error("GetJwks returned no usable Ed25519 key")]
    NoUsableKeys,
    #[error("the service key is not valid metadata (it must be printable ASCII)")]
    InvalidServiceKey,
}

/// Why a request was refused. Its text is the message of the UNAUTHENTICATED status the caller
/// gets: short, and never containing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("missing bearer token")]
    MissingToken,
    #[error("authorization scheme is not Bearer")]
    NotBearer,
    #[error("malformed token")]
    Malformed,
    /// Refused by the access-token contract shared with the server (signature, header, claims,
    /// validity window), with the contract's own reason.
    #[error(transparent)]
    Token(#[from] identity_contract::Rejected),
    #[error("session revoked")]
    Revoked,
    #[error("revocation status unavailable")]
    RevocationsUnavailable,
}

impl Rejection {
    /// The status a refused request is answered with: UNAUTHENTICATED and this reason.
    pub fn to_status(self) -> tonic::Status {
        tonic::Status::unauthenticated(self.to_string())
    }
}

impl From<Rejection> for tonic::Status {
    fn from(rejection: Rejection) -> Self {
        rejection.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_rejection_keeps_its_reason() {
        use identity_contract::Rejected;
        for rejected in [
            Rejected::Malformed,
            Rejected::Header,
            Rejected::UnknownKey,
            Rejected::BadSignature,
            Rejected::InvalidClaims,
            Rejected::WrongIssuer,
            Rejected::WrongAudience,
            Rejected::Expired,
            Rejected::NotYetValid,
            Rejected::IssuedInFuture,
            Rejected::LifetimeTooLong,
        ] {
            assert_eq!(Rejection::from(rejected).to_string(), rejected.to_string());
            assert_eq!(Rejection::from(rejected), Rejection::Token(rejected));
        }
    }

    #[test]
    fn every_rejection_is_unauthenticated_with_its_reason() {
        let status = Rejection::Revoked.to_status();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "session revoked");
    }
}
