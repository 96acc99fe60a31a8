//! WatchUserEvents: each change's event written with it (and never without it), catch-up then
//! live, resuming, retention (OUT_OF_RANGE), who may subscribe, IDENTITY_MAIL=none delivering
//! through the stream, and two replicas writing while a subscriber comes and goes.

use std::{collections::HashSet, time::Duration};

use identity::{
    domain::{Permission, UserEvent, UserId},
    proto::{
        ChangePasswordRequest, LogoutRequest, RequestPasswordResetRequest, ResetPasswordRequest,
        WatchUserEventsRequest, WatchUserEventsResponse, user_event::Kind,
    },
};
use tonic::{Code, Streaming};

use crate::{
    helpers::{Backend, PASSWORD, TestApp, assert_code, bearer},
    on_both_backends,
};

on_both_backends!(
    a_subscriber_catches_up_then_hears_each_change_live,
    an_event_exists_only_with_its_change,
    a_cursor_past_the_retention_is_out_of_range_with_a_way_forward,
    only_callers_with_watch_events_may_subscribe,
    with_mail_none_a_reset_message_is_an_event_for_authorised_subscribers,
);

const WITHIN: Duration = Duration::from_secs(15);

/// The events of the catch-up, and the cursor it ended at.
pub async fn catch_up(
    stream: &mut Streaming<WatchUserEventsResponse>,
) -> (Vec<identity::proto::UserEvent>, u64) {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(WITHIN, stream.message())
            .await
            .expect("a catch-up message")
            .unwrap()
            .expect("the stream stays open");
        events.extend(message.events);
        if message.caught_up {
            return (events, message.cursor);
        }
    }
}

/// The next `n` live events (heartbeats skipped).
pub(crate) async fn next_events(
    stream: &mut Streaming<WatchUserEventsResponse>,
    n: usize,
) -> Vec<identity::proto::UserEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let message = tokio::time::timeout(WITHIN, stream.message())
            .await
            .expect("an event within 15 s")
            .unwrap()
            .expect("the stream stays open");
        events.extend(message.events);
    }
    events
}

pub fn kind_name(event: &identity::proto::UserEvent) -> &'static str {
    match event.kind.as_ref().expect("every event has a kind") {
        Kind::UserCreated(_) => "user_created",
        Kind::UserUpdated(_) => "user_updated",
        Kind::EmailVerified(_) => "email_verified",
        Kind::UserDeactivated(_) => "user_deactivated",
        Kind::UserActivated(_) => "user_activated",
        Kind::UserDeleted(_) => "user_deleted",
        Kind::RolesChanged(_) => "roles_changed",
        Kind::PasswordChanged(_) => "password_changed",
        Kind::SessionRevoked(_) => "session_revoked",
        Kind::MfaEnabled(_) => "mfa_enabled",
        Kind::MfaDisabled(_) => "mfa_disabled",
        Kind::MessageRequested(_) => "message_requested",
    }
}

fn kinds_of<'a>(events: &'a [identity::proto::UserEvent], user_id: &str) -> Vec<&'a str> {
    events.iter().filter(|e| e.user_id == user_id).map(kind_name).collect()
}

async fn a_subscriber_catches_up_then_hears_each_change_live(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let mut stream = app.watch_user_events(0).await;
    let (backlog, cursor) = catch_up(&mut stream).await;
    assert_eq!(kinds_of(&backlog, &user.id), ["user_created"]);
    let Some(Kind::UserCreated(created)) = &backlog[0].kind else { panic!("{backlog:?}") };
    assert_eq!(created.email, user.email);
    assert_eq!(cursor, backlog.last().unwrap().cursor);

    // A password change on a second session: the change, then the first session's end.
    let second = app.login(&user.email, PASSWORD).await.unwrap().tokens.unwrap();
    let change = ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: "quartz-lantern-meadow-77-harbor".into(),
    };
    app.users().change_password(bearer(change, &second.access_token)).await.unwrap();
    let live = next_events(&mut stream, 2).await;
    assert_eq!(kinds_of(&live, &user.id), ["password_changed", "session_revoked"]);
    let Some(Kind::SessionRevoked(revoked)) = &live[1].kind else { panic!("{live:?}") };
    let first_sid = session_of(&login.tokens.unwrap().access_token);
    assert_eq!(revoked.session_id, first_sid);
    assert_eq!(revoked.reason(), identity::proto::SessionRevokedReason::PasswordChanged);
    assert!(live[0].cursor > cursor && live[1].cursor > live[0].cursor, "cursors increase in commit order");

    // Logout, and resuming after the last cursor seen hears exactly what followed.
    let resume_from = live[1].cursor;
    drop(stream);
    app.auth().logout(LogoutRequest { refresh_token: second.refresh_token }).await.unwrap();
    let mut resumed = app.watch_user_events(resume_from).await;
    let (missed, _) = catch_up(&mut resumed).await;
    assert_eq!(kinds_of(&missed, &user.id), ["session_revoked"]);
    let Some(Kind::SessionRevoked(revoked)) = &missed[0].kind else { panic!("{missed:?}") };
    assert_eq!(revoked.reason(), identity::proto::SessionRevokedReason::Logout);

    // An operator deactivation (the CLI's path): the change and the end of the session left.
    let third = app.login(&user.email, "quartz-lantern-meadow-77-harbor").await.unwrap().tokens.unwrap();
    let email = identity::domain::Email::parse("email", &user.email).unwrap();
    let admin = app.identity().admin();
    admin.apply(identity::service::AccountAction::Deactivate, &email).await.unwrap().unwrap();
    let live = next_events(&mut resumed, 2).await;
    assert_eq!(kinds_of(&live, &user.id), ["session_revoked", "user_deactivated"]);
    assert!(live.iter().all(|event| event.actor == "cli"), "{live:?}");
    let Some(Kind::SessionRevoked(revoked)) = &live[0].kind else { panic!("{live:?}") };
    assert_eq!(revoked.session_id, session_of(&third.access_token));
    assert_eq!(revoked.reason(), identity::proto::SessionRevokedReason::AccountDeactivated);
    admin.apply(identity::service::AccountAction::Activate, &email).await.unwrap().unwrap();
    assert_eq!(kinds_of(&next_events(&mut resumed, 1).await, &user.id), ["user_activated"]);
}

pub(crate) fn session_of(access_token: &str) -> String {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(access_token).unwrap().claims["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn an_event_exists_only_with_its_change(app: TestApp) {
    let user = app.signup("only-with@example.com", PASSWORD, "Ada").await.unwrap();
    let id: UserId = user.id.parse().unwrap();
    // A signup that fails (the email is taken) writes neither an account nor an event.
    assert_code(app.signup("only-with@example.com", PASSWORD, "Eve").await, Code::AlreadyExists);
    // A write that fails after appending its event takes the event (and its position) with it.
    app.store.append_event_and_roll_back(id, UserEvent::UserDeleted, app.clock.now()).await.unwrap();
    assert_eq!(app.store.event_kinds_of(id).await.unwrap(), ["user_created"]);

    let mut stream = app.watch_user_events(0).await;
    let (events, _) = catch_up(&mut stream).await;
    assert_eq!(events.len(), 1, "one change, one event: {events:?}");
    // A request that changes nothing (no such account) writes no event either.
    app.auth()
        .request_password_reset(RequestPasswordResetRequest { email: "nobody@example.com".into() })
        .await
        .unwrap();
    let (_, login) = app.signed_in_user().await;
    app.auth().logout(LogoutRequest { refresh_token: login.tokens.unwrap().refresh_token }).await.unwrap();
    let live = next_events(&mut stream, 2).await;
    assert_eq!(live.iter().map(kind_name).collect::<Vec<_>>(), ["user_created", "session_revoked"]);
}

async fn a_cursor_past_the_retention_is_out_of_range_with_a_way_forward(app: TestApp) {
    app.signed_in_user().await;
    app.signed_in_user().await;
    let mut stream = app.watch_user_events(0).await;
    let (old, old_cursor) = catch_up(&mut stream).await;
    drop(stream);
    let key = app.events_key().await;
    let ahead = app.watch_user_events_with(&key, old_cursor + 1_000_000).await;
    let status = assert_code(ahead, Code::OutOfRange);
    assert!(status.message().contains("resynchronise"), "{}", status.message());

    // Eight days on, the supervised purge's pass deletes what the retention no longer covers.
    app.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let (newer, _) = app.signed_in_user().await;
    app.identity().purge().await;
    let status = assert_code(app.watch_user_events_with(&key, old[0].cursor).await, Code::OutOfRange);
    assert!(status.message().contains("retention"), "{}", status.message());
    assert!(status.message().contains("resynchronise"), "{}", status.message());

    // From 0, a consumer gets everything still kept.
    let mut fresh = app.watch_user_events(0).await;
    let (kept, _) = catch_up(&mut fresh).await;
    assert!(kept.iter().all(|e| e.user_id == newer.id), "{kept:?}");
    assert_eq!(kinds_of(&kept, &newer.id), ["user_created"]);
}

async fn only_callers_with_watch_events_may_subscribe(app: TestApp) {
    let request = WatchUserEventsRequest { after_cursor: 0 };
    assert_code(app.events().watch_user_events(request).await, Code::Unauthenticated);
    let unknown = "idk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_code(app.events().watch_user_events(bearer(request, unknown)).await, Code::Unauthenticated);
    let revocations_only = app.service_key("revocations-only", &[Permission::WatchRevocations]).await;
    let denied = app.events().watch_user_events(bearer(request, &revocations_only)).await;
    assert_code(denied, Code::PermissionDenied);
    let (_, login) = app.signed_in_user().await;
    let person = app.events().watch_user_events(bearer(request, &login.tokens.unwrap().access_token)).await;
    assert_code(person, Code::PermissionDenied);
    let mut allowed = app.watch_user_events(0).await;
    catch_up(&mut allowed).await;
}

async fn with_mail_none_a_reset_message_is_an_event_for_authorised_subscribers(app: TestApp) {
    let app = app
        .restart_with(&[
            ("IDENTITY_MAIL", "none"),
            ("IDENTITY_RESET_URL", "https://app.example.com/reset?token={token}"),
        ])
        .await;
    let user = app.signup("mail-none@example.com", PASSWORD, "Grace Hopper").await.unwrap();
    let mut stream = app.watch_user_events(0).await;
    // Signup's verification message is one too: every kind of message goes this way.
    let (backlog, _) = catch_up(&mut stream).await;
    assert_eq!(kinds_of(&backlog, &user.id), ["user_created", "message_requested"]);
    let Some(Kind::MessageRequested(verify)) = &backlog[1].kind else { panic!("{backlog:?}") };
    assert_eq!(verify.message_kind, "verify_email");
    app.auth()
        .request_password_reset(RequestPasswordResetRequest { email: "mail-none@example.com".into() })
        .await
        .unwrap();
    let events = next_events(&mut stream, 1).await;
    assert_eq!(kinds_of(&events, &user.id), ["message_requested"]);
    let Some(Kind::MessageRequested(message)) = &events[0].kind else { panic!("{events:?}") };
    assert_eq!(message.message_kind, "password_reset");
    assert_eq!(message.recipient, "mail-none@example.com");
    assert_eq!(message.name, "Grace Hopper");
    assert!(message.link_expires_at.is_some());
    let token = message.link.strip_prefix("https://app.example.com/reset?token=").expect("the reset link");
    // The outbox keeps a record without the link (the hourly allowances count it), and queues
    // nothing for a deliverer.
    let rows = app.store.mail_rows().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|row| row.status == "sent" && row.payload == "{}"), "{rows:?}");

    // The link works, and the reset is on the stream too.
    let reset =
        ResetPasswordRequest { token: token.into(), new_password: "quartz-lantern-meadow-77-harbor".into() };
    app.auth().reset_password(reset).await.unwrap();
    // The reset link proved the inbox too: the address is verified by it.
    assert_eq!(
        kinds_of(&next_events(&mut stream, 2).await, &user.id),
        ["password_changed", "email_verified"]
    );
}

/// Two replicas on one Postgres make 1,000 changes of mixed kinds while a subscriber
/// disconnects and resumes three times (on either replica): it sees every event once, in
/// commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_while_a_subscriber_resumes_three_times_and_it_sees_each_event_once() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: Postgres test skipped");
        return;
    };
    let b = a.spawn_peer().await;
    let key = a.events_key().await;
    let start = a.store.event_bounds().await.unwrap().head;

    // Each round: a signup (user_created), a logout (session_revoked), and every other round a
    // password change (password_changed, session_revoked): 3 events on average, 334 rounds.
    const ROUNDS: usize = 334;
    let mut writers = tokio::task::JoinSet::new();
    for worker in 0..8usize {
        let replica = if worker % 2 == 0 { a.channel.clone() } else { b.channel.clone() };
        writers.spawn(async move {
            let auth = identity::proto::auth_service_client::AuthServiceClient::new(replica.clone());
            let users = identity::proto::user_service_client::UserServiceClient::new(replica);
            for round in (worker..ROUNDS).step_by(8) {
                let email = format!("replica-{round}@example.com");
                let signup = identity::proto::SignupRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    full_name: "Replica User".into(),
                };
                auth.clone().signup(signup).await.unwrap();
                let login = identity::proto::LoginRequest { email: email.clone(), password: PASSWORD.into() };
                let first = auth.clone().login(login.clone()).await.unwrap().into_inner().tokens.unwrap();
                if round % 2 == 0 {
                    let second = auth.clone().login(login).await.unwrap().into_inner().tokens.unwrap();
                    let change = ChangePasswordRequest {
                        current_password: PASSWORD.into(),
                        new_password: "quartz-lantern-meadow-77-harbor".into(),
                    };
                    users.clone().change_password(bearer(change, &second.access_token)).await.unwrap();
                    auth.clone().logout(LogoutRequest { refresh_token: second.refresh_token }).await.unwrap();
                } else {
                    auth.clone().logout(LogoutRequest { refresh_token: first.refresh_token }).await.unwrap();
                }
            }
        });
    }

    let mut seen: Vec<u64> = Vec::new();
    let mut cursor = start;
    let replicas = [&a, &b, &a, &b];
    for (leg, replica) in replicas.iter().enumerate() {
        let mut stream = replica.watch_user_events_with(&key, cursor).await.unwrap();
        // Leave after a few hundred events, three times; the last leg reads to the end.
        let leave_after = if leg < 3 { 150 } else { usize::MAX };
        let mut read = 0;
        loop {
            if leg == 3 && writers.is_empty() {
                let last = a.store.latest_event_cursor().await.unwrap();
                if cursor >= last {
                    break;
                }
            }
            let message = tokio::select! {
                message = tokio::time::timeout(WITHIN, stream.message()) => {
                    message.expect("a message within 15 s").unwrap().expect("the stream stays open")
                }
                Some(done) = writers.join_next(), if !writers.is_empty() => {
                    done.expect("a writer finished");
                    continue;
                }
            };
            for event in &message.events {
                seen.push(event.cursor);
            }
            read += message.events.len();
            cursor = message.cursor;
            if read >= leave_after {
                break;
            }
        }
    }

    let expected = a.store.events_after(start, 100_000).await.unwrap();
    assert!(expected.len() >= 1000, "{} events written", expected.len());
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    assert_eq!(seen, expected.iter().map(|e| e.cursor).collect::<Vec<_>>(), "every event, in commit order");
}
