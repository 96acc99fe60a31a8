//! Accounts for scenarios that need many of them but never log them in (the reset scenario):
//! written straight into the server's database through the import path, in batches, with no
//! password and so no hashing, in seconds rather than the hours signups at cost 12 would take.

use chrono::Utc;
use identity::{
    config::Config,
    domain::{Email, FullName, PasswordHash},
    store::{ImportMode, ImportOutcome, ImportedUser, Limits, Store},
};
use secrecy::ExposeSecret;

/// Adds `count` active accounts without passwords and returns their emails.
pub async fn seed(config: &Config, count: usize) -> Vec<String> {
    let limits = Limits {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(60),
        statement_timeout: std::time::Duration::from_secs(60),
    };
    let store = Store::open(config.database_url.expose_secret(), limits).await.expect("bench store connects");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let emails: Vec<String> = (0..count).map(|n| format!("reset-{n}-{run}@example.com")).collect();
    let name = FullName::parse("full_name", "Bench User").expect("a valid name");
    for chunk in emails.chunks(500) {
        let batch: Vec<ImportedUser> = chunk
            .iter()
            .map(|email| ImportedUser {
                email: Email::parse("email", email).expect("a valid email"),
                full_name: name.clone(),
                password_hash: PasswordHash::no_password(),
                active: true,
                created_at: Utc::now(),
                external_id: None,
                roles: Vec::new(),
            })
            .collect();
        let outcomes = store
            .import_users(&batch, ImportMode { update: false, dry_run: false }, Utc::now())
            .await
            .expect("accounts are written");
        assert!(outcomes.iter().all(|o| matches!(o, ImportOutcome::Imported(_))), "fresh emails import");
    }
    store.close().await;
    emails
}
