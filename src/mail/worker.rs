//! The outbox worker: claims due messages under a lease, renders and delivers them a batch at
//! a time, and records each outcome (sent, retried later with exponential backoff and jitter,
//! or given up after `IDENTITY_MAIL_MAX_ATTEMPTS`). Beside delivery it answers recorded
//! password-reset requests (see `requests`), queueing the messages it then delivers. Each of
//! the two wakes when this process records work for it and otherwise every
//! `IDENTITY_MAIL_POLL_INTERVAL`, which also picks up other replicas' work and retries that
//! came due. Several replicas can run it: a claim never hands one message (or request) to two
//! workers.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::TimeDelta;
use lettre::{
    Message,
    message::{Body, Mailbox, MultiPart, SinglePart, header::ContentTransferEncoding, header::ContentType},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};

use super::{Deliverer, ResetLinks, Templates};
use crate::{
    clock::Clock,
    domain::{MailId, MailKind, OutboxMessage},
    metrics::{MAIL_FAILED, MAIL_QUEUE_DEPTH, MAIL_RETRIED, MAIL_SENT},
    store::{FailedAttempt, Store, StoreError},
    supervisor::{Supervised, TaskName},
};

/// Messages claimed (and delivered concurrently) per round trip.
const BATCH: u32 = 32;
/// How long a claim lasts: far beyond one delivery's bound (four SMTP timeouts), so a message
/// returns to the queue only when its worker died.
const LEASE_FLOOR: Duration = Duration::from_secs(300);
/// Waits between delivery attempts of one message: from 1 s, doubling, at most 10 min, each
/// stretched by a random 0-100 % so that a mail server coming back is not hit by every
/// message at once.
const ATTEMPT_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(Duration::from_secs(600))
    .with_jitter()
    .without_max_times();
/// Waits after the database refused a claim.
const DATABASE_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(5))
    .with_jitter()
    .without_max_times();

/// A message handed on, to be marked sent with the rest of its batch.
struct Delivered {
    id: MailId,
    kind: MailKind,
    attempts: u32,
}

/// Wakes the worker of this process when there is work for it, so that it starts at once.
#[derive(Debug, Clone, Default)]
pub struct MailQueue {
    mail: Arc<Notify>,
    requests: Arc<Notify>,
}

impl MailQueue {
    /// A message was queued: deliver it.
    pub fn wake(&self) {
        self.mail.notify_one();
    }

    /// A reset request was recorded: answer it.
    pub fn requested(&self) {
        self.requests.notify_one();
    }
}

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub from: Mailbox,
    pub max_attempts: u32,
    pub poll_interval: Duration,
    /// The SMTP timeout, which sizes the lease.
    pub delivery_timeout: Duration,
    /// The links reset requests are answered with.
    pub reset: ResetLinks,
}

#[derive(Debug)]
pub struct Outbox {
    pub(super) store: Store,
    pub(super) clock: Clock,
    deliverer: Deliverer,
    templates: Templates,
    pub(super) settings: OutboxSettings,
    pub(super) queue: MailQueue,
}

impl Outbox {
    pub fn new(
        store: Store,
        clock: Clock,
        deliverer: Deliverer,
        templates: Templates,
        settings: OutboxSettings,
        queue: MailQueue,
    ) -> Self {
        Self { store, clock, deliverer, templates, settings, queue }
    }

    pub fn deliverer(&self) -> &Deliverer {
        &self.deliverer
    }

    /// Answers reset requests and delivers until a stop is requested.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        tracing::info!(deliverer = self.deliverer.name(), "mail outbox worker started");
        let answering =
            self.repeat(&self.queue.requests, "cannot answer reset requests", stop.clone(), || async {
                self.answer_pending().await?;
                self.record_pending().await;
                Ok(())
            });
        let delivering = self.repeat(&self.queue.mail, "cannot claim queued mail", stop, || async {
            self.deliver_due().await?;
            self.record_depth().await;
            Ok(())
        });
        tokio::join!(answering, delivering);
    }

    /// Runs `round` until a stop is requested: again as soon as `woken`, and otherwise after the
    /// poll interval, or after a growing wait while the database fails (saying `failing`).
    async fn repeat<F, Fut>(&self, woken: &Notify, failing: &str, mut stop: watch::Receiver<bool>, round: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut database_retries = DATABASE_BACKOFF.build();
        loop {
            let wait = match round().await {
                Ok(()) => {
                    database_retries = DATABASE_BACKOFF.build();
                    self.settings.poll_interval
                }
                Err(error) => {
                    tracing::warn!(%error, "{failing}");
                    database_retries.next().unwrap_or(Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = woken.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Delivers every message that is due, a batch at a time, until none is left; returns how
    /// many were handed on. A batch costs two writes whatever its size (the claim, and one
    /// statement marking every delivered message sent), so a busy queue takes the database
    /// (SQLite's one writer above all) away from requests as little as an idle one.
    pub async fn deliver_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let lease = TimeDelta::from_std(LEASE_FLOOR.max(self.settings.delivery_timeout.saturating_mul(8)))
            .unwrap_or(TimeDelta::MAX);
        let mut delivered = 0;
        loop {
            let batch = self.store.claim_mail(self.clock.now(), lease, BATCH).await?;
            if batch.messages.is_empty() {
                return Ok(delivered);
            }
            let mut deliveries = JoinSet::new();
            for message in batch.messages {
                let outbox = Arc::clone(self);
                deliveries.spawn(async move { outbox.deliver_one(batch.claim, message).await });
            }
            let mut sent = Vec::new();
            while let Some(outcome) = deliveries.join_next().await {
                match outcome {
                    Ok(Ok(Some(message))) => sent.push(message),
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "cannot record a delivery outcome"),
                    Err(error) => tracing::warn!(%error, "a delivery task failed"),
                }
            }
            delivered += self.record_sent(batch.claim, &sent).await?;
        }
    }

    /// Marks `sent` sent in one statement, then counts and logs each.
    async fn record_sent(&self, claim: uuid::Uuid, sent: &[Delivered]) -> Result<usize, StoreError> {
        if sent.is_empty() {
            return Ok(0);
        }
        let ids: Vec<MailId> = sent.iter().map(|message| message.id).collect();
        let marked = self.store.mail_sent(&ids, claim, self.clock.now()).await?;
        if marked < ids.len() {
            tracing::warn!(
                messages = ids.len() - marked,
                "messages were delivered after their lease ran out"
            );
        }
        for message in sent {
            metrics::counter!(MAIL_SENT, "kind" => message.kind.as_str()).increment(1);
            tracing::info!(mail_id = %message.id, kind = message.kind.as_str(), attempts = message.attempts,
                deliverer = self.deliverer.name(), "mail delivered");
        }
        Ok(sent.len())
    }

    /// Renders and delivers one message; a failure is recorded here, a success returned to be
    /// recorded with the rest of its batch.
    async fn deliver_one(
        &self,
        claim: uuid::Uuid,
        message: OutboxMessage,
    ) -> Result<Option<Delivered>, StoreError> {
        let kind = message.kind;
        let attempt = match self.envelope(&message) {
            // A message that cannot be built never will be: give up at once.
            Err(problem) => Err((problem, 0)),
            Ok(email) => match self.deliverer.deliver(message.id, email).await {
                Ok(()) => Ok(()),
                Err(error) => Err((error.to_string(), self.settings.max_attempts)),
            },
        };
        let (error, max_attempts) = match attempt {
            Ok(()) => return Ok(Some(Delivered { id: message.id, kind, attempts: message.attempts })),
            Err(failure) => failure,
        };
        let delay = ATTEMPT_BACKOFF
            .build()
            .nth(message.attempts.saturating_sub(1) as usize)
            .unwrap_or(Duration::from_secs(600));
        let next = self.clock.now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::minutes(10));
        let outcome = self.store.mail_attempt_failed(message.id, claim, &error, next, max_attempts).await?;
        match outcome {
            FailedAttempt::Retrying => {
                metrics::counter!(MAIL_RETRIED, "kind" => kind.as_str()).increment(1);
                tracing::warn!(mail_id = %message.id, kind = kind.as_str(), attempts = message.attempts,
                    retry_in = ?delay, %error, "mail delivery failed; will retry");
            }
            FailedAttempt::GaveUp => {
                metrics::counter!(MAIL_FAILED, "kind" => kind.as_str()).increment(1);
                tracing::error!(mail_id = %message.id, kind = kind.as_str(), attempts = message.attempts,
                    %error, "mail delivery failed for good; `identity mail retry` queues it again");
            }
            FailedAttempt::LeaseLost => {}
        }
        Ok(None)
    }

    /// The finished message: headers, and plain-text and HTML parts from the templates.
    fn envelope(&self, message: &OutboxMessage) -> Result<Message, String> {
        let rendered = self
            .templates
            .render(message.kind, &message.content, self.clock.now())
            .map_err(|error| error.to_string())?;
        let to: Mailbox = message
            .recipient
            .parse()
            .map_err(|_| "the recipient is not a deliverable address".to_string())?;
        let from = &self.settings.from;
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@{}>", message.id, from.email.domain())))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, rendered.text))
                    .singlepart(part(ContentType::TEXT_HTML, rendered.html)),
            )
            .map_err(|error| error.to_string())
    }

    /// Sets the queue-depth gauges; a failure only leaves them stale.
    async fn record_depth(&self) {
        if let Ok((pending, failed)) = self.store.mail_queue_depth().await {
            metrics::gauge!(MAIL_QUEUE_DEPTH, "state" => "pending").set(pending as f64);
            metrics::gauge!(MAIL_QUEUE_DEPTH, "state" => "failed").set(failed as f64);
        }
    }
}

/// The worker as a supervised task: restarted if it panics; nothing depends on it for
/// readiness (messages wait in the table meanwhile), so a failure is logged and counted only.
pub struct OutboxWorker(pub Arc<Outbox>);

impl Supervised for OutboxWorker {
    fn name(&self) -> TaskName {
        TaskName::MailOutbox
    }

    fn run(&self, stop: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.0).run(stop)
    }
}

/// A body sent as 8-bit text with lines up to RFC 5322's 998 characters, so a link stays whole
/// and readable in the raw message (quoted-printable would break it at 76 and escape its `=`);
/// every current mail server takes 8BITMIME. Anything else gets lettre's own choice.
fn part(content_type: ContentType, text: String) -> SinglePart {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let body =
        if !crlf.contains('\0') && crlf.split("\r\n").all(|line| line.len() <= 998 && !line.contains('\r')) {
            Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit)
        } else {
            Body::new(text)
        };
    SinglePart::builder().header(content_type).body(body)
}
