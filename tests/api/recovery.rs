//! Password reset by email, end to end: the link arrives over SMTP, sets a new password and
//! ends every session; a request for an unknown email gets the same answer after the same work
//! (one recorded request, answered later by the mail worker); a recorded request survives a
//! restart, and two replicas answer each once; a token works once, until it expires or a newer
//! one replaces it; the hourly allowance holds; the worker makes a token only for a message.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use identity::{
    domain::{OneTimeToken, UserEvent},
    proto::{GetCurrentUserRequest, RequestPasswordResetRequest, ResetPasswordRequest},
    store::{ResetAnswered, ResetLink, ResetRequested},
    supervisor::{Fault, TaskName},
};
use tonic::Code;

use crate::{
    helpers::{Backend, PASSWORD, TestApp, assert_code, bad_fields, bearer, eventually},
    mail::spawn_with_smtp,
    on_both_backends,
    smtp::SmtpServer,
};

on_both_backends!(
    a_reset_link_sets_a_new_password_and_ends_every_session,
    a_request_records_the_same_one_row_for_an_existing_and_an_unknown_email,
    with_mail_none_a_request_records_the_same_one_row_too,
    a_request_recorded_before_a_restart_is_answered_after_it,
    two_replicas_answer_each_request_once,
    a_used_expired_or_superseded_token_gets_one_clear_error,
    of_two_concurrent_resets_with_one_token_exactly_one_succeeds,
    requests_beyond_the_hourly_allowance_answer_ok_and_send_nothing,
    requests_beyond_the_pending_limit_are_refused_whatever_the_address,
    the_worker_makes_a_token_only_for_a_request_it_answers_with_a_message,
);

const WITHIN: Duration = Duration::from_secs(20);
const NEW_PASSWORD: &str = "quartz-lantern-meadow-77-harbor";
const RESET_URL: &str = "https://app.example.com/reset?token={token}";
pub const VERIFY_URL: &str = "https://app.example.com/verify?token={token}";

pub fn backend(app: &TestApp) -> Backend {
    if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite }
}

/// The subject of a reset message (signups also queue verification messages).
pub const RESET: &str = "Reset your password";

/// `app`'s backend again, now delivering to an SMTP server started for the test.
pub async fn with_smtp(app: TestApp, env: &[(&str, &str)]) -> (TestApp, SmtpServer) {
    let backend = backend(&app);
    drop(app);
    let smtp = SmtpServer::start().await;
    let mut all = vec![("IDENTITY_RESET_URL", RESET_URL), ("IDENTITY_VERIFY_URL", VERIFY_URL)];
    all.extend_from_slice(env);
    let app = spawn_with_smtp(backend, &smtp, &all).await.unwrap();
    (app, smtp)
}

async fn request_reset(app: &TestApp, email: &str) {
    app.auth()
        .request_password_reset(RequestPasswordResetRequest { email: email.into() })
        .await
        .expect("RequestPasswordReset answers OK");
}

async fn reset(app: &TestApp, token: &str, password: &str) -> Result<(), tonic::Status> {
    app.auth()
        .reset_password(ResetPasswordRequest { token: token.into(), new_password: password.into() })
        .await
        .map(drop)
}

async fn a_reset_link_sets_a_new_password_and_ends_every_session(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[]).await;
    let (user, login) = app.signed_in_user().await;
    let access = login.tokens.unwrap().access_token;
    request_reset(&app, &user.email.to_uppercase()).await;

    let received = smtp.wait_for_subject(RESET, 1, WITHIN).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.recipients, std::slice::from_ref(&user.email));
    assert!(message.data.contains("text/plain") && message.data.contains("text/html"));
    assert!(message.data.contains("Hello Test User,"));
    let link = message.link().unwrap();
    assert!(link.starts_with("https://app.example.com/reset?token="), "{link}");
    let token = message.token().unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");

    reset(&app, &token, NEW_PASSWORD).await.expect("the reset succeeds");
    assert!(!app.is_active(&access).await, "every session ended");
    assert_code(
        app.users().get_current_user(bearer(GetCurrentUserRequest {}, &access)).await,
        Code::Unauthenticated,
    );
    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    // Opening the link proved control of the inbox: the email is verified too.
    let after = app.login(&user.email, NEW_PASSWORD).await.unwrap().user.unwrap();
    assert!(after.email_verified && after.email_verified_at.is_some(), "{after:?}");
}

/// Waits until the mail worker has answered every recorded reset request (each answer is
/// committed with the removal of its request).
async fn answered(app: &TestApp) {
    let none_pending = || async { app.store.pending_reset_requests().await.unwrap() == 0 };
    assert!(eventually(WITHIN, none_pending).await.is_some(), "reset requests still pending");
}

/// The tables whose row counts differ between `before` and `after`, with the difference.
fn grown(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(table, rows)| (table.clone(), rows - before.get(table).copied().unwrap_or(0)))
        .filter(|(_, difference)| *difference != 0)
        .collect()
}

/// With the mail worker held down: a request for `known` (an account's email) and one for an
/// unknown email each add one row to `reset_requests` and change nothing else, and asking again
/// while they are pending adds nothing at all. Then lets the worker answer them.
async fn requests_record_the_same_one_row(app: &TestApp, known: &str) {
    app.faults().fail(TaskName::MailOutbox, Fault::Return).await;
    let one_request = BTreeMap::from([("reset_requests".to_owned(), 1)]);
    let start = app.store.row_counts().await.unwrap();
    request_reset(app, &known.to_uppercase()).await;
    let after_known = app.store.row_counts().await.unwrap();
    assert_eq!(grown(&start, &after_known), one_request, "the existing email's request");
    request_reset(app, "Nobody-Here@example.com").await;
    let after_unknown = app.store.row_counts().await.unwrap();
    assert_eq!(grown(&after_known, &after_unknown), one_request, "the unknown email's request");
    // The same row: the normalized address (the time aside).
    let mut rows = app.store.reset_request_rows().await.unwrap();
    rows.sort();
    assert_eq!(rows, ["nobody-here@example.com".to_owned(), known.to_lowercase()]);
    // Asked again while pending: nothing more, for either.
    request_reset(app, known).await;
    request_reset(app, "nobody-here@example.com").await;
    assert_eq!(app.store.row_counts().await.unwrap(), after_unknown);
    app.faults().restart(TaskName::MailOutbox).await;
    answered(app).await;
}

async fn a_request_records_the_same_one_row_for_an_existing_and_an_unknown_email(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[]).await;
    let (user, _) = app.signed_in_user().await;
    requests_record_the_same_one_row(&app, &user.email).await;
    // The worker answered both: only the account's message was queued, and it arrives.
    let received = smtp.wait_for_subject(RESET, 1, WITHIN).await;
    assert_eq!(received[0].recipients, std::slice::from_ref(&user.email));
    let rows: Vec<_> =
        app.store.mail_rows().await.unwrap().into_iter().filter(|row| row.kind == "password_reset").collect();
    assert_eq!(rows.len(), 1, "only the account's message is queued: {rows:?}");
    assert_eq!(rows[0].recipient, user.email);
    reset(&app, &received[0].token().unwrap(), NEW_PASSWORD).await.expect("its link works");
    // A malformed email is the caller's mistake, said as such.
    let status = assert_code(
        app.auth().request_password_reset(RequestPasswordResetRequest { email: "not an email".into() }).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&status), ["email"]);
}

/// With IDENTITY_MAIL=none the worker's answer for the account is a `message_requested` event
/// (and a record of the message for the allowance); the request itself is the same one row.
async fn with_mail_none_a_request_records_the_same_one_row_too(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_MAIL", "none"), ("IDENTITY_RESET_URL", RESET_URL)]).await;
    let (user, _) = app.signed_in_user().await;
    requests_record_the_same_one_row(&app, &user.email).await;
    let rows: Vec<_> =
        app.store.mail_rows().await.unwrap().into_iter().filter(|row| row.kind == "password_reset").collect();
    assert_eq!(rows.len(), 1, "only the account's message is recorded: {rows:?}");
    assert_eq!(rows[0].recipient, user.email);
    let events = app.store.events_after(0, 1000).await.unwrap();
    let requested: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.event, UserEvent::MessageRequested { .. }))
        .map(|e| e.user_id.to_string())
        .collect();
    // Signup's verification message, then the reset: both the account's.
    assert_eq!(requested, [user.id.clone(), user.id.clone()], "{events:?}");
}

async fn a_request_recorded_before_a_restart_is_answered_after_it(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[]).await;
    let (user, _) = app.signed_in_user().await;
    app.faults().fail(TaskName::MailOutbox, Fault::Return).await;
    request_reset(&app, &user.email).await;
    assert_eq!(app.store.pending_reset_requests().await.unwrap(), 1, "recorded before answering OK");
    let app = app.restart().await;
    let received = smtp.wait_for_subject(RESET, 1, WITHIN).await;
    assert_eq!(received.len(), 1, "the request made before the restart is answered after it");
    assert_eq!(received[0].recipients, std::slice::from_ref(&user.email));
    reset(&app, &received[0].token().unwrap(), NEW_PASSWORD).await.expect("its link works");
}

async fn two_replicas_answer_each_request_once(app: TestApp) {
    let (first, smtp) = with_smtp(app, &[]).await;
    let second = first.spawn_peer().await;
    const ACCOUNTS: usize = 12;
    let mut emails = Vec::new();
    for n in 0..ACCOUNTS {
        let email = format!("replica-reset-{n}@example.com");
        first.signup(&email, PASSWORD, "Replica User").await.unwrap();
        emails.push(email);
    }
    // Every request at once, spread over both replicas, unknown emails among them.
    let requests = emails.iter().cloned().chain((0..ACCOUNTS).map(|n| format!("nobody-{n}@example.com")));
    let mut calls = tokio::task::JoinSet::new();
    for (n, email) in requests.enumerate() {
        let mut client = if n % 2 == 0 { first.auth() } else { second.auth() };
        calls
            .spawn(async move { client.request_password_reset(RequestPasswordResetRequest { email }).await });
    }
    while let Some(answer) = calls.join_next().await {
        answer.unwrap().expect("RequestPasswordReset answers OK");
    }
    smtp.wait_for_subject(RESET, ACCOUNTS, WITHIN).await;
    answered(&first).await;
    let delivered = || async {
        let rows = first.store.mail_rows().await.unwrap();
        rows.iter().filter(|row| row.kind == "password_reset").all(|row| row.status == "sent")
    };
    assert!(eventually(WITHIN, delivered).await.is_some());
    let mut recipients: Vec<_> = smtp
        .received()
        .into_iter()
        .filter(|m| m.header("Subject") == Some(RESET))
        .flat_map(|m| m.recipients)
        .collect();
    recipients.sort();
    emails.sort();
    assert_eq!(recipients, emails, "each account's request answered once");
}

async fn a_used_expired_or_superseded_token_gets_one_clear_error(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[]).await;
    let (user, _) = app.signed_in_user().await;
    let unusable = |result: Result<(), tonic::Status>| {
        let status = assert_code(result, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["token"]);
        assert!(status.message().contains("invalid, expired or already used"), "{}", status.message());
    };

    // Superseded: the first link stops working once a second is asked for.
    request_reset(&app, &user.email).await;
    let first = smtp.wait_for_subject(RESET, 1, WITHIN).await[0].token().unwrap();
    request_reset(&app, &user.email).await;
    let second = smtp.wait_for_subject(RESET, 2, WITHIN).await[1].token().unwrap();
    unusable(reset(&app, &first, NEW_PASSWORD).await);

    // A weak password is refused by the policy, naming the field, and leaves the token usable.
    let status = assert_code(reset(&app, &second, "short").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["new_password"]);

    // Used: works once.
    reset(&app, &second, NEW_PASSWORD).await.unwrap();
    unusable(reset(&app, &second, "another-fine-passphrase-2026").await);

    // Expired: past IDENTITY_RESET_TOKEN_TTL.
    request_reset(&app, &user.email).await;
    let third = smtp.wait_for_subject(RESET, 3, WITHIN).await[2].token().unwrap();
    app.clock.advance(Duration::from_secs(31 * 60));
    unusable(reset(&app, &third, "another-fine-passphrase-2026").await);

    // Not ours at all.
    unusable(reset(&app, "made-up", "another-fine-passphrase-2026").await);
    assert!(app.login(&user.email, NEW_PASSWORD).await.is_ok());
}

async fn of_two_concurrent_resets_with_one_token_exactly_one_succeeds(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[]).await;
    let (user, _) = app.signed_in_user().await;
    request_reset(&app, &user.email).await;
    let token = smtp.wait_for_subject(RESET, 1, WITHIN).await[0].token().unwrap();
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            reset(&app, &token, NEW_PASSWORD),
            reset(&app, &token, "another-fine-passphrase-2026")
        );
        let succeeded = [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count();
        // The first round has one winner; later rounds find the token used.
        assert!(succeeded <= 1, "{a:?} {b:?}");
    }
    let logins = [
        app.login(&user.email, NEW_PASSWORD).await.is_ok(),
        app.login(&user.email, "another-fine-passphrase-2026").await.is_ok(),
    ];
    assert_eq!(logins.iter().filter(|ok| **ok).count(), 1, "exactly one reset took effect");
}

async fn requests_beyond_the_hourly_allowance_answer_ok_and_send_nothing(app: TestApp) {
    let (app, smtp) = with_smtp(app, &[("IDENTITY_MAIL_MAX_PER_HOUR", "3")]).await;
    let (user, _) = app.signed_in_user().await;
    // Each request answered before the next (one pending for the address would absorb it).
    for _ in 0..5 {
        request_reset(&app, &user.email).await;
        answered(&app).await;
    }
    let received = smtp.wait_for_subject(RESET, 3, WITHIN).await;
    assert_eq!(received.len(), 3);
    let resets = app.store.mail_rows().await.unwrap().into_iter().filter(|row| row.kind == "password_reset");
    assert_eq!(resets.count(), 3, "nothing queued beyond the allowance");
    // The newest link sent still works (a throttled request supersedes nothing); messages of
    // one batch go out concurrently, so it may have arrived in any place.
    let mut worked = 0;
    for message in &received {
        worked += usize::from(reset(&app, &message.token().unwrap(), NEW_PASSWORD).await.is_ok());
    }
    assert_eq!(worked, 1);
    // An hour later the allowance is back.
    app.clock.advance(Duration::from_secs(3601));
    request_reset(&app, &user.email).await;
    assert_eq!(smtp.wait_for_subject(RESET, 4, WITHIN).await.len(), 4);
}

/// Anonymous callers cannot grow the requests table without bound: with
/// IDENTITY_RESET_REQUESTS_MAX_PENDING waiting, a request for a new address is RESOURCE_EXHAUSTED,
/// the same for an address with an account and one without; a request for an address already
/// waiting is still OK, and once the worker has answered, requests are taken again.
async fn requests_beyond_the_pending_limit_are_refused_whatever_the_address(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_RESET_REQUESTS_MAX_PENDING", "2")]).await;
    let (first, _) = app.signed_in_user().await;
    let (second, _) = app.signed_in_user().await;
    app.faults().fail(TaskName::MailOutbox, Fault::Return).await;
    request_reset(&app, &first.email).await;
    request_reset(&app, "first-stranger@example.com").await;
    // Full, but this address is waiting already: its request stands for this one.
    request_reset(&app, &first.email).await;
    for email in ["second-stranger@example.com", second.email.as_str()] {
        let request = RequestPasswordResetRequest { email: email.into() };
        let status = assert_code(app.auth().request_password_reset(request).await, Code::ResourceExhausted);
        assert_eq!(status.message(), "the server is busy, retry later", "{email}");
    }
    assert_eq!(app.store.pending_reset_requests().await.unwrap(), 2);

    app.faults().restart(TaskName::MailOutbox).await;
    answered(&app).await;
    request_reset(&app, "second-stranger@example.com").await;
    request_reset(&app, &second.email).await;
}

/// The worker makes a reset token only for a request it answers with a message: not for a poll
/// that finds nothing waiting, an unknown address or an account whose allowance is used up.
async fn the_worker_makes_a_token_only_for_a_request_it_answers_with_a_message(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    // The worker held down: this test answers the requests, as the worker would.
    app.faults().fail(TaskName::MailOutbox, Fault::Return).await;
    let tokens_made = AtomicUsize::new(0);
    let answer = |max_per_hour| {
        let (now, tokens_made) = (app.clock.now(), &tokens_made);
        app.store.answer_reset_request(now, max_per_hour, move || {
            tokens_made.fetch_add(1, Ordering::Relaxed);
            let token = OneTimeToken::generate();
            let expires_at = now + chrono::TimeDelta::hours(1);
            ResetLink { digest: token.digest(), content: token.content(RESET_URL, expires_at), expires_at }
        })
    };
    let outcome = |answered: Option<ResetAnswered>| answered.expect("a request was waiting").outcome;

    assert!(answer(5).await.unwrap().is_none(), "nothing was waiting");
    request_reset(&app, "nobody-here@example.com").await;
    assert_eq!(outcome(answer(5).await.unwrap()), ResetRequested::NoAccount);
    request_reset(&app, &user.email).await;
    assert!(matches!(outcome(answer(0).await.unwrap()), ResetRequested::Throttled { .. }));
    assert_eq!(tokens_made.load(Ordering::Relaxed), 0, "no message, no token");

    request_reset(&app, &user.email).await;
    assert!(matches!(outcome(answer(5).await.unwrap()), ResetRequested::Queued { .. }));
    assert_eq!(tokens_made.load(Ordering::Relaxed), 1, "one token, for the message");
}
