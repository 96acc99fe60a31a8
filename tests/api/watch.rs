//! WatchRevocations: catch-up, live revocations, resuming from a cursor, and shutdown.

use std::time::Duration;

use identity::proto::{LogoutRequest, WatchRevocationsResponse};
use tonic::Streaming;

use crate::{helpers::TestApp, on_both_backends};

on_both_backends!(
    a_watcher_catches_up_then_hears_each_revocation_live,
    a_watcher_resuming_from_its_cursor_misses_nothing,
    stopping_the_server_ends_the_streams,
    an_idle_stream_gets_heartbeats_carrying_the_cursor,
);

async fn an_idle_stream_gets_heartbeats_carrying_the_cursor(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_REVOCATION_HEARTBEAT", "200ms")]).await;
    ended_session(&app).await;
    let mut stream = watch(&app, 0).await;
    let (_, cursor) = catch_up(&mut stream).await;
    for _ in 0..2 {
        let heartbeat = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap()
            .expect("the stream stays open");
        assert!(heartbeat.revoked.is_empty() && !heartbeat.caught_up);
        assert_eq!(heartbeat.cursor, cursor);
    }
}

async fn watch(app: &TestApp, since: u64) -> Streaming<WatchRevocationsResponse> {
    app.watch_revocations(since).await
}

/// Reads messages until the catch-up is over; returns the session ids seen and the cursor.
async fn catch_up(stream: &mut Streaming<WatchRevocationsResponse>) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    loop {
        let message = stream.message().await.unwrap().expect("a catch-up message");
        ids.extend(message.revoked.iter().map(|r| r.session_id.clone()));
        if message.caught_up {
            return (ids, message.cursor);
        }
    }
}

/// Logs a new session out and returns its id.
async fn ended_session(app: &TestApp) -> String {
    let (_, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    let request = identity::proto::ValidateTokenRequest { access_token: tokens.access_token };
    let session_id =
        app.tokens().validate_token(request).await.unwrap().into_inner().claims.unwrap().session_id;
    app.auth().logout(LogoutRequest { refresh_token: tokens.refresh_token }).await.unwrap();
    session_id
}

async fn next_revocation(stream: &mut Streaming<WatchRevocationsResponse>) -> WatchRevocationsResponse {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("a message within 15 s")
            .unwrap()
            .expect("the stream stays open");
        if !message.revoked.is_empty() {
            return message;
        }
    }
}

async fn a_watcher_catches_up_then_hears_each_revocation_live(app: TestApp) {
    let earlier = ended_session(&app).await;
    let mut stream = watch(&app, 0).await;
    let (backlog, cursor) = catch_up(&mut stream).await;
    assert!(backlog.contains(&earlier), "{backlog:?} lacks {earlier}");
    assert!(cursor >= 1);

    let later = ended_session(&app).await;
    let message = next_revocation(&mut stream).await;
    assert_eq!(message.revoked.len(), 1);
    assert_eq!(message.revoked[0].session_id, later);
    assert!(message.cursor > cursor, "cursors increase: {} then {}", cursor, message.cursor);
    let until = message.revoked[0].relevant_until.unwrap().seconds;
    let expected = chrono::Utc::now().timestamp() + 15 * 60;
    assert!((expected - 5..=expected + 1).contains(&until), "relevant until the tokens could expire");
}

async fn a_watcher_resuming_from_its_cursor_misses_nothing(app: TestApp) {
    let mut stream = watch(&app, 0).await;
    let (_, cursor) = catch_up(&mut stream).await;
    drop(stream);
    let missed = ended_session(&app).await;
    let mut resumed = watch(&app, cursor).await;
    let (backlog, new_cursor) = catch_up(&mut resumed).await;
    assert!(backlog.contains(&missed));
    assert!(new_cursor > cursor);
}

async fn stopping_the_server_ends_the_streams(mut app: TestApp) {
    let mut stream = watch(&app, 0).await;
    catch_up(&mut stream).await;
    app.stop().await;
    // The stop completed with the stream open, and the stream ends rather than hanging.
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(end.is_ok());
}
