//! Messages the service sends a user: what kind, to whom, and what they carry (the user's name
//! and, for most kinds, a link holding a single-use token, which is a secret). The outbox keeps
//! them until a deliverer has handed them on; [`MailId`] names one for the operator.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// What a message is for; it picks the templates and the subject. Serialised (in user events)
/// by the same snake_case names as [`MailKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// A link to set a new password.
    PasswordReset,
    /// A link that proves control of the address.
    VerifyEmail,
    /// A notice to the old address that the account's email changed.
    EmailChanged,
    /// A notice to an account's owner that someone signed up with their address (sent instead
    /// of an ALREADY_EXISTS answer when `IDENTITY_SIGNUP_REVEALS_ACCOUNTS=false`).
    AccountExists,
    /// A message the operator's tooling or a test writes.
    Test,
}

impl MailKind {
    pub const ALL: [Self; 5] =
        [Self::PasswordReset, Self::VerifyEmail, Self::EmailChanged, Self::AccountExists, Self::Test];

    /// The name stored in the outbox, used for template files and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
            Self::EmailChanged => "email_changed",
            Self::AccountExists => "account_exists",
            Self::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for MailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a single-use token sent by email proves when it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkPurpose {
    /// Control of the account's address: it may set a new password.
    PasswordReset,
    /// Control of the account's current address.
    VerifyEmail,
    /// Control of a new address the account asked to move to.
    ChangeEmail,
}

impl LinkPurpose {
    /// The name stored with the token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_reset",
            Self::VerifyEmail => "verify_email",
            Self::ChangeEmail => "change_email",
        }
    }
}

/// The id of one outbox message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MailId(Uuid);

impl MailId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub const fn into_uuid(self) -> Uuid {
        self.0
    }
}

impl Default for MailId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for MailId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self)
    }
}

/// What the templates of a message are rendered with. The link carries a token: its `Debug`
/// is redacted, and it is read only to render the message.
#[derive(Clone)]
pub struct MailContent {
    pub name: String,
    pub link: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl MailContent {
    pub fn link(&self) -> Option<&str> {
        self.link.as_ref().map(ExposeSecret::expose_secret)
    }
}

impl fmt::Debug for MailContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailContent")
            .field("name", &self.name)
            .field("link", &self.link.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub kind: MailKind,
    pub recipient: String,
    pub content: MailContent,
}

/// A message a worker has claimed and must deliver.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: MailId,
    pub kind: MailKind,
    pub recipient: String,
    pub content: MailContent,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
}

/// A message given up on after the maximum attempts, as the operator sees it.
#[derive(Debug, Clone)]
pub struct FailedMail {
    pub id: MailId,
    pub kind: String,
    pub recipient: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_links_stay_out_of_debug() {
        for kind in MailKind::ALL {
            assert_eq!(MailKind::parse(kind.as_str()), Some(kind));
        }
        let content = MailContent {
            name: "Ada".into(),
            link: Some(SecretString::from("https://x/reset?token=s3cret")),
            expires_at: None,
        };
        assert!(!format!("{content:?}").contains("s3cret"));
    }
}
