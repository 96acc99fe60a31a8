//! Overload and fairness: when every hashing thread is busy and the queue is full, work that
//! would hash waits a little for a slot and is then refused with RESOURCE_EXHAUSTED and a
//! RetryInfo; one client address cannot keep the others out; and a failed login costs the same
//! bcrypt work whatever the account's stored hash.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use identity::proto::{LoginRequest, auth_service_client::AuthServiceClient};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, eventually},
    on_both_backends,
    signup::futures_join_all,
};

on_both_backends!(
    a_full_hash_pool_sheds_logins_it_cannot_serve_soon,
    one_address_filling_the_hash_queue_does_not_keep_another_out,
    a_failed_login_costs_one_verify_at_the_current_cost_after_the_cost_is_raised,
    a_failed_login_against_an_imported_hash_costs_what_an_unknown_email_costs,
);

async fn a_full_hash_pool_sheds_logins_it_cannot_serve_soon(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    // One thread, one waiting job, and a cost that keeps the thread busy well past the second
    // a request waits for a slot.
    let app = app
        .restart_with(&[
            ("IDENTITY_HASH_THREADS", "1"),
            ("IDENTITY_HASH_QUEUE", "1"),
            ("IDENTITY_BCRYPT_COST", "12"),
        ])
        .await;
    let logins = (0..20).map(|_| {
        let mut auth = app.auth();
        let request = LoginRequest { email: user.email.clone(), password: PASSWORD.into() };
        async move { auth.login(request).await }
    });
    let results = futures_join_all(logins).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(!shed.is_empty(), "20 concurrent logins on one busy thread and none was shed");
    for status in shed {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.get_error_details().retry_info().is_some());
    }
    // Shed attempts did not count towards the lockout: the account still logs in.
    let after = app.login(&user.email, PASSWORD).await;
    assert!(after.is_ok(), "{after:?}");
}

async fn one_address_filling_the_hash_queue_does_not_keep_another_out(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let app = app
        .restart_with(&[
            ("IDENTITY_HASH_THREADS", "1"),
            ("IDENTITY_HASH_QUEUE", "4"),
            ("IDENTITY_BCRYPT_COST", "11"),
        ])
        .await;
    // 40 logins at a time from 127.0.0.2, each resent as soon as it is answered: one runs and
    // the rest wait, far more than one thread clears in the time a job may wait (the time to
    // clear the 4-job queue, at about 100 ms a login at cost 11).
    let flooder = app.channel_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..40)
        .map(|task| {
            let (mut auth, stop) = (AuthServiceClient::new(flooder.clone()), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let email = format!("nobody-{task}-{n}@example.com");
                    let _ = auth.login(LoginRequest { email, password: "guess-guess-guess".into() }).await;
                    n += 1;
                }
            })
        })
        .collect();
    let identity = app.identity();
    let full = eventually(Duration::from_secs(30), || {
        let (stats, _) = identity.hash_pool_stats();
        async move { stats.queued >= 30 }
    })
    .await;
    assert!(full.is_some(), "the flood never filled the queue: {:?}", app.identity().hash_pool_stats());

    // The queue is all 127.0.0.2's: a login from 127.0.0.1 goes ahead of it.
    let login = app.login(&user.email, PASSWORD).await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    assert!(login.is_ok(), "{login:?}");
}

async fn a_failed_login_costs_one_verify_at_the_current_cost_after_the_cost_is_raised(app: TestApp) {
    // Made at cost 4 (the tests' default), checked after the cost was raised to 7.
    let (user, _) = app.signed_in_user().await;
    let app = app.restart_with(&[("IDENTITY_BCRYPT_COST", "7")]).await;
    let work = |app: &TestApp| app.identity().hash_pool_stats().1;

    let before = work(&app);
    assert_code(app.login(&user.email, "not-the-password-at-all").await, Code::Unauthenticated);
    let existing = work(&app) - before;
    let before = work(&app);
    assert_code(app.login("nobody-here@example.com", "not-the-password-at-all").await, Code::Unauthenticated);
    let unknown = work(&app) - before;
    assert_eq!((existing, unknown), (1 << 7, 1 << 7), "bcrypt rounds: existing account, unknown email");

    // A success rehashes at cost 7; a failure after that costs the same again.
    app.login(&user.email, PASSWORD).await.unwrap();
    let before = work(&app);
    assert_code(app.login(&user.email, "not-the-password-at-all").await, Code::Unauthenticated);
    assert_eq!(work(&app) - before, 1 << 7);
}

/// Imported accounts, never logged in to: a failed login against imported bcrypt of a lower cost
/// costs exactly the unknown email's bcrypt work (topped up cost by cost); one against Argon2 or
/// PBKDF2 is topped up by its measured time (the `import` bench prints those medians), so here
/// it is bounded: never more bcrypt work than one verify, one job in the pool either way.
async fn a_failed_login_against_an_imported_hash_costs_what_an_unknown_email_costs(app: TestApp) {
    let app = app.restart_with(&[("IDENTITY_BCRYPT_COST", "7")]).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import");
    let file = app.data_dir().join("imported.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(format!("{fixtures}/other_schemes.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.push(
        r#"{"email":"old-bcrypt@example.com","password_hash":"$2b$04$.T9qvKCow/Kv9cB13KqzFu/smAvD2qROHQUtwvjCRrDcq8eDwDeBK"}"#.into(),
    );
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mapping = app.data_dir().join("mapping.csv").display().to_string();
    crate::import::run(&app, &["import", "--from-jsonl", &file.display().to_string(), "--mapping", &mapping]);
    let work = |app: &TestApp| app.identity().hash_pool_stats().1;
    let failed_login = async |email: &str| {
        let before = work(&app);
        assert_code(app.login(email, "not-the-password-at-all").await, Code::Unauthenticated);
        work(&app) - before
    };
    let unknown = failed_login("nobody-here@example.com").await;
    assert_eq!(unknown, 1 << 7, "one verify at the configured cost");
    assert_eq!(failed_login("old-bcrypt@example.com").await, unknown, "imported bcrypt at cost 4");
    for email in ["erin@example.com", "frank@example.com", "grace@example.com", "heidi@example.com"] {
        let topped_up = failed_login(email).await;
        assert!(topped_up <= unknown, "{email}: {topped_up} bcrypt rounds on top of its own check");
    }
}
