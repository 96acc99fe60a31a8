//! The service's vocabulary, parsed once at the edge: request values ([`Email`], [`Password`],
//! [`FullName`], [`Presented`] text), the ids that travel everywhere ([`UserId`], [`SessionId`]),
//! the account as callers see it ([`User`]), and the credentials as the database keeps them
//! ([`PasswordHash`], [`RefreshTokenDigest`]). A function that takes an [`Email`] never checks an
//! email again; each parser reports the field it failed on. Nothing here knows about tonic or
//! sqlx.

mod email;
mod full_name;
mod password;
mod presented;
mod stored;
mod user;

pub use email::{Email, NormalizedEmail};
pub use full_name::FullName;
pub use identity_contract::{SessionId, TokenId, UserId};
pub use password::{Password, PasswordPolicy, PresentedPassword};
pub use presented::Presented;
pub use stored::{PasswordHash, RefreshTokenDigest};
pub use user::User;

/// One bad field of a request, named as in the `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self { field, description: description.into() }
    }
}

/// Every bad field of one request, so a client can show each message next to its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.summary())]
pub struct InvalidRequest(pub Vec<FieldViolation>);

impl InvalidRequest {
    pub fn summary(&self) -> String {
        self.0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
    }
}

/// Collects the outcome of several field parsers into one result.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|violation| self.0.push(violation)).ok()
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// `Ok(value)` when no parser failed, the value being built from the parsed parts.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, InvalidRequest> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(InvalidRequest(self.0)),
        }
    }
}

pub(crate) fn has_nul(text: &str) -> bool {
    text.contains('\0')
}
