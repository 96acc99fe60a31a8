//! The `service_keys` table: per-service API keys by name, with their permissions, kept only as
//! a SHA-256 digest and found by it. Revoking marks the row; it is never deleted, so names stay
//! unique and listable.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, with_pool};
use crate::domain::{Permission, Permissions, ServiceKeyDigest, ServiceKeyName};

/// A key as `service-key list` shows it: never its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKeyRecord {
    pub name: ServiceKeyName,
    pub permissions: Permissions,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ServiceKeyRow {
    name: String,
    permissions: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ServiceKeyRow> for ServiceKeyRecord {
    fn from(row: ServiceKeyRow) -> Self {
        Self {
            name: ServiceKeyName::from_stored(row.name),
            permissions: stored_permissions(&row.permissions),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// The permissions column, read leniently: a name this version does not know (written by a
/// newer one) grants nothing here, rather than failing every call of that key.
fn stored_permissions(text: &str) -> Permissions {
    text.split(',').filter_map(|name| Permission::parse(name.trim()).ok()).collect()
}

impl Store {
    /// Inserts a key; `StoreError::UniqueViolation` when the name (or, never in practice, the
    /// digest) is taken.
    pub async fn insert_service_key(
        &self,
        name: &ServiceKeyName,
        digest: &ServiceKeyDigest,
        permissions: &Permissions,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str =
            "INSERT INTO service_keys (name, key_digest, permissions, created_at) VALUES ($1, $2, $3, $4)";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(name.as_str())
            .bind(digest.as_bytes())
            .bind(permissions.to_string())
            .bind(now)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// The unrevoked key with this digest, if there is one: its name and permissions.
    pub async fn find_service_key(
        &self,
        digest: &ServiceKeyDigest,
    ) -> Result<Option<(ServiceKeyName, Permissions)>, StoreError> {
        const SQL: &str =
            "SELECT name, permissions FROM service_keys WHERE key_digest = $1 AND revoked_at IS NULL";
        let row: Option<(String, String)> = with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(digest.as_bytes())
            .fetch_optional(pool)
            .await)?;
        Ok(row
            .map(|(name, permissions)| (ServiceKeyName::from_stored(name), stored_permissions(&permissions))))
    }

    /// Marks the key revoked; `false` when there is no unrevoked key of that name.
    pub async fn revoke_service_key(
        &self,
        name: &ServiceKeyName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE service_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL";
        let updated = with_pool!(self, pool => sqlx::query(SQL)
            .bind(now)
            .bind(name.as_str())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }

    /// Every key, revoked ones included, by name.
    pub async fn list_service_keys(&self) -> Result<Vec<ServiceKeyRecord>, StoreError> {
        const SQL: &str = "SELECT name, permissions, created_at, revoked_at FROM service_keys ORDER BY name";
        let rows = with_pool!(self, pool => sqlx::query_as::<_, ServiceKeyRow>(SQL).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(ServiceKeyRecord::from).collect())
    }
}
