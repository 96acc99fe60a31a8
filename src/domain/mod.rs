//! The service's vocabulary, parsed once at the edge: request values ([`Email`], [`Password`],
//! [`FullName`], [`Presented`] text), the ids that travel everywhere ([`UserId`], [`SessionId`]),
//! the account as callers see it ([`User`]), the service-facing [`Caller`] and its
//! [`Permission`]s, and the credentials as the database keeps them
//! ([`PasswordHash`] in its [`HashScheme`], [`RefreshTokenDigest`]). A function that takes an [`Email`] never checks an
//! email again; each parser reports the field it failed on. Nothing here knows about tonic or
//! sqlx.

mod caller;
mod email;
mod event;
mod full_name;
mod imported_hash;
mod link_token;
mod mail;
mod mfa;
mod password;
mod presented;
mod role;
mod session;
mod stored;
mod user;

pub use caller::{
    AllowedCertificates, Caller, CallerKind, CertificateNames, Credential, Permission, Permissions,
    ServiceKey, ServiceKeyDigest, ServiceKeyName,
};
pub use email::{ConfusableKey, Email, EmailPrefix, NormalizedEmail};
pub use event::{Actor, EventRecord, RevocationReason, UserEvent};
pub use full_name::FullName;
pub use identity_contract::{SessionId, TokenId, UserId};
pub use imported_hash::argon2 as parse_argon2;
pub use link_token::OneTimeToken;
pub use mail::{FailedMail, LinkPurpose, MailContent, MailId, MailKind, NewMail, OutboxMessage};
pub use mfa::{RECOVERY_CODES, RecoveryCode, SecondFactor, TotpCode};
pub use password::{
    MAX_CHECKED_PASSWORD_BYTES, MAX_PASSWORD_BYTES, Password, PasswordPolicy, PresentedPassword,
};
pub use presented::Presented;
pub use role::Role;
pub use session::{SessionInfo, SessionOrigin};
pub use stored::{
    Argon2Bounds, HashScheme, ImportedHashError, PasswordHash, Pbkdf2Parts, RefreshTokenDigest,
};
pub use user::{ExternalId, User};

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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    /// Text mixing ASCII with the characters normalization and look-alikes are about:
    /// combining marks, precomposed letters, fullwidth and compatibility forms, Cyrillic and
    /// Greek look-alikes, ligatures, joiners, bidi controls.
    fn tricky() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            "[a-z0-9.@_-]{1,4}",
            Just("e\u{301}".to_owned()),
            Just("\u{e9}".to_owned()),
            Just("\u{ff41}".to_owned()),
            Just("\u{ff20}".to_owned()),
            Just("\u{430}".to_owned()),
            Just("\u{3bf}".to_owned()),
            Just("\u{fb03}".to_owned()),
            Just("\u{fdfa}".to_owned()),
            Just("\u{130}".to_owned()),
            Just("\u{200d}".to_owned()),
            Just("\u{202e}".to_owned()),
            Just("\u{fe52}".to_owned()),
        ];
        prop_oneof![proptest::collection::vec(pieces, 0..24).prop_map(|p| p.concat()), any::<String>()]
    }

    const POLICY: PasswordPolicy = PasswordPolicy { min_length: 15 };

    proptest! {
        /// A parsed email's normalized form is a valid address of at most 254 bytes, is a fixed
        /// point, and is the same for the NFC and NFD spellings of the input.
        #[test]
        fn email_normalization_is_stable_and_spelling_blind(text in tricky()) {
            if let Ok(email) = Email::parse("email", &text) {
                let normalized = email.normalized();
                prop_assert!(normalized.as_str().len() <= 254);
                let again = Email::parse("email", normalized.as_str());
                prop_assert_eq!(again.map(|e| e.normalized()), Ok(normalized.clone()));
                for spelling in [text.nfc().collect::<String>(), text.nfd().collect()] {
                    let other = Email::parse("email", &spelling).map(|e| e.normalized());
                    prop_assert_eq!(other, Ok(normalized.clone()));
                }
                let key = normalized.confusable_key();
                prop_assert_eq!(key.clone(), normalized.confusable_key());
            }
        }

        /// An accepted password is kept in NFKC within bcrypt's ceiling and the length floor,
        /// and its NFC and NFD spellings get the same verdict and the same text.
        #[test]
        fn the_password_policy_judges_the_normalized_form(text in tricky()) {
            let verdict = |candidate: &str| POLICY.check("password", candidate, &[]).map(|p| p.expose().to_owned());
            let accepted = verdict(&text);
            if let Ok(kept) = &accepted {
                prop_assert!(kept.len() <= password::MAX_PASSWORD_BYTES);
                prop_assert!(kept.chars().count() >= 15);
                prop_assert_eq!(kept.nfkc().collect::<String>(), kept.clone());
            }
            for spelling in [text.nfc().collect::<String>(), text.nfd().collect()] {
                let other = verdict(&spelling);
                prop_assert_eq!(other.as_ref().ok(), accepted.as_ref().ok());
            }
        }

        /// An accepted name holds no bidi control or other format character but the joiners.
        #[test]
        fn an_accepted_name_has_no_hidden_formatting(text in tricky()) {
            use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
            if let Ok(name) = FullName::parse("full_name", &text) {
                let hidden = name.as_str().chars().any(|c| {
                    c.general_category() == GeneralCategory::Format && c != '\u{200c}' && c != '\u{200d}'
                });
                prop_assert!(!hidden);
            }
        }
    }
}
