//! Audit events: what they carry, and what they must never carry.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use identity::proto::{
    ChangeEmailRequest, ChangePasswordRequest, LoginRequest, LogoutRequest, RefreshTokenRequest,
    SignupRequest, VerifyEmailRequest,
};

use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bearer},
    on_both_backends,
};

on_both_backends!(
    audit_events_carry_ids_and_never_secrets,
    a_signup_that_hides_a_taken_email_answers_like_a_new_account_and_is_audited,
    email_verification_and_change_are_audited_and_their_links_never_logged,
);

/// Every log line the test process writes, as JSON, for tests to search.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .json()
            .with_span_list(true)
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the first subscriber of this test process");
        logs
    })
}

fn lines_with(needle: &str) -> Vec<String> {
    let logs = captured_logs().0.lock().unwrap();
    String::from_utf8_lossy(&logs).lines().filter(|line| line.contains(needle)).map(str::to_owned).collect()
}

fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", id.parse().unwrap());
    request
}

async fn audit_events_carry_ids_and_never_secrets(app: TestApp) {
    captured_logs();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("audit-{run}@example.com");
    let id = |step: &str| format!("{run}-{step}");
    let mut auth = app.auth();
    auth.signup(with_request_id(
        SignupRequest { email: email.clone(), password: PASSWORD.into(), full_name: "Audit".into() },
        &id("signup"),
    ))
    .await
    .unwrap();
    let wrong = "not-my-password-at-all";
    auth.login(with_request_id(LoginRequest { email: email.clone(), password: wrong.into() }, &id("fail")))
        .await
        .unwrap_err();
    let tokens = auth
        .login(with_request_id(
            LoginRequest { email: email.clone(), password: PASSWORD.into() },
            &id("login"),
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let rotated = auth
        .refresh_token(with_request_id(
            RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() },
            &id("refresh"),
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    auth.refresh_token(with_request_id(
        RefreshTokenRequest { refresh_token: tokens.refresh_token.clone() },
        &id("reuse"),
    ))
    .await
    .unwrap_err();
    let again = app.login(&email, PASSWORD).await.unwrap().tokens.unwrap();
    let new_password = "quartz-lantern-meadow-77";
    let mut change = bearer(
        ChangePasswordRequest { current_password: PASSWORD.into(), new_password: new_password.into() },
        &again.access_token,
    );
    change.metadata_mut().insert("x-request-id", id("change").parse().unwrap());
    app.users().change_password(change).await.unwrap();
    auth.logout(with_request_id(LogoutRequest { refresh_token: again.refresh_token.clone() }, &id("logout")))
        .await
        .unwrap();

    let watcher = format!("watcher-{run}");
    let key = app.service_key(&watcher, &[identity::domain::Permission::WatchRevocations]).await;
    let mut watch = bearer(identity::proto::WatchRevocationsRequest { since: 0 }, &key);
    watch.metadata_mut().insert("x-request-id", id("watch").parse().unwrap());
    let stream = app.tokens().watch_revocations(watch).await.unwrap();

    for (step, event) in [
        ("watch", "service_call"),
        ("signup", "signup"),
        ("fail", "login_failed"),
        ("login", "login"),
        ("refresh", "refresh"),
        ("reuse", "refresh_token_reuse"),
        ("change", "password_changed"),
        ("logout", "logout"),
    ] {
        let lines = lines_with(&id(step));
        let audit: Vec<_> = lines.iter().filter(|l| l.contains(r#""target":"audit""#)).collect();
        assert!(
            audit.iter().any(|l| l.contains(&format!(r#""event":"{event}""#))),
            "no {event} audit event for request {}: {lines:#?}",
            id(step)
        );
        for line in &audit {
            assert!(line.contains(r#""peer":"127.0.0.1:"#), "no peer address: {line}");
        }
    }
    let login_line = lines_with(&id("login")).into_iter().find(|l| l.contains(r#""event":"login""#)).unwrap();
    assert!(login_line.contains("user_id") && login_line.contains("session_id"), "{login_line}");
    assert!(
        lines_with(&id("fail")).iter().any(|l| l.contains("wrong password")),
        "the reason is kept server-side"
    );

    let watch_line =
        lines_with(&id("watch")).into_iter().find(|l| l.contains(r#""event":"service_call""#)).unwrap();
    assert!(watch_line.contains(&format!(r#""caller":"{watcher}""#)), "{watch_line}");
    assert!(watch_line.contains(r#""action":"watch_revocations""#), "{watch_line}");
    drop(stream);

    let everything = lines_with(&run).join("\n");
    for secret in [
        PASSWORD,
        wrong,
        new_password,
        &tokens.access_token,
        &tokens.refresh_token,
        &rotated.refresh_token,
        &again.refresh_token,
        &key,
    ] {
        assert!(!everything.contains(secret), "a secret reached the logs");
    }
}

async fn a_signup_that_hides_a_taken_email_answers_like_a_new_account_and_is_audited(app: TestApp) {
    captured_logs();
    let app = app.restart_with(&[("IDENTITY_SIGNUP_REVEALS_ACCOUNTS", "false")]).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("hidden-{run}@example.com");
    let first = app.signup(&email, PASSWORD, "First Owner").await.unwrap();
    let other_password = "saffron-glacier-77-lantern";
    let again = app
        .auth()
        .signup(with_request_id(
            SignupRequest {
                email: email.to_uppercase(),
                password: other_password.into(),
                full_name: "Someone".into(),
            },
            &format!("{run}-again"),
        ))
        .await
        .expect("a taken email answers like a new account")
        .into_inner()
        .user
        .unwrap();
    // The same shape as a new account: its own fresh id, the email and name as sent, active.
    assert_ne!(again.id, first.id);
    assert!(again.id.parse::<uuid::Uuid>().is_ok());
    assert_eq!(
        (again.email.as_str(), again.full_name.as_str(), again.is_active),
        (email.to_uppercase().as_str(), "Someone", true)
    );
    assert!(again.created_at.is_some());
    // Nothing was stored: the owner's password still works, the second one does not.
    assert_eq!(app.login(&email, PASSWORD).await.unwrap().user.unwrap().id, first.id);
    assert_code(app.login(&email, other_password).await, Code::Unauthenticated);
    let audit = lines_with(&format!("{run}-again"));
    assert!(
        audit.iter().any(|l| l.contains(r#""event":"signup_for_existing_account""#)),
        "no audit event: {audit:#?}"
    );
    assert!(!audit.join("\n").contains(other_password));
}

async fn email_verification_and_change_are_audited_and_their_links_never_logged(app: TestApp) {
    captured_logs();
    let (app, smtp) = crate::recovery::with_smtp(app, &[]).await;
    let (user, login) = app.signed_in_user().await;
    let within = std::time::Duration::from_secs(20);
    let to = |email: &str| {
        let email = email.to_owned();
        move |m: &crate::smtp::Received| m.recipients == [email.clone()]
    };
    let first = smtp.wait_for_matching(1, within, to(&user.email)).await[0].token().unwrap();
    app.auth().verify_email(VerifyEmailRequest { token: first.clone() }).await.unwrap();
    let new_email = format!("moved-{}@example.com", uuid::Uuid::new_v4().simple());
    let request = ChangeEmailRequest { current_password: PASSWORD.into(), new_email: new_email.clone() };
    let access = login.tokens.unwrap().access_token;
    app.users().change_email(bearer(request, &access)).await.unwrap();
    let second = smtp.wait_for_matching(1, within, to(&new_email)).await[0].token().unwrap();
    app.auth().verify_email(VerifyEmailRequest { token: second.clone() }).await.unwrap();

    let audit = lines_with(&user.id);
    for event in ["email_verified", "email_change_requested", "email_changed"] {
        let needle = format!(r#""event":"{event}""#);
        assert!(audit.iter().any(|l| l.contains(&needle)), "no {event}: {audit:#?}");
    }
    let everything = captured_logs().0.lock().unwrap().clone();
    let everything = String::from_utf8_lossy(&everything);
    for secret in [first.as_str(), second.as_str(), PASSWORD] {
        assert!(!everything.contains(secret), "a secret reached the logs");
    }
}
