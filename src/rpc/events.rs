//! The EventService RPC: WatchUserEvents (catch-up from a cursor, then live events and
//! heartbeats, for service callers with the `watch_events` permission), and the proto mirror
//! of [`UserEvent`].

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    proto::{
        self, SessionRevokedReason, WatchUserEventsRequest, WatchUserEventsResponse,
        event_service_server::EventService, user_event::Kind,
    },
    timestamp,
};
use crate::{
    domain::{EventRecord, Permission, RevocationReason, UserEvent},
    service::Identity,
};

/// Events per message.
const CHUNK: usize = 100;

pub struct EventApi {
    identity: Arc<Identity>,
    /// Becomes true when the server is stopping: streams end so that the drain can finish
    /// (their clients resume on another replica).
    stopping: watch::Receiver<bool>,
    /// How often an idle stream gets a heartbeat (and a service key's stream is re-checked).
    heartbeat: Duration,
}

impl EventApi {
    pub fn new(identity: Arc<Identity>, stopping: watch::Receiver<bool>, heartbeat: Duration) -> Self {
        Self { identity, stopping, heartbeat }
    }
}

type Sender = mpsc::Sender<Result<WatchUserEventsResponse, Status>>;

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchUserEventsStream = ReceiverStream<Result<WatchUserEventsResponse, Status>>;

    /// Needs the `watch_events` permission and a free stream slot of the caller's. An
    /// OUT_OF_RANGE cursor is refused before the stream opens.
    #[tracing::instrument(skip_all)]
    async fn watch_user_events(
        &self,
        request: Request<WatchUserEventsRequest>,
    ) -> Result<Response<Self::WatchUserEventsStream>, Status> {
        let credential = super::caller::credential(&request)?;
        let caller =
            self.identity.authorize(credential, Permission::WatchEvents, "watch_user_events").await?;
        let permit = self.identity.open_stream(&caller)?;
        let identity = Arc::clone(&self.identity);
        // Subscribe before reading the table, so nothing falls between the two.
        let mut news = identity.events().subscribe();
        let mut cursor = identity.event_start(request.into_inner().after_cursor).await?;
        let (sender, receiver) = mpsc::channel(16);
        let mut stopping = self.stopping.clone();
        let every = self.heartbeat;
        tokio::spawn(async move {
            // Held for as long as the stream is open.
            let _permit = permit;
            if !catch_up(&identity, &sender, &mut cursor, true).await {
                return;
            }
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            // Not reset by traffic, unlike the heartbeat: a revoked key's stream ends within one
            // interval either way.
            let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                enum Next {
                    Live(Arc<[EventRecord]>),
                    Lagged,
                    Heartbeat,
                    Recheck,
                    End,
                }
                let next = tokio::select! {
                    batch = news.recv() => match batch {
                        Ok(batch) => Next::Live(batch),
                        Err(broadcast::error::RecvError::Lagged(_)) => Next::Lagged,
                        Err(broadcast::error::RecvError::Closed) => Next::End,
                    },
                    _ = heartbeat.tick() => Next::Heartbeat,
                    _ = recheck.tick() => Next::Recheck,
                    _ = stopping.wait_for(|stopping| *stopping) => Next::End,
                    () = sender.closed() => Next::End,
                };
                let delivered = match next {
                    Next::Live(batch) => {
                        let fresh: Vec<&EventRecord> = batch.iter().filter(|e| e.cursor > cursor).collect();
                        if fresh.is_empty() {
                            continue;
                        }
                        heartbeat.reset();
                        send_events(&sender, &fresh, &mut cursor, false).await
                    }
                    // Fell behind the feed: back to the table from the cursor, then live again.
                    Next::Lagged => {
                        news = news.resubscribe();
                        catch_up(&identity, &sender, &mut cursor, false).await
                    }
                    Next::Heartbeat => send_events(&sender, &[], &mut cursor, false).await,
                    Next::Recheck => {
                        match identity.still_authorized(&caller, Permission::WatchEvents).await {
                            Ok(()) => true,
                            Err(error) => {
                                let _ = sender.send(Err(Status::from(error))).await;
                                false
                            }
                        }
                    }
                    Next::End => false,
                };
                if !delivered {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Sends every event after `cursor` from the table, advancing it; the last message says
/// `caught_up` when `announce` is set. `false` when the stream is over (the client left, or an
/// error such as OUT_OF_RANGE was sent).
async fn catch_up(identity: &Identity, sender: &Sender, cursor: &mut u64, announce: bool) -> bool {
    loop {
        let page = match identity.events_after(*cursor).await {
            Ok(page) => page,
            Err(error) => {
                let _ = sender.send(Err(Status::from(error))).await;
                return false;
            }
        };
        let last_page = page.len() < crate::service::EVENT_PAGE as usize;
        let events: Vec<&EventRecord> = page.iter().collect();
        if !send_events(sender, &events, cursor, announce && last_page).await {
            return false;
        }
        if last_page {
            return true;
        }
    }
}

/// Sends `events` in messages of up to [`CHUNK`] (one empty message when there are none, as a
/// heartbeat or to end a catch-up); the last carries `caught_up`. `false` when the client left.
async fn send_events(sender: &Sender, events: &[&EventRecord], cursor: &mut u64, caught_up: bool) -> bool {
    let chunks: Vec<&[&EventRecord]> =
        if events.is_empty() { vec![&[]] } else { events.chunks(CHUNK).collect() };
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.into_iter().enumerate() {
        if let Some(event) = chunk.last() {
            *cursor = event.cursor;
        }
        let message = WatchUserEventsResponse {
            events: chunk.iter().map(|event| event_message(event)).collect(),
            cursor: *cursor,
            caught_up: caught_up && index == last,
        };
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}

/// The proto mirror of one event.
fn event_message(record: &EventRecord) -> proto::UserEvent {
    let kind = match &record.event {
        UserEvent::UserCreated { email, full_name } => {
            Kind::UserCreated(proto::UserCreated { email: email.clone(), full_name: full_name.clone() })
        }
        UserEvent::UserUpdated { email, full_name } => {
            Kind::UserUpdated(proto::UserUpdated { email: email.clone(), full_name: full_name.clone() })
        }
        UserEvent::EmailVerified { email } => {
            Kind::EmailVerified(proto::EmailVerified { email: email.clone() })
        }
        UserEvent::UserDeactivated => Kind::UserDeactivated(proto::UserDeactivated {}),
        UserEvent::UserActivated => Kind::UserActivated(proto::UserActivated {}),
        UserEvent::UserDeleted => Kind::UserDeleted(proto::UserDeleted {}),
        UserEvent::RolesChanged { roles } => Kind::RolesChanged(proto::RolesChanged { roles: roles.clone() }),
        UserEvent::PasswordChanged => Kind::PasswordChanged(proto::PasswordChanged {}),
        UserEvent::SessionRevoked { session_id, reason } => Kind::SessionRevoked(proto::SessionRevoked {
            session_id: session_id.to_string(),
            reason: reason_message(*reason).into(),
        }),
        UserEvent::MfaEnabled => Kind::MfaEnabled(proto::MfaEnabled {}),
        UserEvent::MfaDisabled => Kind::MfaDisabled(proto::MfaDisabled {}),
        UserEvent::MessageRequested { message_kind, recipient, name, link, expires_at } => {
            Kind::MessageRequested(proto::MessageRequested {
                message_kind: message_kind.as_str().to_owned(),
                recipient: recipient.clone(),
                name: name.clone(),
                link: link.as_ref().map(|link| link.expose_secret().to_owned()).unwrap_or_default(),
                link_expires_at: expires_at.map(timestamp),
            })
        }
    };
    proto::UserEvent {
        cursor: record.cursor,
        user_id: record.user_id.to_string(),
        occurred_at: Some(timestamp(record.occurred_at)),
        kind: Some(kind),
    }
}

fn reason_message(reason: RevocationReason) -> SessionRevokedReason {
    use SessionRevokedReason as R;
    match reason {
        RevocationReason::Logout => R::Logout,
        RevocationReason::RefreshTokenReused => R::RefreshTokenReused,
        RevocationReason::PasswordChanged => R::PasswordChanged,
        RevocationReason::PasswordReset => R::PasswordReset,
        RevocationReason::AccountDeactivated => R::AccountDeactivated,
        RevocationReason::Operator => R::Operator,
        RevocationReason::PasswordGuessing => R::PasswordGuessing,
        RevocationReason::Admin => R::Admin,
        RevocationReason::User => R::User,
        RevocationReason::AccountDeleted => R::AccountDeleted,
        RevocationReason::RolesChanged => R::RolesChanged,
    }
}
