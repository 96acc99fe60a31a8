//! The loop behind both service-facing streams (WatchRevocations, WatchUserEvents), written
//! once: the catch-up, then live batches from the replica's feed, a heartbeat when idle, a
//! periodic re-check that the caller still holds its permission, and the end when the client
//! leaves, the feed closes or the server stops. What each stream sends is its [`Feed`]'s.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use crate::{
    domain::{Caller, Permission},
    service::{Identity, StreamPermit},
};

pub(super) type Sender<M> = mpsc::Sender<Result<M, Status>>;

/// What one stream sends: its catch-up, its messages for a live batch, its heartbeat.
pub(super) trait Feed: Send + 'static {
    type Batch: Clone + Send + 'static;
    type Message: Send + 'static;

    /// Sends the backlog; the first catch-up (`first`) ends with a `caught_up` message. `false`
    /// when the stream is over (the client left, or an error was sent).
    fn catch_up(&mut self, sender: &Sender<Self::Message>, first: bool) -> impl Future<Output = bool> + Send;

    /// The messages for a live batch, advancing the cursor; none when it holds nothing new.
    fn live(&mut self, batch: &Self::Batch) -> Vec<Self::Message>;

    /// The stream fell behind the replica's feed and missed batches: catch up again, or end it.
    fn lagged(&mut self, sender: &Sender<Self::Message>) -> impl Future<Output = bool> + Send;

    /// An empty message at the current cursor.
    fn heartbeat(&self) -> Self::Message;
}

/// Who the stream is for, and how it is paced and ended.
pub(super) struct Watch {
    pub identity: Arc<Identity>,
    pub caller: Caller,
    pub permission: Permission,
    /// Held for as long as the stream is open.
    pub permit: StreamPermit,
    /// Becomes true when the server is stopping: the stream ends so that the drain can finish
    /// (its client resumes on another replica).
    pub stopping: watch::Receiver<bool>,
    /// How often an idle stream gets a heartbeat, and any stream a re-check of its caller.
    pub every: Duration,
}

/// Runs `feed` for `watch` until the stream ends. Subscribe to `news` before taking any snapshot
/// the catch-up reads, so that nothing falls between the two.
pub(super) async fn run<F: Feed>(
    watch: Watch,
    mut feed: F,
    mut news: broadcast::Receiver<F::Batch>,
    sender: Sender<F::Message>,
) {
    let Watch { identity, caller, permission, permit, mut stopping, every } = watch;
    let _permit = permit;
    if !feed.catch_up(&sender, true).await {
        return;
    }
    let start = tokio::time::Instant::now() + every;
    let mut heartbeat = tokio::time::interval_at(start, every);
    // Not reset by traffic, unlike the heartbeat: a busy stream is re-checked as often as an
    // idle one, so a revoked key's stream ends within one interval either way.
    let mut recheck = tokio::time::interval_at(start, every);
    loop {
        enum Next<B> {
            Live(B),
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
        let going_on = match next {
            Next::Live(batch) => {
                let messages = feed.live(&batch);
                if !messages.is_empty() {
                    heartbeat.reset();
                }
                send_all(&sender, messages).await
            }
            Next::Lagged => {
                news = news.resubscribe();
                feed.lagged(&sender).await
            }
            Next::Heartbeat => send_all(&sender, vec![feed.heartbeat()]).await,
            Next::Recheck => match identity.still_authorized(&caller, permission).await {
                Ok(()) => true,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(error))).await;
                    false
                }
            },
            Next::End => false,
        };
        if !going_on {
            return;
        }
    }
}

/// Sends `messages` in order; `false` when the client left.
pub(super) async fn send_all<M>(sender: &Sender<M>, messages: Vec<M>) -> bool {
    for message in messages {
        if sender.send(Ok(message)).await.is_err() {
            return false;
        }
    }
    true
}
