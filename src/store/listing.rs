//! ListUsers' side of the `users` family: keyset pages in (created_at, id) order with at most
//! one index range per filter (see docs/operations.md, "Listing users at scale").

use chrono::{DateTime, Utc};

use super::{
    Store, StoreError,
    users::{UserRecord, UserRow, user_columns},
    with_pool,
};
use crate::domain::{EmailPrefix, Role, User, UserId};

/// Which users a listing returns; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub email_prefix: Option<EmailPrefix>,
    pub active: Option<bool>,
    pub role: Option<Role>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
}

/// Where a page ends: the last user's creation time and id, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    pub created_at: DateTime<Utc>,
    pub id: UserId,
}

/// Binds the listing's values to `$query` in [`list_sql`]'s order.
macro_rules! bind_listing {
    ($query:expr, $filter:expr, $upper:expr, $after:expr, $limit:expr) => {{
        let (filter, mut query): (&UserFilter, _) = ($filter, $query);
        if let Some(prefix) = &filter.email_prefix {
            query = query.bind(prefix.as_str());
            if let Some(upper) = $upper {
                query = query.bind(upper.as_str());
            }
        }
        if let Some(active) = filter.active {
            query = query.bind(active);
        }
        if let Some(role) = &filter.role {
            query = query.bind(role.as_str());
        }
        if let Some(from) = filter.created_from {
            query = query.bind(from);
        }
        if let Some(before) = filter.created_before {
            query = query.bind(before);
        }
        if let Some(after) = $after {
            query = query.bind(after.created_at).bind(after.id.into_uuid());
        }
        query.bind(i64::from($limit))
    }};
}

impl Store {
    /// Up to `limit` users matching `filter` after `after`, in (created_at, id) order. The SQL
    /// names only the filters given, so the planner picks the index that serves them.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserCursor>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        let sql = list_sql(filter, after.is_some(), self.backend() == "postgres");
        let upper = filter.email_prefix.as_ref().and_then(EmailPrefix::upper_bound);
        let rows = with_pool!(self, pool => {
            bind_listing!(sqlx::query_as::<_, UserRow>(&sql), filter, &upper, after, limit).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(|row| UserRecord::from(row).user).collect())
    }

    /// How the database runs [`Store::list_users`]' statement: `EXPLAIN (ANALYZE, BUFFERS)` on
    /// Postgres, `EXPLAIN QUERY PLAN` on SQLite, a line per row. For the load bench.
    #[cfg(feature = "test-helpers")]
    pub async fn explain_list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserCursor>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        use sqlx::Row;
        let postgres = self.backend() == "postgres";
        let sql = list_sql(filter, after.is_some(), postgres);
        let (sql, column) = if postgres {
            (format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"), 0)
        } else {
            (format!("EXPLAIN QUERY PLAN {sql}"), 3)
        };
        let upper = filter.email_prefix.as_ref().and_then(EmailPrefix::upper_bound);
        let lines = with_pool!(self, pool => {
            let rows = bind_listing!(sqlx::query(&sql), filter, &upper, after, limit).fetch_all(pool).await?;
            Ok::<_, sqlx::Error>(rows.iter().map(|row| row.try_get::<String, _>(column).unwrap_or_default()).collect())
        })?;
        Ok(lines)
    }
}

/// The listing statement for the filters present, its placeholders numbered in the order
/// [`Store::list_users`] binds them (and in textual order). The page's ids are found first, from
/// the index the filter walks (an index-only scan where it can be), and only those rows are
/// read. A role is walked in its holders' creation order (`user_roles (role, user_created_at,
/// user_id)`), so its page is one index range however many hold it. Postgres compares the email
/// prefix bytewise (`COLLATE "C"`, as its index does); SQLite always does.
fn list_sql(filter: &UserFilter, paged: bool, postgres: bool) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let (from, order) = if filter.role.is_some() {
        ("users JOIN user_roles r ON r.user_id = users.id", "r.user_created_at, r.user_id")
    } else {
        ("users", "users.created_at, users.id")
    };
    let mut page = format!("SELECT users.id FROM {from} WHERE users.deleted_at IS NULL");
    if let Some(prefix) = &filter.email_prefix {
        let column = if postgres { "users.email_lower COLLATE \"C\"" } else { "users.email_lower" };
        page.push_str(&format!(" AND {column} >= {}", next()));
        if prefix.upper_bound().is_some() {
            page.push_str(&format!(" AND {column} < {}", next()));
        }
    }
    if filter.active.is_some() {
        page.push_str(&format!(" AND users.is_active = {}", next()));
    }
    if filter.role.is_some() {
        page.push_str(&format!(" AND r.role = {}", next()));
    }
    if filter.created_from.is_some() {
        page.push_str(&format!(" AND users.created_at >= {}", next()));
    }
    if filter.created_before.is_some() {
        page.push_str(&format!(" AND users.created_at < {}", next()));
    }
    if paged {
        let (at, id) = (next(), next());
        page.push_str(&format!(" AND ({order}) > ({at}, {id})"));
    }
    page.push_str(&format!(" ORDER BY {order} LIMIT {}", next()));
    format!(concat!("SELECT ", user_columns!(), " FROM users WHERE id IN ({}) ORDER BY created_at, id"), page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_names_only_the_filters_given_in_binding_order() {
        let none = list_sql(&UserFilter::default(), false, true);
        assert!(
            none.contains("WHERE users.deleted_at IS NULL ORDER BY users.created_at, users.id LIMIT $1)"),
            "{none}"
        );
        let all = UserFilter {
            email_prefix: Some(EmailPrefix::parse("email_prefix", "ada").unwrap()),
            active: Some(true),
            role: Some(Role::parse("role", "billing.read").unwrap()),
            created_from: Some(Utc::now()),
            created_before: Some(Utc::now()),
        };
        let sql = list_sql(&all, true, true);
        for part in [
            "users.email_lower COLLATE \"C\" >= $1",
            "users.email_lower COLLATE \"C\" < $2",
            "users.is_active = $3",
            "r.role = $4",
            "users.created_at >= $5",
            "users.created_at < $6",
            "(r.user_created_at, r.user_id) > ($7, $8)",
            "ORDER BY r.user_created_at, r.user_id LIMIT $9) ORDER BY created_at, id",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        assert!(!list_sql(&all, true, false).contains("COLLATE"));
    }
}
