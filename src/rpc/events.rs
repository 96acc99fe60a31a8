//! The EventService RPC: WatchUserEvents (catch-up from a cursor, then live events and
//! heartbeats, for service callers with the `watch_events` permission), and the proto mirror
//! of [`UserEvent`].

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    proto::{
        self, SessionRevokedReason, WatchUserEventsRequest, WatchUserEventsResponse,
        event_service_server::EventService, user_event::Kind,
    },
    stream::{self, Feed, Sender, Watch, send_all},
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
        let news = identity.events().subscribe();
        let cursor = identity.event_start(request.into_inner().after_cursor).await?;
        let (sender, receiver) = mpsc::channel(16);
        let feed = EventFeed { identity: Arc::clone(&identity), cursor };
        let watch = Watch {
            identity,
            caller,
            permission: Permission::WatchEvents,
            permit,
            stopping: self.stopping.clone(),
            every: self.heartbeat,
        };
        tokio::spawn(stream::run(watch, feed, news, sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// One subscriber's place in the user-event stream: live batches come from the replica's feed;
/// the catch-up, and the way back after falling behind, read the table.
struct EventFeed {
    identity: Arc<Identity>,
    cursor: u64,
}

impl Feed for EventFeed {
    type Batch = Arc<[EventRecord]>;
    type Message = WatchUserEventsResponse;

    /// Every event after the cursor from the table, page by page; the last message says
    /// `caught_up` on the first catch-up.
    async fn catch_up(&mut self, sender: &Sender<Self::Message>, first: bool) -> bool {
        loop {
            let page = match self.identity.events_after(self.cursor).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(error))).await;
                    return false;
                }
            };
            let last_page = page.len() < crate::service::EVENT_PAGE as usize;
            let events: Vec<&EventRecord> = page.iter().collect();
            if !send_all(sender, messages(&events, &mut self.cursor, first && last_page)).await {
                return false;
            }
            if last_page {
                return true;
            }
        }
    }

    fn live(&mut self, batch: &Self::Batch) -> Vec<Self::Message> {
        let fresh: Vec<&EventRecord> = batch.iter().filter(|e| e.cursor > self.cursor).collect();
        if fresh.is_empty() { Vec::new() } else { messages(&fresh, &mut self.cursor, false) }
    }

    /// Back to the table from the cursor, then live again.
    async fn lagged(&mut self, sender: &Sender<Self::Message>) -> bool {
        self.catch_up(sender, false).await
    }

    fn heartbeat(&self) -> Self::Message {
        WatchUserEventsResponse { events: Vec::new(), cursor: self.cursor, caught_up: false }
    }
}

/// `events` in messages of up to [`CHUNK`] (one empty message when there are none, to end a
/// catch-up), advancing `cursor`; the last carries `caught_up`.
fn messages(events: &[&EventRecord], cursor: &mut u64, caught_up: bool) -> Vec<WatchUserEventsResponse> {
    let chunks: Vec<&[&EventRecord]> =
        if events.is_empty() { vec![&[]] } else { events.chunks(CHUNK).collect() };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            if let Some(event) = chunk.last() {
                *cursor = event.cursor;
            }
            WatchUserEventsResponse {
                events: chunk.iter().map(|event| event_message(event)).collect(),
                cursor: *cursor,
                caught_up: caught_up && index == last,
            }
        })
        .collect()
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
        actor: record.actor.as_ref().map(|actor| actor.as_str().to_owned()).unwrap_or_default(),
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
        RevocationReason::MfaEnabled => R::MfaEnabled,
    }
}
