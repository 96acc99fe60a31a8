//! The TokenService RPCs: ValidateToken (RFC 7662 introspection, the reason kept in the logs),
//! GetJwks (the contract's JWK shape for every key that verifies) and WatchRevocations (catch-up,
//! then live revocations and heartbeats, for authorised service callers only).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    proto::{
        Claims, GetJwksRequest, GetJwksResponse, JsonWebKey, RevokedSession, ValidateTokenRequest,
        ValidateTokenResponse, WatchRevocationsRequest, WatchRevocationsResponse,
        token_service_server::TokenService,
    },
    stream::{self, Feed, Sender, Watch, send_all},
    timestamp,
};
use crate::{
    domain::{Permission, SessionId},
    service::Identity,
    tokens::{AccessClaims, RevocationBatch},
};

pub struct TokenApi {
    identity: Arc<Identity>,
    /// Becomes true when the server is stopping: watch streams end so that the drain can finish
    /// (their clients resume on another replica).
    stopping: watch::Receiver<bool>,
    /// How often an idle WatchRevocations stream gets a heartbeat.
    heartbeat: Duration,
}

impl TokenApi {
    pub fn new(identity: Arc<Identity>, stopping: watch::Receiver<bool>, heartbeat: Duration) -> Self {
        Self { identity, stopping, heartbeat }
    }
}

/// Revocations per catch-up message.
const CATCH_UP_CHUNK: usize = 500;

fn revocations_message(
    sessions: &[(SessionId, DateTime<Utc>)],
    cursor: u64,
    caught_up: bool,
) -> WatchRevocationsResponse {
    WatchRevocationsResponse {
        revoked: sessions
            .iter()
            .map(|(id, until)| RevokedSession {
                session_id: id.to_string(),
                relevant_until: Some(timestamp(*until)),
            })
            .collect(),
        cursor,
        caught_up,
    }
}

/// One watcher's place in the revocation stream: its catch-up is the revocation set's snapshot,
/// taken when it subscribed.
struct RevocationFeed {
    since: u64,
    backlog: Vec<(SessionId, DateTime<Utc>)>,
    cursor: u64,
}

impl Feed for RevocationFeed {
    type Batch = RevocationBatch;
    type Message = WatchRevocationsResponse;

    /// The snapshot in chunks; only the last carries the new cursor, so a client cut off
    /// mid-way resumes from where it started.
    async fn catch_up(&mut self, sender: &Sender<Self::Message>, _first: bool) -> bool {
        let backlog = std::mem::take(&mut self.backlog);
        let chunks: Vec<&[(SessionId, DateTime<Utc>)]> =
            if backlog.is_empty() { vec![&[]] } else { backlog.chunks(CATCH_UP_CHUNK).collect() };
        let last = chunks.len() - 1;
        let messages = chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| {
                if index == last {
                    revocations_message(chunk, self.cursor, true)
                } else {
                    revocations_message(chunk, self.since, false)
                }
            })
            .collect();
        send_all(sender, messages).await
    }

    fn live(&mut self, batch: &Self::Batch) -> Vec<Self::Message> {
        self.cursor = self.cursor.max(batch.cursor);
        vec![revocations_message(&batch.sessions, self.cursor, false)]
    }

    /// The set keeps no history to catch up from: the client resumes with its last cursor.
    async fn lagged(&mut self, sender: &Sender<Self::Message>) -> bool {
        let status = Status::unavailable("fell behind the revocation feed: resume with the last cursor");
        let _ = sender.send(Err(status)).await;
        false
    }

    fn heartbeat(&self) -> Self::Message {
        revocations_message(&[], self.cursor, false)
    }
}

pub fn claims_message(claims: &AccessClaims) -> Claims {
    let at = |seconds| DateTime::from_timestamp(seconds, 0).map(timestamp);
    Claims {
        issued_at: at(claims.iat),
        expires_at: at(claims.exp),
        subject: claims.sub.to_string(),
        email: claims.email.clone(),
        full_name: claims.name.clone(),
        session_id: claims.sid.to_string(),
        token_id: claims.jti.to_string(),
        issuer: claims.iss.clone(),
        audience: vec![claims.aud.clone()],
        email_verified: claims.email_verified,
        roles: claims.roles.clone(),
        amr: claims.amr.clone(),
        auth_time: claims.auth_time.and_then(at),
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    type WatchRevocationsStream = ReceiverStream<Result<WatchRevocationsResponse, Status>>;

    /// Needs the `watch_revocations` permission, and a free stream slot of the caller's.
    /// Catch-up first (everything after `since`, in chunks; only the last chunk carries the new
    /// cursor, so a client cut off mid-way resumes from where it started), then live batches
    /// and heartbeats until the client leaves or the server stops.
    #[tracing::instrument(skip_all)]
    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let credential = super::caller::credential(&request)?;
        let caller =
            self.identity.authorize(credential, Permission::WatchRevocations, "watch_revocations").await?;
        let permit = self.identity.open_stream(&caller)?;
        let since = request.into_inner().since;
        let revocations = Arc::clone(self.identity.revocations());
        // Subscribe before the snapshot, so nothing falls between them.
        let news = revocations.subscribe();
        let (backlog, cursor) = revocations.catch_up(since, self.identity.now());
        let (sender, receiver) = mpsc::channel(16);
        let feed = RevocationFeed { since, backlog, cursor };
        let watch = Watch {
            identity: Arc::clone(&self.identity),
            caller,
            permission: Permission::WatchRevocations,
            permit,
            stopping: self.stopping.clone(),
            every: self.heartbeat,
        };
        tokio::spawn(async move {
            metrics::gauge!(crate::metrics::REVOCATION_WATCHERS).increment(1.0);
            stream::run(watch, feed, news, sender).await;
            metrics::gauge!(crate::metrics::REVOCATION_WATCHERS).decrement(1.0);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    /// RFC 7662: an inactive token is an answer, not an error, and the reason stays here.
    #[tracing::instrument(skip_all)]
    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let response = match self.identity.validate(&request.get_ref().access_token) {
            Ok(verified) => {
                ValidateTokenResponse { active: true, claims: Some(claims_message(&verified.claims)) }
            }
            Err(reason) => {
                tracing::debug!(%reason, "inactive token");
                ValidateTokenResponse { active: false, claims: None }
            }
        };
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let keys = self
            .identity
            .tokens()
            .keys()
            .jwks()
            .iter()
            .map(|jwk| {
                let members = jwk.members();
                JsonWebKey {
                    kty: members.kty.into(),
                    crv: members.crv.into(),
                    x: members.x.into(),
                    y: members.y.into(),
                    n: members.n.into(),
                    e: members.e.into(),
                    kid: members.kid.into(),
                    alg: members.alg.into(),
                    r#use: members.key_use.into(),
                }
            })
            .collect();
        Ok(Response::new(GetJwksResponse { keys }))
    }
}
