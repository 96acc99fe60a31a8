//! An account as the service hands it to callers: never with its password hash, which stays
//! between the store and the login path.

use chrono::{DateTime, Utc};

use super::{FieldViolation, Role, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// As the user typed it at signup (trimmed); matching uses its normalized form.
    pub email: String,
    pub full_name: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    /// Sorted.
    pub roles: Vec<Role>,
    /// Whether the owner of `email` proved control of it (a verification or reset link), and
    /// when: `Some` exactly when verified.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// The account's id in the app it was imported from (`identity import`); `None` for an
    /// account made here.
    pub external_id: Option<String>,
}

impl User {
    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }
}

/// An account's id in the app it was imported from, kept as text (the old app's integer,
/// UUID or username): 1 to 255 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldViolation::new(field, "must not contain control characters"));
        }
        if trimmed.chars().count() > 255 {
            return Err(FieldViolation::new(field, "must be at most 255 characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExternalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
