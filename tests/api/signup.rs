//! Signup: the account it creates, the fields it refuses and why, and one account per email
//! however many race for it.

use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bad_fields},
    on_both_backends,
};

on_both_backends!(
    signup_returns_the_new_user,
    signup_rejects_malformed_emails,
    signup_rejects_passwords_outside_the_policy,
    signup_rejects_empty_overlong_and_control_character_names,
    signup_reports_every_bad_field_at_once,
    signup_of_a_taken_email_is_already_exists_whatever_its_case,
    concurrent_signups_of_one_email_give_exactly_one_account,
);

async fn signup_returns_the_new_user(app: TestApp) {
    let user = app.signup("  Alice.Smith@Example.com ", PASSWORD, " Alice Smith ").await.unwrap();
    let id: uuid::Uuid = user.id.parse().expect("id is a UUID");
    assert_eq!(id.get_version_num(), 4);
    assert_eq!(user.email, "Alice.Smith@Example.com");
    assert_eq!(user.full_name, "Alice Smith");
    assert!(user.is_active);
    let created = user.created_at.expect("created_at is set");
    let age = chrono::Utc::now().timestamp() - created.seconds;
    assert!((0..60).contains(&age), "created_at is now, not {created:?}");
}

async fn signup_rejects_malformed_emails(app: TestApp) {
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    for email in [
        "",
        "   ",
        "plainaddress",
        "@example.com",
        "alice@",
        "two@@example.com",
        "Alice <a@example.com>",
        "a\0@example.com",
        too_long.as_str(),
    ] {
        let status = assert_code(app.signup(email, PASSWORD, "Alice").await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["email"], "for {email:?}: {status:?}");
    }
}

async fn signup_rejects_passwords_outside_the_policy(app: TestApp) {
    let cases = [
        ("Xq7!vR2#pL9", "at least 15 characters"),
        (&"é".repeat(14), "at least 15 characters"),
        (&"tundra-maple-orbit-".repeat(4), "at most 71 bytes"),
        ("maple-orbit\0-tundra-42", "NUL"),
        ("passwordpassword", "too easy to guess"),
        ("bob.jones@example.com", "too easy to guess"),
        ("BobJonesBobJones", "too easy to guess"),
    ];
    for (password, expected) in cases {
        let status = assert_code(
            app.signup("bob.jones@example.com", password, "Bob Jones").await,
            Code::InvalidArgument,
        );
        assert_eq!(bad_fields(&status), ["password"], "for {password:?}");
        assert!(status.message().contains(expected), "for {password:?}: {}", status.message());
        assert!(!status.message().contains(password), "the message must not echo the password");
    }
    // The policy counts characters, not bytes: 15 two-byte characters are enough length.
    assert!(app.signup("carol@example.com", "ñandú-kiwi-émeu-4", "Carol").await.is_ok());
}

async fn signup_rejects_empty_overlong_and_control_character_names(app: TestApp) {
    for name in ["", "   ", &"x".repeat(201), "Ali\0ce", "Ali\nce"] {
        let status = assert_code(app.signup("dave@example.com", PASSWORD, name).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["full_name"], "for {name:?}");
    }
    assert!(app.signup("dave@example.com", PASSWORD, &"é".repeat(200)).await.is_ok());
}

async fn signup_reports_every_bad_field_at_once(app: TestApp) {
    let status = assert_code(app.signup("nope", "short", "").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["email", "full_name", "password"]);
}

async fn signup_of_a_taken_email_is_already_exists_whatever_its_case(app: TestApp) {
    app.signup("erin@example.com", PASSWORD, "Erin").await.unwrap();
    for email in ["erin@example.com", "ERIN@example.COM", "  Erin@Example.com"] {
        let status = assert_code(app.signup(email, PASSWORD, "Another Erin").await, Code::AlreadyExists);
        assert!(!status.message().contains("SQL") && !status.message().contains("constraint"), "{status:?}");
    }
    // The first account is intact: it still logs in with its own password and name.
    let login = app.login("erin@example.com", PASSWORD).await.unwrap();
    assert_eq!(login.user.unwrap().full_name, "Erin");
}

async fn concurrent_signups_of_one_email_give_exactly_one_account(app: TestApp) {
    let attempts = (0..20).map(|i| {
        let auth = app.auth();
        async move {
            let mut auth = auth;
            let request = identity::proto::SignupRequest {
                email: if i % 2 == 0 { "race@example.com".into() } else { "RACE@example.com".into() },
                password: PASSWORD.into(),
                full_name: format!("Racer {i}"),
            };
            auth.signup(request).await
        }
    });
    let results = futures_join_all(attempts).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exists = results.iter().filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists)).count();
    assert_eq!((ok, exists), (1, 19), "{results:?}");
    let email = identity::domain::Email::parse("email", "race@example.com").unwrap().normalized();
    let user = app.store.find_user_by_email(&email).await.unwrap();
    assert!(user.is_some());
}

/// Runs the futures concurrently on the runtime and collects their outputs in order.
pub async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task completes"));
    }
    outputs
}
