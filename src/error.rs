//! The service's error and its single mapping to a gRPC status. Internal causes are logged here
//! with their chain and never reach the client.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{domain::InvalidRequest, passwords::HashError, store::StoreError};

/// Said for every failed login, whatever the cause, so the answer does not reveal which emails
/// have accounts.
pub const INVALID_CREDENTIALS: &str = "invalid email or password";

/// Said to a login with the right password for an unverified email, when verification is
/// required: what the user can do about it.
pub const EMAIL_NOT_VERIFIED: &str = "the email address is not verified yet: open the link in the verification \
     message (a new one has been sent, unless several were this hour), then log in again";

/// How long a client should wait before retrying work that was shed.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// INVALID_ARGUMENT, with one `BadRequest` field violation per bad field.
    #[error("{0}")]
    InvalidArgument(#[from] InvalidRequest),
    /// ALREADY_EXISTS.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// UNAUTHENTICATED, with the uniform login message.
    #[error("{INVALID_CREDENTIALS}")]
    InvalidCredentials,
    /// UNAUTHENTICATED, for a missing or inactive token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// FAILED_PRECONDITION: the account is not in the state the call needs; the message says
    /// what to do.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// FAILED_PRECONDITION with the `ErrorInfo` reason `EMAIL_NOT_VERIFIED`: the right password,
    /// but `IDENTITY_REQUIRE_VERIFIED_EMAIL` is on and the email is not verified yet.
    #[error("{EMAIL_NOT_VERIFIED}")]
    EmailNotVerified,
    /// PERMISSION_DENIED: a known caller without the permission the call needs.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// NOT_FOUND: no such user or session (or none the caller may see).
    #[error("{0}")]
    NotFound(&'static str),
    /// RESOURCE_EXHAUSTED: the caller, or the server, has as many open streams as allowed.
    #[error("{0}")]
    TooManyStreams(&'static str),
    /// OUT_OF_RANGE: a stream cursor the stream no longer (or never) covers; the message says
    /// how to recover.
    #[error("{0}")]
    OutOfRange(String),
    /// RESOURCE_EXHAUSTED: too many failed logins for this email; retry after the window.
    #[error("too many failed attempts, retry later")]
    LockedOut { retry_after: Duration },
    /// RESOURCE_EXHAUSTED: the password hashing queue is full; retry shortly.
    #[error("the server is busy, retry later")]
    Overloaded,
    /// UNAVAILABLE: the database is down or refusing work.
    #[error("service temporarily unavailable, retry later")]
    Unavailable(#[source] StoreError),
    /// INTERNAL: a bug. The cause is logged, not returned.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable(error),
            StoreError::UniqueViolation | StoreError::Internal(_) => Self::internal(error),
        }
    }
}

impl From<HashError> for AppError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Overloaded => Self::Overloaded,
            HashError::Failed(_) => Self::internal(error),
        }
    }
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Self {
        let message = error.to_string();
        match error {
            AppError::InvalidArgument(invalid) => {
                let mut details = ErrorDetails::new();
                for violation in &invalid.0 {
                    details.add_bad_request_violation(violation.field, &violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AppError::EmailTaken => Status::already_exists(message),
            AppError::InvalidCredentials | AppError::Unauthenticated(_) => Status::unauthenticated(message),
            AppError::FailedPrecondition(_) => Status::failed_precondition(message),
            AppError::EmailNotVerified => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    "EMAIL_NOT_VERIFIED",
                    "identity",
                    std::collections::HashMap::new(),
                ),
            ),
            AppError::PermissionDenied(_) => Status::permission_denied(message),
            AppError::NotFound(_) => Status::not_found(message),
            AppError::TooManyStreams(_) => Status::resource_exhausted(message),
            AppError::OutOfRange(_) => Status::out_of_range(message),
            AppError::LockedOut { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                // Whole seconds, rounded up: retrying a moment early would only fail again.
                ErrorDetails::with_retry_info(Some(Duration::from_secs(retry_after.as_secs() + 1))),
            ),
            AppError::Overloaded => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(OVERLOAD_RETRY_AFTER)),
            ),
            AppError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(&cause), "database unavailable");
                Status::unavailable(message)
            }
            AppError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "internal error");
                Status::internal(message)
            }
        }
    }
}

/// `error: cause: cause's cause`, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldViolation;

    #[test]
    fn each_error_maps_to_its_status_code() {
        let invalid = InvalidRequest(vec![FieldViolation::new("email", "is required")]);
        assert_eq!(Status::from(AppError::from(invalid)).code(), Code::InvalidArgument);
        assert_eq!(Status::from(AppError::EmailTaken).code(), Code::AlreadyExists);
        assert_eq!(Status::from(AppError::InvalidCredentials).code(), Code::Unauthenticated);
        assert_eq!(Status::from(AppError::Unauthenticated("x")).code(), Code::Unauthenticated);
        assert_eq!(Status::from(AppError::Overloaded).code(), Code::ResourceExhausted);
        assert_eq!(Status::from(AppError::PermissionDenied("x")).code(), Code::PermissionDenied);
        assert_eq!(Status::from(AppError::NotFound("x")).code(), Code::NotFound);
        assert_eq!(Status::from(AppError::TooManyStreams("x")).code(), Code::ResourceExhausted);
        assert_eq!(Status::from(AppError::FailedPrecondition("x")).code(), Code::FailedPrecondition);
        let unverified = Status::from(AppError::EmailNotVerified);
        assert_eq!(unverified.code(), Code::FailedPrecondition);
        assert_eq!(unverified.get_error_details().error_info().unwrap().reason, "EMAIL_NOT_VERIFIED");
        assert_eq!(Status::from(AppError::OutOfRange("x".into())).code(), Code::OutOfRange);
        let down = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        assert_eq!(Status::from(AppError::from(down)).code(), Code::Unavailable);
        let bug = StoreError::Internal(sqlx::Error::RowNotFound);
        assert_eq!(Status::from(AppError::from(bug)).code(), Code::Internal);
    }

    #[test]
    fn invalid_argument_names_each_field_in_a_bad_request_detail() {
        let invalid = InvalidRequest(vec![
            FieldViolation::new("email", "is required"),
            FieldViolation::new("password", "must be at least 15 characters"),
        ]);
        let status = Status::from(AppError::from(invalid));
        assert!(status.message().contains("email: is required"));
        let details = status.get_error_details();
        let fields: Vec<_> =
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[test]
    fn internal_causes_do_not_reach_the_client() {
        let bug = StoreError::Internal(sqlx::Error::Protocol("SELECT secret FROM users".into()));
        let status = Status::from(AppError::from(bug));
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn overload_carries_retry_info() {
        let status = Status::from(AppError::Overloaded);
        assert!(status.get_error_details().retry_info().is_some());
    }
}
