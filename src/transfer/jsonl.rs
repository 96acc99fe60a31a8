//! The JSON Lines format `identity import --from-jsonl` reads and `identity export` writes, one
//! account per line:
//!
//! ```json
//! {"email":"ada@example.com","full_name":"Ada Lovelace","password_hash":"$2b$12$...","active":true,"created":"2021-03-04T05:06:07Z","external_id":"42","roles":[]}
//! ```
//!
//! `email` is required; `full_name` defaults to the part of the email before the `@`;
//! `password_hash` (bcrypt, argon2id/argon2i PHC, passlib or Django PBKDF2-SHA256) may be left
//! out, and the account then has no password until a reset; `active` defaults to true;
//! `created` (RFC 3339) to the time of the import; `external_id` (a string or a number) is
//! the id in the old app; `roles` (each as `identity user grant-role` takes it) are the roles
//! the account holds here, in the `roles` claim of its tokens. Unknown fields are refused, so a
//! misspelt `password_hash` does not import accounts without one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{Email, ExternalId, FullName, PasswordHash, Role},
    service::ExportedUser,
    store::ImportedUser,
};

/// One line, as read or written. `Debug` leaves the hash out.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// RFC 3339.
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "string_or_number")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("email", &self.email)
            .field("external_id", &self.external_id)
            .finish_non_exhaustive()
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(i64),
    }
    Ok(Option::<Id>::deserialize(deserializer)?.map(|id| match id {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    }))
}

impl Line {
    /// The account this line describes; the error names the field that failed, never quoting a
    /// hash.
    pub fn parse(self, now: DateTime<Utc>) -> Result<ImportedUser, String> {
        let email = Email::parse("email", &self.email).map_err(|v| format!("email: {}", v.description))?;
        let full_name = match self.full_name.as_deref().map(str::trim).filter(|name| !name.is_empty()) {
            Some(name) => name.to_owned(),
            None => email.as_str().split('@').next().unwrap_or_default().to_owned(),
        };
        let full_name =
            FullName::parse("full_name", &full_name).map_err(|v| format!("full_name: {}", v.description))?;
        let password_hash = match self.password_hash.as_deref().filter(|hash| !hash.is_empty()) {
            Some(hash) => PasswordHash::parse_imported(hash).map_err(|e| format!("password_hash: {e}"))?,
            None => PasswordHash::no_password(),
        };
        let external_id = self
            .external_id
            .as_deref()
            .map(|id| ExternalId::parse("external_id", id))
            .transpose()
            .map_err(|v| format!("external_id: {}", v.description))?;
        let roles = Role::parse_set("roles", &self.roles).map_err(|v| format!("roles: {}", v.description))?;
        let created_at = match self.created.as_deref() {
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|_| "created: must be an RFC 3339 time such as 2021-03-04T05:06:07Z".to_owned())?
                .with_timezone(&Utc),
            None => now,
        };
        Ok(ImportedUser {
            email,
            full_name,
            password_hash,
            active: self.active.unwrap_or(true),
            created_at,
            external_id,
            roles,
        })
    }

    /// The line of an exported account. A hash made here is bcrypt and reads back as an
    /// imported bcrypt hash; one of the text as typed (`password_normalized` false) checks the
    /// same either way, and one of the NFKC form differs only for passwords that NFKC changes.
    pub fn export(exported: &ExportedUser) -> Self {
        let user = &exported.user;
        Self {
            email: user.email.clone(),
            full_name: Some(user.full_name.clone()),
            password_hash: exported
                .password_hash
                .as_ref()
                .map(|hash| hash.expose().to_owned())
                .filter(|hash| !hash.is_empty()),
            active: Some(user.is_active),
            created: Some(user.created_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            external_id: user.external_id.clone(),
            roles: user.roles.iter().map(|role| role.as_str().to_owned()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HashScheme;

    fn parse(json: &str) -> Result<ImportedUser, String> {
        serde_json::from_str::<Line>(json).map_err(|e| e.to_string())?.parse(DateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_line_reads_with_its_defaults() {
        let user = parse(r#"{"email":"Ada@Example.com","external_id":42}"#).unwrap();
        assert_eq!(user.full_name.as_str(), "Ada");
        assert!(user.active);
        assert_eq!(user.password_hash.scheme(), Some(HashScheme::NoPassword));
        assert_eq!(user.external_id.unwrap().as_str(), "42");
        assert_eq!(user.created_at, DateTime::UNIX_EPOCH);
        assert!(user.roles.is_empty());
        let user = parse(r#"{"email":"a@example.com","roles":["billing.read","admin","admin"]}"#).unwrap();
        assert_eq!(user.roles.iter().map(Role::as_str).collect::<Vec<_>>(), ["admin", "billing.read"]);
    }

    #[test]
    fn bad_lines_name_the_field_without_quoting_the_hash() {
        assert!(parse(r#"{"email":"nope"}"#).unwrap_err().starts_with("email:"));
        let error = parse(r#"{"email":"a@example.com","password_hash":"md5:secretsecret"}"#).unwrap_err();
        assert!(error.starts_with("password_hash:") && !error.contains("secretsecret"), "{error}");
        assert!(
            parse(r#"{"email":"a@example.com","pasword_hash":"x"}"#).unwrap_err().contains("unknown field")
        );
        assert!(parse(r#"{"email":"a@example.com","roles":["Admin"]}"#).unwrap_err().starts_with("roles:"));
    }
}
