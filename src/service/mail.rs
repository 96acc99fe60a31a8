//! Operator actions on the outbox: list the messages given up on, and queue them again (one,
//! or all). The CLI runs them; each retry is an audit event. Delivery itself is the `mail`
//! module's worker.

use crate::{
    clock::Clock,
    domain::{FailedMail, MailId},
    error::AppError,
    store::Store,
};

/// At most this many failed messages are listed at once.
pub const FAILED_LIST_LIMIT: u32 = 1000;

pub struct MailAdmin {
    store: Store,
    clock: Clock,
}

impl MailAdmin {
    pub fn new(store: Store, clock: Clock) -> Self {
        Self { store, clock }
    }

    /// Failed messages, oldest first (at most [`FAILED_LIST_LIMIT`]).
    pub async fn failed(&self) -> Result<Vec<FailedMail>, AppError> {
        Ok(self.store.failed_mail(FAILED_LIST_LIMIT).await?)
    }

    /// Queues the failed message `id` (or every failed message) again with a fresh count of
    /// attempts; returns how many were queued. A running server delivers them at its next poll.
    pub async fn retry(&self, id: Option<MailId>) -> Result<u64, AppError> {
        let queued = self.store.retry_failed_mail(id, self.clock.now()).await?;
        match id {
            Some(id) => tracing::info!(target: "audit", event = "mail_retried", mail_id = %id, queued),
            None => tracing::info!(target: "audit", event = "mail_retried", all = true, queued),
        }
        Ok(queued)
    }
}
