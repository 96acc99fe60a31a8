//! Moving users in and out (`identity import`, `identity export`): batches of imported accounts
//! written in one transaction each, pages of accounts read in a stable order, and the count of
//! stored hashes per scheme. Which record is new, already imported or colliding is decided
//! here by the database's own unique indexes (normalized email, confusable key, external id),
//! so concurrent signups and re-runs are judged the same way. Every account a batch creates or
//! changes is on the user-events stream, written in the batch's transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{Connection, QueryBuilder};
use uuid::Uuid;

use super::{
    Store, StoreError, UserRecord,
    events::AppendEvents,
    sessions::{RevokeInTransaction, Target},
    users::{UserRow, user_columns},
    with_pool,
};
use crate::domain::{Email, ExternalId, FullName, PasswordHash, RevocationReason, Role, UserEvent, UserId};

/// One account to import, parsed.
#[derive(Debug, Clone)]
pub struct ImportedUser {
    pub email: Email,
    pub full_name: FullName,
    pub password_hash: PasswordHash,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub external_id: Option<ExternalId>,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
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

/// The columns an import writes, one placeholder group per record.
const INSERT_COLUMNS: &str =
    "INSERT INTO users (id, email, email_lower, email_skeleton, full_name, password_hash,
         password_normalized, password_scheme, is_active, created_at, updated_at, external_id) VALUES ";
const INSERT_COLUMN_COUNT: usize = 12;
/// The hash is replaced only while it is an imported one: a password set or rehashed here is
/// newer than anything the old app holds.
const UPDATE: &str = "UPDATE users SET full_name = $1, is_active = $2, updated_at = $3,
         password_hash = CASE WHEN password_scheme = 'bcrypt' THEN password_hash ELSE $4 END,
         password_normalized = CASE WHEN password_scheme = 'bcrypt' THEN password_normalized ELSE $5 END,
         password_scheme = CASE WHEN password_scheme = 'bcrypt' THEN password_scheme ELSE $6 END
     WHERE id = $7";

/// What an account imported before was, for the events of its update: its name and flag, whether
/// its hash is one made here (which an update leaves), and whether the record's hash is the same.
const BEFORE_UPDATE: &str = "SELECT full_name, is_active, password_scheme = 'bcrypt' AS own_hash,
         password_hash = $2 AS same_hash
     FROM users WHERE id = $1";
const GRANT: &str =
    "INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const HELD: &str = "SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role";
/// Roles granted per INSERT: 3 parameters each, well under SQLite's 32766.
const GRANT_CHUNK: usize = 1000;

#[derive(sqlx::FromRow)]
struct Before {
    full_name: String,
    is_active: bool,
    own_hash: bool,
    same_hash: bool,
}

impl Before {
    /// The events of updating this account from `user`: only what changed (`roles`: the whole
    /// set, when the update granted any).
    fn changes(
        &self,
        user_id: UserId,
        user: &ImportedUser,
        roles: Option<Vec<String>>,
    ) -> Vec<(UserId, UserEvent)> {
        let mut events = Vec::new();
        if self.full_name != user.full_name.as_str() {
            let full_name = Some(user.full_name.as_str().to_owned());
            events.push((user_id, UserEvent::UserUpdated { email: None, full_name }));
        }
        match (self.is_active, user.active) {
            (true, false) => events.push((user_id, UserEvent::UserDeactivated)),
            (false, true) => events.push((user_id, UserEvent::UserActivated)),
            _ => {}
        }
        if !self.own_hash && !self.same_hash {
            events.push((user_id, UserEvent::PasswordChanged));
        }
        if let Some(roles) = roles {
            events.push((user_id, UserEvent::RolesChanged { roles }));
        }
        events
    }
}

/// The events of a new account: created (active, as a signup is), then what sets it apart.
fn created_events(user_id: UserId, user: &ImportedUser) -> Vec<(UserId, UserEvent)> {
    let mut events = vec![(
        user_id,
        UserEvent::UserCreated {
            email: user.email.as_str().to_owned(),
            full_name: user.full_name.as_str().to_owned(),
        },
    )];
    if !user.active {
        events.push((user_id, UserEvent::UserDeactivated));
    }
    if !user.roles.is_empty() {
        let roles = user.roles.iter().map(|role| role.as_str().to_owned()).collect();
        events.push((user_id, UserEvent::RolesChanged { roles }));
    }
    events
}

/// `INSERT ... VALUES ($1, ..., $12), ($13, ...) ON CONFLICT DO NOTHING RETURNING id` for `rows`
/// records: one statement per batch. Rows are inserted in order, so of two records of one batch
/// that collide the first goes in and the second is skipped (both databases).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(INSERT_COLUMNS);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..INSERT_COLUMN_COUNT {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * INSERT_COLUMN_COUNT + column + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING RETURNING id");
    sql
}

/// The accounts holding any of `external` ids, `lower` emails or `keys`: one statement for the
/// records of a batch that were not inserted.
fn holders_sql(external: usize, lower: usize, keys: usize) -> String {
    let mut next = 0;
    let mut list = |count: usize, column: &str| {
        if count == 0 {
            return "FALSE".to_owned();
        }
        let places: Vec<String> = (0..count)
            .map(|_| {
                next += 1;
                format!("${next}")
            })
            .collect();
        format!("{column} IN ({})", places.join(", "))
    };
    let external = list(external, "external_id");
    let lower = list(lower, "email_lower");
    let keys = list(keys, "email_skeleton");
    format!(
        "SELECT id, external_id, email_lower, email_skeleton FROM users WHERE {external} OR {lower} OR {keys}"
    )
}

/// An account holding a record's external id, normalized email or confusable key: its id,
/// external id, normalized email and confusable key.
type Holder = (Uuid, Option<String>, String, Option<String>);

/// A record of a batch with its normalized email and confusable key, computed once.
struct Prepared<'a> {
    user: &'a ImportedUser,
    id: Uuid,
    email_lower: String,
    key: String,
}

impl Prepared<'_> {
    fn external_id(&self) -> Option<&str> {
        self.user.external_id.as_ref().map(ExternalId::as_str)
    }
}

/// Decides what an insert that did not happen means, from the accounts holding the batch's
/// external ids, emails or confusable keys. A record without an external id whose email is
/// already there was imported before, unless that account went in with this very batch (two
/// records of one file with one email).
fn classify(
    record: &Prepared<'_>,
    holders: &[Holder],
    inserted: &HashSet<Uuid>,
) -> Result<Classified, sqlx::Error> {
    let ours = record.external_id();
    let found = |pick: &dyn Fn(&Holder) -> bool| holders.iter().find(|holder| pick(holder));
    if let Some(holder) = ours.and_then(|ours| found(&|h| h.1.as_deref() == Some(ours))) {
        return Ok(Classified::Existing(UserId::from_uuid(holder.0)));
    }
    if let Some(holder) = found(&|h| h.2 == record.email_lower) {
        let id = UserId::from_uuid(holder.0);
        return Ok(if ours.is_none() && !inserted.contains(&holder.0) {
            Classified::Existing(id)
        } else {
            Classified::Collision(id, CollisionKind::SameEmail)
        });
    }
    match found(&|h| h.3.as_deref() == Some(record.key.as_str())) {
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
    /// Imports `batch` in one transaction (rolled back in a dry run): one multi-row insert that
    /// skips every record an index refuses, then one query for the accounts those records ran
    /// into, so that a batch costs a few round trips whatever its size. Records are taken in
    /// order: of two whose emails collide, the first is imported and the second reported. No
    /// hashing happens here: hashes are stored as they came. Each change is on the user-events
    /// stream, written in the same transaction: a new account's `user_created` (and its
    /// roles, and `user_deactivated` if it came in inactive), an updated one's changes.
    pub async fn import_users(
        &self,
        batch: &[ImportedUser],
        mode: ImportMode,
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let prepared: Vec<Prepared<'_>> = batch
            .iter()
            .map(|user| {
                let normalized = user.email.normalized();
                let key = normalized.confusable_key().as_str().to_owned();
                Prepared { user, id: Uuid::new_v4(), email_lower: normalized.as_str().to_owned(), key }
            })
            .collect();
        let insert = insert_sql(prepared.len());
        let outcomes = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut query = sqlx::query_scalar::<_, Uuid>(&insert);
            for record in &prepared {
                let user = record.user;
                query = query
                    .bind(record.id)
                    .bind(user.email.as_str())
                    .bind(record.email_lower.as_str())
                    .bind(record.key.as_str())
                    .bind(user.full_name.as_str())
                    .bind(user.password_hash.expose())
                    .bind(user.password_hash.is_of_normalized_text())
                    .bind(user.password_hash.scheme_name())
                    .bind(user.active)
                    .bind(user.created_at)
                    .bind(now)
                    .bind(record.external_id());
            }
            let inserted: HashSet<Uuid> = query.fetch_all(&mut *tx).await?.into_iter().collect();
            let rest: Vec<&Prepared<'_>> = prepared.iter().filter(|r| !inserted.contains(&r.id)).collect();
            let holders: Vec<Holder> = if rest.is_empty() {
                Vec::new()
            } else {
                let external: Vec<&str> = rest.iter().filter_map(|r| r.external_id()).collect();
                let sql = holders_sql(external.len(), rest.len(), rest.len());
                let mut query = sqlx::query_as::<_, Holder>(&sql);
                for id in &external {
                    query = query.bind(*id);
                }
                for record in &rest {
                    query = query.bind(record.email_lower.as_str());
                }
                for record in &rest {
                    query = query.bind(record.key.as_str());
                }
                query.fetch_all(&mut *tx).await?
            };
            let mut outcomes = Vec::with_capacity(prepared.len());
            let mut events = Vec::new();
            let mut grants: Vec<(Uuid, &Role)> = Vec::new();
            let mut deactivated = Vec::new();
            for record in &prepared {
                let user = record.user;
                if inserted.contains(&record.id) {
                    let user_id = UserId::from_uuid(record.id);
                    events.extend(created_events(user_id, user));
                    grants.extend(user.roles.iter().map(|role| (record.id, role)));
                    outcomes.push(ImportOutcome::Imported(user_id));
                    continue;
                }
                let outcome = match classify(record, &holders, &inserted)? {
                    Classified::Collision(with, kind) => ImportOutcome::Collision { with, kind },
                    Classified::Existing(user_id) if !mode.update => {
                        ImportOutcome::Existing { user_id, updated: false }
                    }
                    Classified::Existing(user_id) => {
                        let before: Option<Before> = sqlx::query_as(BEFORE_UPDATE)
                            .bind(user_id.into_uuid())
                            .bind(user.password_hash.expose())
                            .fetch_optional(&mut *tx)
                            .await?;
                        let before = before.ok_or(sqlx::Error::RowNotFound)?;
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
                        // The record's roles are granted; none is taken away, so that roles
                        // granted here since the move survive a re-run.
                        let mut added = 0;
                        for role in &user.roles {
                            added += sqlx::query(GRANT)
                                .bind(user_id.into_uuid())
                                .bind(role.as_str())
                                .bind(now)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                        }
                        let roles = if added > 0 {
                            let held: Vec<String> =
                                sqlx::query_scalar(HELD).bind(user_id.into_uuid()).fetch_all(&mut *tx).await?;
                            Some(held)
                        } else {
                            None
                        };
                        events.extend(before.changes(user_id, user, roles));
                        // Inactive after the update: its sessions end with it, as with
                        // `identity user deactivate`.
                        if !user.active {
                            deactivated.push(user_id);
                        }
                        ImportOutcome::Existing { user_id, updated: true }
                    }
                };
                outcomes.push(outcome);
            }
            for chunk in grants.chunks(GRANT_CHUNK) {
                let mut insert = QueryBuilder::new("INSERT INTO user_roles (user_id, role, granted_at) ");
                insert.push_values(chunk, |mut row, (user, role)| {
                    row.push_bind(*user).push_bind(role.as_str()).push_bind(now);
                });
                insert.build().execute(&mut *tx).await?;
            }
            // The sequence is taken after the batch's own row writes (see `super::sequence`).
            for user_id in deactivated {
                tx.revoke(Target::User { user_id, except: None }, RevocationReason::AccountDeactivated, now).await?;
            }
            tx.append_events(&events, now).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statements_number_their_placeholders_in_order() {
        let insert = insert_sql(2);
        assert!(insert.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12), ($13, "), "{insert}");
        assert!(insert.ends_with("$24) ON CONFLICT DO NOTHING RETURNING id"), "{insert}");
        assert_eq!(
            holders_sql(0, 2, 2),
            "SELECT id, external_id, email_lower, email_skeleton FROM users \
             WHERE FALSE OR email_lower IN ($1, $2) OR email_skeleton IN ($3, $4)"
        );
    }
}
