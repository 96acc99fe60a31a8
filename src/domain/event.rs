//! What happened to an account, as the user-events stream tells it: one [`UserEvent`] per
//! change, written in the transaction that makes the change. This enum is the one definition:
//! the store keeps it as JSON (serialised here, by serde), the stream sends its proto mirror.
//! A message-requested event carries a link with a single-use token: a secret, which `Debug`
//! redacts and only an authorised subscriber receives.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Caller, MailKind, SessionId, UserId};

/// One change to an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserEvent {
    UserCreated {
        email: String,
        full_name: String,
    },
    /// Only the fields that changed are set, to their new values.
    UserUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full_name: Option<String>,
    },
    EmailVerified {
        email: String,
    },
    UserDeactivated,
    UserActivated,
    UserDeleted,
    /// The whole new set of roles.
    RolesChanged {
        roles: Vec<String>,
    },
    PasswordChanged,
    SessionRevoked {
        session_id: SessionId,
        reason: RevocationReason,
    },
    MfaEnabled,
    MfaDisabled,
    /// With `IDENTITY_MAIL=none`: a message the service would have sent, for the team's own
    /// notification service to deliver.
    MessageRequested {
        message_kind: MailKind,
        recipient: String,
        /// The recipient's name, for the greeting.
        name: String,
        #[serde(default, with = "secret_link")]
        link: Option<SecretString>,
        /// When the link stops working.
        #[serde(default, with = "micros")]
        expires_at: Option<DateTime<Utc>>,
    },
}

impl UserEvent {
    /// The `kind` the JSON form carries (and the table's `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UserCreated { .. } => "user_created",
            Self::UserUpdated { .. } => "user_updated",
            Self::EmailVerified { .. } => "email_verified",
            Self::UserDeactivated => "user_deactivated",
            Self::UserActivated => "user_activated",
            Self::UserDeleted => "user_deleted",
            Self::RolesChanged { .. } => "roles_changed",
            Self::PasswordChanged => "password_changed",
            Self::SessionRevoked { .. } => "session_revoked",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
            Self::MessageRequested { .. } => "message_requested",
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads a stored event; an error for a kind this version does not know (written by a
    /// newer replica) or a damaged row.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The user logged out.
    Logout,
    /// A rotated refresh token was presented again (RFC 9700 §4.14.2).
    RefreshTokenReused,
    /// The password was changed: every other session ends.
    PasswordChanged,
    /// The password was reset by email: every session ends.
    PasswordReset,
    /// The account was deactivated.
    AccountDeactivated,
    /// An operator ended the user's sessions.
    Operator,
    /// Repeated wrong current passwords on this session.
    PasswordGuessing,
    /// An admin caller ended it.
    Admin,
    /// The user ended it from their list of sessions.
    User,
    /// The account was deleted.
    AccountDeleted,
    /// A role was taken away: tokens carrying it must not outlive the change.
    RolesChanged,
    /// A second factor was enabled: sessions opened with the password alone (perhaps by whoever
    /// made the user enrol) end, except the one that enrolled.
    MfaEnabled,
}

/// Who made a change someone other than the account's owner made: an admin caller, named as
/// its audit event names it (`service_key:billing`, `mtls:spiffe://...`, `user:<id>` for a
/// person with the admin role), or `cli` for an operator's command. A change the owner made (or
/// the service made for them: signup, a link followed, a refresh token reused) has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// An operator's `identity` command.
    pub const CLI: &'static str = "cli";

    pub fn caller(caller: &Caller) -> Self {
        Self(format!("{}:{}", caller.kind.as_str(), caller.name))
    }

    pub fn operator() -> Self {
        Self(Self::CLI.to_owned())
    }

    /// As stored in the `actor` column, where only these constructors' text is written.
    pub(crate) fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event as read back from the stream: its cursor, whose account, when, and who made it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The position in commit order; resume after it.
    pub cursor: u64,
    pub user_id: UserId,
    pub occurred_at: DateTime<Utc>,
    pub event: UserEvent,
    /// `None` when the account's owner made the change.
    pub actor: Option<Actor>,
}

/// The link as plain text in the stored JSON (it must reach the subscriber), a secret elsewhere.
mod secret_link {
    use super::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(link: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match link {
            Some(link) => s.serialize_some(link.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

/// A time as microseconds since the epoch.
mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&at.timestamp_micros()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.and_then(DateTime::from_timestamp_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<UserEvent> {
        vec![
            UserEvent::UserCreated { email: "a@example.com".into(), full_name: "Ada".into() },
            UserEvent::UserUpdated { email: None, full_name: Some("Ada L".into()) },
            UserEvent::EmailVerified { email: "a@example.com".into() },
            UserEvent::UserDeactivated,
            UserEvent::UserActivated,
            UserEvent::UserDeleted,
            UserEvent::RolesChanged { roles: vec!["billing.read".into()] },
            UserEvent::PasswordChanged,
            UserEvent::SessionRevoked { session_id: SessionId::new(), reason: RevocationReason::Logout },
            UserEvent::MfaEnabled,
            UserEvent::MfaDisabled,
            UserEvent::MessageRequested {
                message_kind: MailKind::PasswordReset,
                recipient: "a@example.com".into(),
                name: "Ada".into(),
                link: Some(SecretString::from("https://x/reset?token=s3cret")),
                expires_at: Some(Utc::now()),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_and_names_itself_as_its_json_does() {
        for event in every_kind() {
            let json = event.to_json().unwrap();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["kind"], event.kind(), "{json}");
            let back = UserEvent::from_json(&json).unwrap();
            assert_eq!(back.kind(), event.kind());
            assert_eq!(back.to_json().unwrap(), json);
        }
    }

    #[test]
    fn the_link_stays_out_of_debug_but_reaches_the_stored_form() {
        let event = every_kind().pop().unwrap();
        assert!(!format!("{event:?}").contains("s3cret"));
        assert!(event.to_json().unwrap().contains("s3cret"));
    }

    #[test]
    fn mail_kinds_are_stored_by_their_outbox_names() {
        for kind in MailKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn an_unknown_kind_is_an_error_not_a_panic() {
        assert!(UserEvent::from_json(r#"{"kind":"from_the_future"}"#).is_err());
    }
}
