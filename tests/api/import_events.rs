//! What an import tells the rest of the system: the roles of JSON Lines records, held here and
//! in the `roles` claim (and carried through export and import into a fresh database), and the
//! user-events stream, on which each imported account appears, an update's changes follow, and
//! a dry run leaves nothing.

use identity::proto::user_event::Kind;

use crate::{
    events::{catch_up, kind_name},
    helpers::{Backend, TestApp},
    import::run,
    on_both_backends,
};

on_both_backends!(
    roles_from_json_lines_are_in_the_token_and_survive_an_export_round_trip,
    each_imported_account_is_on_the_user_events_stream_and_a_dry_run_adds_nothing,
);

/// Python's bcrypt hash of `PASSWORD` (from the tutorial fixture).
const HASH: &str = "$2b$12$/6IH5Hw/IjzRzHa7p69NpuLxgVfv76pLYYWvzGXRAZyeV.f8K8SM2";
const PASSWORD: &str = "correct horse battery staple";

fn write_lines(app: &TestApp, name: &str, lines: &[String]) -> String {
    let file = app.data_dir().join(name);
    std::fs::write(&file, lines.join("\n")).unwrap();
    file.display().to_string()
}

fn line(email: &str, name: &str, active: bool, roles: &[&str]) -> String {
    serde_json::json!({"email": email, "full_name": name, "password_hash": HASH, "active": active,
        "external_id": email.split('@').next().unwrap(), "roles": roles})
    .to_string()
}

fn import(app: &TestApp, file: &str, extra: &[&str]) -> String {
    let mapping = app.data_dir().join("mapping.csv").display().to_string();
    let mut args = vec!["import", "--from-jsonl", file, "--mapping", &mapping];
    args.extend_from_slice(extra);
    run(app, &args).0
}

async fn roles_claim(app: &TestApp, email: &str) -> serde_json::Value {
    let login = app.login(email, PASSWORD).await.unwrap_or_else(|e| panic!("{email} logs in: {e:?}"));
    let token = login.tokens.unwrap().access_token;
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token).unwrap().claims;
    claims["roles"].clone()
}

async fn roles_from_json_lines_are_in_the_token_and_survive_an_export_round_trip(app: TestApp) {
    let file = write_lines(
        &app,
        "roles.jsonl",
        &[
            line("ada@example.com", "Ada", true, &["support", "billing.read", "support"]),
            line("bob@example.com", "Bob", true, &[]),
            line("eve@example.com", "Eve", true, &["Not A Role"]),
        ],
    );
    let summary = import(&app, &file, &[]);
    assert!(summary.contains("3 records read, 2 imported") && summary.contains("1 invalid"), "{summary}");
    assert_eq!(roles_claim(&app, "ada@example.com").await, serde_json::json!(["billing.read", "support"]));
    assert_eq!(roles_claim(&app, "bob@example.com").await, serde_json::json!([]));

    // Export writes them; a fresh database imports them back.
    let out = app.data_dir().join("export.jsonl");
    run(&app, &["export", "--out", &out.display().to_string(), "--include-password-hashes"]);
    let exported = std::fs::read_to_string(&out).unwrap();
    let ada = exported.lines().find(|l| l.contains("ada@example.com")).unwrap();
    let ada: serde_json::Value = serde_json::from_str(ada).unwrap();
    assert_eq!(ada["roles"], serde_json::json!(["billing.read", "support"]));
    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    let fresh = TestApp::spawn(backend).await.unwrap();
    let summary = import(&fresh, &out.display().to_string(), &[]);
    assert!(summary.contains("2 imported"), "{summary}");
    assert_eq!(roles_claim(&fresh, "ada@example.com").await, serde_json::json!(["billing.read", "support"]));
}

/// Every event a stream opened after `after` has to tell, up to its catch-up.
async fn events_after(app: &TestApp, after: u64) -> (Vec<identity::proto::UserEvent>, u64) {
    catch_up(&mut app.watch_user_events(after).await).await
}

/// The kinds of `events`, per email of the account they concern (looked up by id).
async fn kinds(app: &TestApp, events: &[identity::proto::UserEvent], email: &str) -> Vec<&'static str> {
    let email = identity::domain::Email::parse("email", email).unwrap().normalized();
    let id = app.store.find_user_by_email(&email).await.unwrap().expect("imported").user.id.to_string();
    events.iter().filter(|e| e.user_id == id).map(kind_name).collect()
}

async fn each_imported_account_is_on_the_user_events_stream_and_a_dry_run_adds_nothing(app: TestApp) {
    let first = write_lines(
        &app,
        "first.jsonl",
        &[line("ada@example.com", "Ada", true, &["support"]), line("bob@example.com", "Bob", false, &[])],
    );
    import(&app, &first, &[]);
    let (events, cursor) = events_after(&app, 0).await;
    assert_eq!(kinds(&app, &events, "ada@example.com").await, ["user_created", "roles_changed"]);
    assert_eq!(kinds(&app, &events, "bob@example.com").await, ["user_created", "user_deactivated"]);
    let Some(Kind::UserCreated(created)) = &events[0].kind else { panic!("{events:?}") };
    assert_eq!((created.email.as_str(), created.full_name.as_str()), ("ada@example.com", "Ada"));
    let Some(Kind::RolesChanged(roles)) = &events[1].kind else { panic!("{events:?}") };
    assert_eq!(roles.roles, ["support"]);

    // A dry run of new accounts and changes writes no event.
    let changed = write_lines(
        &app,
        "changed.jsonl",
        &[
            line("ada@example.com", "Ada Lovelace", true, &["support"]),
            line("bob@example.com", "Bob", true, &["billing.read"]),
            line("cy@example.com", "Cy", true, &[]),
        ],
    );
    let summary = import(&app, &changed, &["--update", "--dry-run"]);
    assert!(summary.contains("1 imported") && summary.contains("2 updated"), "{summary}");
    assert_eq!(app.store.latest_event_cursor().await.unwrap(), cursor, "a dry run appends nothing");
    let (none, _) = events_after(&app, cursor).await;
    assert!(none.is_empty(), "{none:?}");

    // The same for real: each change is on the stream, in the import's transaction.
    let summary = import(&app, &changed, &["--update"]);
    assert!(summary.contains("1 imported") && summary.contains("2 updated"), "{summary}");
    let (events, _) = events_after(&app, cursor).await;
    assert_eq!(kinds(&app, &events, "ada@example.com").await, ["user_updated"]);
    let ada = events.iter().find(|e| matches!(e.kind, Some(Kind::UserUpdated(_)))).unwrap();
    let Some(Kind::UserUpdated(updated)) = &ada.kind else { unreachable!() };
    assert_eq!(updated.full_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(kinds(&app, &events, "bob@example.com").await, ["user_activated", "roles_changed"]);
    assert_eq!(kinds(&app, &events, "cy@example.com").await, ["user_created"]);
    // A re-run that changes nothing says nothing.
    let cursor = app.store.latest_event_cursor().await.unwrap();
    import(&app, &changed, &["--update"]);
    assert_eq!(app.store.latest_event_cursor().await.unwrap(), cursor);
}
