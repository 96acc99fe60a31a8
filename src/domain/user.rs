//! An account as the service hands it to callers: never with its password hash, which stays
//! between the store and the login path.

use chrono::{DateTime, Utc};

use super::{Role, UserId};

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
}

impl User {
    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }
}
