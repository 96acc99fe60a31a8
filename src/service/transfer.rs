//! Moving accounts in and out: imports in batches (one transaction and one audit event each),
//! exports page by page, and the count of stored hashes per scheme that tells how many imported
//! ones remain. Like [`AccountAdmin`](super::AccountAdmin), it needs only the store and the
//! clock; the operator CLI (`identity import`, `identity export`, `identity user hash-schemes`)
//! reads and writes the files and tables around it.

use crate::{
    clock::Clock,
    domain::{PasswordHash, User},
    error::AppError,
    store::{ImportMode, ImportOutcome, ImportedUser, PageCursor, SchemeCount, Store},
};

/// Accounts read per page of an export.
pub const EXPORT_PAGE: u32 = 1000;

/// An account as exported: the hash only when asked for.
#[derive(Debug, Clone)]
pub struct ExportedUser {
    pub user: User,
    pub password_hash: Option<PasswordHash>,
}

pub struct AccountTransfer {
    store: Store,
    clock: Clock,
}

impl AccountTransfer {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Imports one batch, in order, in one transaction (rolled back in a dry run).
    pub async fn import(
        &self,
        batch: &[ImportedUser],
        mode: ImportMode,
    ) -> Result<Vec<ImportOutcome>, AppError> {
        let outcomes = self.store.import_users(batch, mode, self.clock.now()).await?;
        let count = |pick: fn(&ImportOutcome) -> bool| outcomes.iter().filter(|o| pick(o)).count();
        let imported = count(|o| matches!(o, ImportOutcome::Imported(_)));
        let updated = count(|o| matches!(o, ImportOutcome::Existing { updated: true, .. }));
        let skipped = count(|o| matches!(o, ImportOutcome::Existing { updated: false, .. }));
        let collisions = count(|o| matches!(o, ImportOutcome::Collision { .. }));
        tracing::info!(target: "audit", event = "users_imported", imported, updated, skipped, collisions,
            dry_run = mode.dry_run);
        Ok(outcomes)
    }

    /// The next page of accounts after `after` (oldest first), with their hashes if
    /// `with_hashes`; empty at the end.
    pub async fn export_page(
        &self,
        after: Option<PageCursor>,
        with_hashes: bool,
    ) -> Result<Vec<ExportedUser>, AppError> {
        let page = self.store.users_page(after, EXPORT_PAGE).await?;
        Ok(page
            .into_iter()
            .map(|record| ExportedUser {
                password_hash: with_hashes.then_some(record.password_hash),
                user: record.user,
            })
            .collect())
    }

    /// Stored hashes per scheme (and bcrypt cost).
    pub async fn hash_schemes(&self) -> Result<Vec<SchemeCount>, AppError> {
        Ok(self.store.password_schemes().await?)
    }
}
