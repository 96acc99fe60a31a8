//! Moving users in and out (`identity import`, `identity export`): batches of imported accounts
//! written in one transaction each, pages of accounts read in a stable order, and the count of
//! stored hashes per scheme. Which record is new, already imported or colliding is decided
//! here, row by row, by the database's own unique indexes (normalized email, confusable key,
//! external id), so concurrent signups and re-runs are judged the same way.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    Store, StoreError, UserRecord,
    sessions::{RevokeInTransaction, Target},
    users::{UserRow, user_columns},
    with_pool,
};
use crate::domain::{Email, ExternalId, FullName, PasswordHash, UserId};

/// One account to import, parsed.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub email: Email,
    pub full_name: FullName,
    pub password_hash: PasswordHash,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub external_id: Option<ExternalId>,
}

/// What importing one record did (or, in a dry run, would have done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported(UserId),
    /// Imported before (the same external id, or for a record without one the same email):
    /// left as it is, or with `update` brought up to date.
    Existing {
        user_id: UserId,
        updated: bool,
    },
    /// The email belongs to another account, the same case-insensitively (in NFKC) or a
    /// look-alike of it: reported, never merged.
    Collision {
        with: UserId,
        kind: CollisionKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionKind {
    SameEmail,
    LookAlike,
}

/// How a batch is written.
#[derive(Debug, Clone, Copy)]
pub struct ImportMode {
    /// Bring accounts imported before up to date (name, active flag, and the hash while it is
    /// still an imported one).
    pub update: bool,
    /// Roll every batch back: count, write nothing.
    pub dry_run: bool,
}

/// Stored password hashes of one scheme (and, for bcrypt, one cost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeCount {
    pub scheme: String,
    /// The bcrypt cost, for the bcrypt schemes.
    pub cost: Option<u32>,
    pub accounts: u64,
}

/// Where [`Store::users_page`] resumes: after this (created_at, id).
pub type PageCursor = (DateTime<Utc>, Uuid);

const INSERT: &str = "INSERT INTO users (id, email, email_lower, email_skeleton, full_name, password_hash,
         password_normalized, password_scheme, is_active, created_at, updated_at, external_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT DO NOTHING RETURNING id";
const HOLDERS: &str = "SELECT id, external_id, email_lower FROM users
     WHERE external_id = $1 OR email_lower = $2 OR email_skeleton = $3";
/// The hash is replaced only while it is an imported one: a password set or rehashed here is
/// newer than anything the old app holds.
const UPDATE: &str = "UPDATE users SET full_name = $1, is_active = $2, updated_at = $3,
         password_hash = CASE WHEN password_scheme = 'bcrypt' THEN password_hash ELSE $4 END,
         password_normalized = CASE WHEN password_scheme = 'bcrypt' THEN password_normalized ELSE $5 END,
         password_scheme = CASE WHEN password_scheme = 'bcrypt' THEN password_scheme ELSE $6 END
     WHERE id = $7";

/// An account holding a record's external id, normalized email or confusable key: its id,
/// external id and normalized email.
type Holder = (Uuid, Option<String>, String);

/// Decides what an insert that did not happen means, from the accounts holding the record's
/// external id, normalized email or confusable key.
fn classify(user: &ImportedUser, email_lower: &str, holders: &[Holder]) -> Result<Classified, sqlx::Error> {
    let ours = user.external_id.as_ref().map(ExternalId::as_str);
    let found = |pick: &dyn Fn(&Holder) -> bool| {
        holders.iter().find(|holder| pick(holder)).map(|holder| UserId::from_uuid(holder.0))
    };
    if let Some(id) = ours.and_then(|ours| found(&|h| h.1.as_deref() == Some(ours))) {
        return Ok(Classified::Existing(id));
    }
    if let Some(id) = found(&|h| h.2 == email_lower) {
        return Ok(if ours.is_none() {
            Classified::Existing(id)
        } else {
            Classified::Collision(id, CollisionKind::SameEmail)
        });
    }
    match holders.first() {
        Some(holder) => Ok(Classified::Collision(UserId::from_uuid(holder.0), CollisionKind::LookAlike)),
        // The conflicting row went away between the two statements: a concurrent delete.
        None => Err(sqlx::Error::RowNotFound),
    }
}

enum Classified {
    Existing(UserId),
    Collision(UserId, CollisionKind),
}

impl Store {
    /// Imports `batch` in one transaction (rolled back in a dry run), record by record in
    /// order, so that of two records whose emails collide the first is imported and the second
    /// reported. No hashing happens here: hashes are stored as they came.
    pub async fn import_users(
        &self,
        batch: &[ImportedUser],
        mode: ImportMode,
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        let outcomes = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for user in batch {
                let normalized = user.email.normalized();
                let key = normalized.confusable_key();
                let external_id = user.external_id.as_ref().map(ExternalId::as_str);
                let id = UserId::new();
                let inserted: Option<Uuid> = sqlx::query_scalar(INSERT)
                    .bind(id.into_uuid())
                    .bind(user.email.as_str())
                    .bind(normalized.as_str())
                    .bind(key.as_str())
                    .bind(user.full_name.as_str())
                    .bind(user.password_hash.expose())
                    .bind(user.password_hash.is_of_normalized_text())
                    .bind(user.password_hash.scheme_name())
                    .bind(user.active)
                    .bind(user.created_at)
                    .bind(now)
                    .bind(external_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if inserted.is_some() {
                    outcomes.push(ImportOutcome::Imported(id));
                    continue;
                }
                let holders: Vec<Holder> = sqlx::query_as(HOLDERS)
                    .bind(external_id)
                    .bind(normalized.as_str())
                    .bind(key.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                let outcome = match classify(user, normalized.as_str(), &holders)? {
                    Classified::Collision(with, kind) => ImportOutcome::Collision { with, kind },
                    Classified::Existing(user_id) if !mode.update => {
                        ImportOutcome::Existing { user_id, updated: false }
                    }
                    Classified::Existing(user_id) => {
                        sqlx::query(UPDATE)
                            .bind(user.full_name.as_str())
                            .bind(user.active)
                            .bind(now)
                            .bind(user.password_hash.expose())
                            .bind(user.password_hash.is_of_normalized_text())
                            .bind(user.password_hash.scheme_name())
                            .bind(user_id.into_uuid())
                            .execute(&mut *tx)
                            .await?;
                        // Inactive after the update: its sessions end with it, as with
                        // `identity user deactivate`.
                        if !user.active {
                            tx.revoke(Target::User { user_id, except: None }, now).await?;
                        }
                        ImportOutcome::Existing { user_id, updated: true }
                    }
                };
                outcomes.push(outcome);
            }
            if mode.dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(outcomes)
        })?;
        Ok(outcomes)
    }

    /// Up to `limit` accounts after `after`, oldest first (by creation time, then id): one page
    /// of an export, read by index without holding a transaction open.
    pub async fn users_page(
        &self,
        after: Option<PageCursor>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE created_at > $1 OR (created_at = $1 AND id > $2)
             ORDER BY created_at, id LIMIT $3"
        );
        // Before any account (Postgres's timestamps start at 4713 BC, so not chrono's minimum).
        let first = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
        let (at, id) = after.unwrap_or((first, Uuid::nil()));
        let rows = with_pool!(self, pool => sqlx::query_as::<_, UserRow>(SQL)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(UserRecord::from).collect())
    }

    /// The account imported with `external_id`, if any.
    pub async fn find_user_by_external_id(
        &self,
        external_id: &ExternalId,
    ) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE external_id = $1");
        let row = with_pool!(self, pool => sqlx::query_as::<_, UserRow>(SQL)
            .bind(external_id.as_str())
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(UserRecord::from))
    }

    /// How many stored hashes there are of each scheme (and bcrypt cost).
    pub async fn password_schemes(&self) -> Result<Vec<SchemeCount>, StoreError> {
        const SQL: &str = "SELECT password_scheme,
                 CASE WHEN password_scheme IN ('bcrypt', 'bcrypt-imported')
                      THEN substr(password_hash, 5, 2) ELSE '' END AS cost,
                 count(*) AS accounts
             FROM users GROUP BY 1, 2 ORDER BY 1, 2";
        let rows: Vec<(String, String, i64)> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(scheme, cost, accounts)| SchemeCount {
                scheme,
                cost: cost.parse().ok(),
                accounts: u64::try_from(accounts).unwrap_or(0),
            })
            .collect())
    }
}
