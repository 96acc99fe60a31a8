//! The outbox and its deliverers, against a real SMTP server on a TCP port: what arrives, what
//! happens while the server is down, failed messages and the operator's retry, the file
//! deliverer, and two replicas sharing one queue.

use std::{collections::HashSet, process::Command, time::Duration};

use identity::domain::{MailContent, MailKind, NewMail};

use crate::{
    helpers::{Backend, TestApp, eventually},
    on_both_backends,
    smtp::SmtpServer,
};

on_both_backends!(
    a_queued_message_arrives_over_smtp_with_its_recipient_subject_link_and_both_parts,
    messages_queued_while_the_mail_server_is_down_arrive_once_when_it_returns,
    a_message_that_keeps_failing_is_kept_as_failed_until_the_operator_retries_it,
    without_smtp_each_message_is_an_eml_file_only_its_owner_can_read,
    two_replicas_deliver_each_message_once,
);

const WITHIN: Duration = Duration::from_secs(20);

pub async fn spawn_with_smtp(backend: Backend, smtp: &SmtpServer, env: &[(&str, &str)]) -> Option<TestApp> {
    let url = smtp.url();
    let mut all = vec![("IDENTITY_SMTP_URL", url.as_str()), ("IDENTITY_MAIL_POLL_INTERVAL", "50ms")];
    all.extend_from_slice(env);
    TestApp::spawn_with(backend, &all).await
}

async fn queue(app: &TestApp, recipient: &str) {
    let mail = NewMail {
        kind: MailKind::Test,
        recipient: recipient.into(),
        content: MailContent {
            name: "Ada Lovelace".into(),
            link: Some(format!("https://app.example.com/go?token=tok-{recipient}").into()),
            expires_at: Some(app.clock.now() + chrono::TimeDelta::minutes(30)),
        },
    };
    app.store.queue_mail(&mail, app.clock.now()).await.unwrap();
}

async fn all_have(app: &TestApp, count: usize, status: &str) -> bool {
    let rows = app.store.mail_rows().await.unwrap();
    rows.len() == count && rows.iter().all(|row| row.status == status)
}

async fn a_queued_message_arrives_over_smtp_with_its_recipient_subject_link_and_both_parts(app: TestApp) {
    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    drop(app);
    let smtp = SmtpServer::start().await;
    let app = spawn_with_smtp(backend, &smtp, &[("IDENTITY_MAIL_FROM", "Example <no-reply@example.com>")])
        .await
        .unwrap();
    queue(&app, "ada@example.com").await;
    let received = smtp.wait_for(1, WITHIN).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.recipients, ["ada@example.com"]);
    assert_eq!(message.header("To"), Some("ada@example.com"));
    assert_eq!(message.header("From"), Some("Example <no-reply@example.com>"));
    assert_eq!(message.header("Subject"), Some("Test message from identity"));
    assert!(message.data.contains("multipart/alternative"));
    assert!(message.data.contains("text/plain"));
    assert!(message.data.contains("text/html"));
    assert!(message.data.contains("Hello Ada Lovelace,"));
    assert_eq!(message.link().as_deref(), Some("https://app.example.com/go?token=tok-ada@example.com"));
    assert!(eventually(WITHIN, || all_have(&app, 1, "sent")).await.is_some());
    let rows = app.store.mail_rows().await.unwrap();
    assert!(!rows[0].payload.contains("tok-"), "the link is erased once sent: {}", rows[0].payload);
}

async fn messages_queued_while_the_mail_server_is_down_arrive_once_when_it_returns(app: TestApp) {
    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    drop(app);
    let mut smtp = SmtpServer::down().await;
    let app = spawn_with_smtp(backend, &smtp, &[]).await.unwrap();
    for n in 0..5 {
        queue(&app, &format!("user{n}@example.com")).await;
    }
    // Every message has been tried and is waiting for its next attempt.
    let tried = || async {
        let rows = app.store.mail_rows().await.unwrap();
        rows.len() == 5 && rows.iter().all(|row| row.attempts >= 1 && row.status == "pending")
    };
    assert!(eventually(WITHIN, tried).await.is_some(), "{:?}", app.store.mail_rows().await);

    smtp.resume().await;
    // Past any backoff: the next poll finds every message due.
    app.clock.advance(Duration::from_secs(3600));
    let received = smtp.wait_for(5, WITHIN).await;
    assert!(eventually(WITHIN, || all_have(&app, 5, "sent")).await.is_some());
    // Nothing is left to claim, so what arrived is final.
    let received_now = smtp.received();
    assert_eq!(received_now.len(), 5, "{received:?}");
    let recipients: HashSet<_> = received_now.iter().map(|m| m.recipients[0].clone()).collect();
    assert_eq!(recipients.len(), 5, "each message arrives once");
}

fn identity_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_identity"))
        .args(args)
        .env_clear()
        .env("IDENTITY_DATABASE_URL", &app.db.url)
        .env("IDENTITY_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the identity binary runs")
}

async fn a_message_that_keeps_failing_is_kept_as_failed_until_the_operator_retries_it(app: TestApp) {
    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    drop(app);
    let mut smtp = SmtpServer::down().await;
    let app = spawn_with_smtp(backend, &smtp, &[("IDENTITY_MAIL_MAX_ATTEMPTS", "2")]).await.unwrap();
    queue(&app, "grace@example.com").await;
    let tried_once = || async { app.store.mail_rows().await.unwrap().iter().any(|row| row.attempts == 1) };
    assert!(eventually(WITHIN, tried_once).await.is_some());
    app.clock.advance(Duration::from_secs(3600));
    assert!(eventually(WITHIN, || all_have(&app, 1, "failed")).await.is_some());

    let listed = identity_cli(&app, &["mail", "failed"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let line = listed.lines().next().expect("one failed message");
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(&fields[1..4], ["test", "grace@example.com", "2"], "{line}");
    assert!(!line.contains("tok-"), "the listing shows no link");

    let refused = identity_cli(&app, &["mail", "retry", "not-an-id"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not-an-id is not a message id"));

    smtp.resume().await;
    let retried = identity_cli(&app, &["mail", "retry", fields[0]]);
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    let received = smtp.wait_for(1, WITHIN).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].recipients, ["grace@example.com"]);
    assert!(eventually(WITHIN, || all_have(&app, 1, "sent")).await.is_some());
    let again = identity_cli(&app, &["mail", "retry-all"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "0 messages queued again");
}

async fn without_smtp_each_message_is_an_eml_file_only_its_owner_can_read(app: TestApp) {
    queue(&app, "linus@example.com").await;
    let dir = app.data_dir().join("mail");
    let written = || async {
        std::fs::read_dir(&dir)
            .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "eml")))
            .unwrap_or(false)
    };
    assert!(eventually(WITHIN, written).await.is_some(), "no .eml file in {}", dir.display());
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .unwrap();
    let text = std::fs::read_to_string(file.path()).unwrap();
    assert!(text.contains("To: linus@example.com"));
    assert!(text.contains("https://app.example.com/go?token=tok-linus@example.com"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(eventually(WITHIN, || all_have(&app, 1, "sent")).await.is_some());
}

async fn two_replicas_deliver_each_message_once(app: TestApp) {
    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    drop(app);
    let smtp = SmtpServer::start().await;
    let first = spawn_with_smtp(backend, &smtp, &[]).await.unwrap();
    let second = first.spawn_peer().await;
    const COUNT: usize = 100;
    for n in 0..COUNT {
        queue(if n % 2 == 0 { &first } else { &second }, &format!("user{n}@example.com")).await;
    }
    smtp.wait_for(COUNT, WITHIN).await;
    assert!(eventually(WITHIN, || all_have(&first, COUNT, "sent")).await.is_some());
    let received = smtp.received();
    let ids: HashSet<_> =
        received.iter().map(|m| m.header("Message-ID").unwrap_or_default().to_owned()).collect();
    assert_eq!(received.len(), COUNT, "every message exactly once");
    assert_eq!(ids.len(), COUNT);
}
