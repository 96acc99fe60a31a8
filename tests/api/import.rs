//! Moving in: `identity import` from the FastAPI tutorial's table (hashed by Python's bcrypt)
//! and from JSON Lines (Argon2 and both PBKDF2 forms), then logins over gRPC with the original
//! passwords; `identity export` and its round trip; re-runs, `--update`, `--dry-run`,
//! collisions. The fixtures are made by tests/fixtures/import/make_fixtures.py.

use std::{path::Path, sync::Arc};

use tonic::Code;

use crate::{
    cli::identity,
    helpers::{Backend, PASSWORD, TemporaryDatabase, TestApp, assert_code},
    on_both_backends,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import");

on_both_backends!(
    the_tutorial_apps_users_log_in_with_their_old_passwords_and_collisions_are_reported,
    argon2_and_both_pbkdf2_forms_from_json_lines_log_in_and_are_rehashed,
    an_export_imports_into_a_fresh_database_and_logs_in_there,
    a_dry_run_writes_nothing_and_bad_records_are_reported,
);

#[derive(serde::Deserialize)]
struct TutorialRow {
    id: i32,
    email: String,
    password: String,
    hashed_password: String,
    full_name: String,
    is_active: bool,
}

fn tutorial_rows() -> Vec<TutorialRow> {
    let text = std::fs::read_to_string(format!("{FIXTURES}/tutorial_users.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs the CLI against `app`'s database; its standard output and error, after asserting success.
pub fn run(app: &TestApp, args: &[&str]) -> (String, String) {
    let output = identity(app, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A fresh Postgres database holding the tutorial app's `users` table and rows, and what drops
/// it; `None` without a test Postgres server.
async fn tutorial_database() -> Option<(String, Arc<TemporaryDatabase>)> {
    let (url, database) = TemporaryDatabase::create().await?;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    // The tutorial's model, as SQLAlchemy creates it, with the column types the issue names.
    sqlx::query(
        "CREATE TABLE users (
             id integer PRIMARY KEY,
             email varchar(225) UNIQUE,
             hashed_password bytea,
             full_name varchar,
             is_active boolean DEFAULT false
         )",
    )
    .execute(&pool)
    .await
    .unwrap();
    for row in tutorial_rows() {
        sqlx::query("INSERT INTO users VALUES ($1, $2, $3, $4, $5)")
            .bind(row.id)
            .bind(&row.email)
            .bind(row.hashed_password.as_bytes())
            .bind(&row.full_name)
            .bind(row.is_active)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    Some((url, database))
}

fn normalized(email: &str) -> identity::domain::NormalizedEmail {
    identity::domain::Email::parse("email", email).unwrap().normalized()
}

async fn scheme_of(app: &TestApp, email: &str) -> String {
    let record = app.store.find_user_by_email(&normalized(email)).await.unwrap();
    record.expect("the account exists").password_hash.scheme_name().to_owned()
}

async fn the_tutorial_apps_users_log_in_with_their_old_passwords_and_collisions_are_reported(app: TestApp) {
    let Some((source, _source_database)) = tutorial_database().await else {
        eprintln!("IDENTITY_TEST_POSTGRES_URL is not set: the tutorial import needs a Postgres source");
        return;
    };
    let mapping = app.data_dir().join("mapping.csv");
    let mapping_arg = mapping.display().to_string();
    let (summary, stderr) = run(&app, &["import", "--from-postgres", &source, "--mapping", &mapping_arg]);
    assert!(summary.contains("6 records read, 4 imported"), "{summary}");
    assert!(summary.contains("2 email collisions"), "{summary}");
    assert!(summary.contains("2 users marked inactive in the source were imported as active"), "{summary}");
    assert!(stderr.contains("(old id 4) (Alice@Example.com): not imported: has the same email"), "{stderr}");
    assert!(stderr.contains("(old id 6)") && stderr.contains("looks like"), "{stderr}");
    #[cfg(unix)]
    assert_eq!(mode(&mapping), 0o600);
    let mapping_text = std::fs::read_to_string(&mapping).unwrap();
    assert_eq!(mapping_text.lines().count(), 4, "{mapping_text}");

    let rows = tutorial_rows();
    for row in rows.iter().filter(|row| [1, 2, 3, 5].contains(&row.id)) {
        // Alice and Carol were inactive in the tutorial's table (which its login never read);
        // Bob's password is over 72 bytes.
        let login = app.login(&row.email, &row.password).await;
        let user = login.unwrap_or_else(|e| panic!("{} logs in: {e:?}", row.email)).user.unwrap();
        assert_eq!(user.full_name, row.full_name);
        assert_eq!(user.external_id.as_deref(), Some(row.id.to_string().as_str()));
        let line = mapping_text.lines().find(|l| l.starts_with(&format!("{},", row.id))).unwrap();
        assert_eq!(line, format!("{},{}", row.id, user.id));
    }
    assert!(rows[1].password.len() > 72);
    // The first login replaced each hash with bcrypt at the server's cost, except Bob's: no
    // bcrypt hash made here can hold his whole password.
    assert_eq!(scheme_of(&app, "alice@example.com").await, "bcrypt");
    assert_eq!(scheme_of(&app, "bob@example.com").await, "bcrypt-imported");
    assert!(app.login("bob@example.com", &rows[1].password).await.is_ok(), "and again");
    let (schemes, _) = run(&app, &["user", "hash-schemes"]);
    assert!(schemes.contains("bcrypt-imported\t12\t1\tyes"), "{schemes}");
    assert!(schemes.contains("bcrypt\t4\t3\t"), "{schemes}");

    // Re-run: nothing new; with --keep-inactive --update, Carol's is_active is honoured.
    let (again, _) = run(&app, &["import", "--from-postgres", &source, "--mapping", &mapping_arg]);
    assert!(again.contains("0 imported, 4 already imported (skipped)"), "{again}");
    let (updated, _) = run(
        &app,
        &["import", "--from-postgres", &source, "--mapping", &mapping_arg, "--keep-inactive", "--update"],
    );
    assert!(updated.contains("4 updated"), "{updated}");
    assert_code(app.login("carol@example.com", &rows[2].password).await, Code::Unauthenticated);
    assert!(app.login("dave@example.com", &rows[4].password).await.is_ok());
    assert_code(app.login("alice@example.com", &rows[0].password).await, Code::Unauthenticated);
}

async fn argon2_and_both_pbkdf2_forms_from_json_lines_log_in_and_are_rehashed(app: TestApp) {
    let file = format!("{FIXTURES}/other_schemes.jsonl");
    let mapping = app.data_dir().join("mapping.csv").display().to_string();
    let (summary, _) = run(&app, &["import", "--from-jsonl", &file, "--mapping", &mapping]);
    assert!(summary.contains("5 records read, 5 imported"), "{summary}");
    let passwords: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/other_schemes_passwords.json")).unwrap(),
    )
    .unwrap();
    let expected = [
        ("erin@example.com", "argon2id"),
        ("frank@example.com", "argon2i"),
        ("grace@example.com", "pbkdf2-sha256"),
        ("heidi@example.com", "django-pbkdf2-sha256"),
        ("ivan@example.com", "django-pbkdf2-sha256"),
    ];
    for (email, scheme) in expected {
        assert_eq!(scheme_of(&app, email).await, scheme);
        let login = app.login(email, &passwords[email]).await;
        let user = login.unwrap_or_else(|e| panic!("{email} logs in: {e:?}")).user.unwrap();
        assert_eq!(user.created_at.unwrap().seconds, 1_614_834_367, "created is kept");
    }
    for (email, _) in &expected[..4] {
        assert_eq!(scheme_of(&app, email).await, "bcrypt", "{email} was rehashed");
        assert!(app.login(email, &passwords[*email]).await.is_ok());
    }
    // Ivan's passphrase is longer than bcrypt holds: his Django hash stays, and keeps working.
    assert_eq!(scheme_of(&app, "ivan@example.com").await, "django-pbkdf2-sha256");
    assert!(app.login("ivan@example.com", &passwords["ivan@example.com"]).await.is_ok());
    let (schemes, _) = run(&app, &["user", "hash-schemes"]);
    assert!(schemes.contains("django-pbkdf2-sha256\t-\t1\tyes"), "{schemes}");
}

async fn an_export_imports_into_a_fresh_database_and_logs_in_there(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    let file = format!("{FIXTURES}/other_schemes.jsonl");
    let mapping = app.data_dir().join("mapping.csv").display().to_string();
    run(&app, &["import", "--from-jsonl", &file, "--mapping", &mapping]);
    let with_hashes = app.data_dir().join("export.jsonl");
    let without = app.data_dir().join("export-no-hashes.jsonl");
    let (said, _) =
        run(&app, &["export", "--out", &with_hashes.display().to_string(), "--include-password-hashes"]);
    assert!(said.starts_with("6 accounts written"), "{said}");
    run(&app, &["export", "--out", &without.display().to_string()]);
    #[cfg(unix)]
    assert_eq!((mode(&with_hashes), mode(&without)), (0o600, 0o600));
    assert!(!std::fs::read_to_string(&without).unwrap().contains("password_hash"));
    let again = identity(&app, &["export", "--out", &without.display().to_string()]);
    assert!(!again.status.success(), "an existing file is never overwritten");

    let backend = if app.db.url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    let fresh = TestApp::spawn(backend).await.unwrap();
    let mapping = fresh.data_dir().join("mapping.csv").display().to_string();
    let (summary, _) =
        run(&fresh, &["import", "--from-jsonl", &with_hashes.display().to_string(), "--mapping", &mapping]);
    assert!(summary.contains("6 records read, 6 imported"), "{summary}");
    assert!(fresh.login(&user.email, PASSWORD).await.is_ok(), "an account made here moves with its hash");
    let erin = fresh.login("erin@example.com", "erin-argon2id-password").await.unwrap().user.unwrap();
    assert_eq!(erin.external_id.as_deref(), Some("100"));
    // Without hashes the accounts come over without passwords.
    let bare = TestApp::spawn(backend).await.unwrap();
    let mapping = bare.data_dir().join("mapping.csv").display().to_string();
    run(&bare, &["import", "--from-jsonl", &without.display().to_string(), "--mapping", &mapping]);
    assert_code(bare.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    let (schemes, _) = run(&bare, &["user", "hash-schemes"]);
    assert!(schemes.contains("none\t-\t6\t"), "{schemes}");
}

async fn a_dry_run_writes_nothing_and_bad_records_are_reported(app: TestApp) {
    let file = app.data_dir().join("users.jsonl");
    let lines = [
        r#"{"email":"ok@example.com","password_hash":"$2b$04$.T9qvKCow/Kv9cB13KqzFu/smAvD2qROHQUtwvjCRrDcq8eDwDeBK","external_id":1}"#,
        r#"{"email":"OK@example.com","external_id":2}"#,
        r#"{"email":"md5@example.com","password_hash":"5f4dcc3b5aa765d61d8327deb882cf99"}"#,
        r#"{"email":"typo@example.com","pasword_hash":"x"}"#,
        "not json",
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mapping = app.data_dir().join("mapping.csv").display().to_string();
    let args = ["import", "--from-jsonl", &file.display().to_string(), "--mapping", &mapping, "--dry-run"];
    let (summary, stderr) = run(&app, &args);
    assert!(summary.starts_with("dry run (nothing written)"), "{summary}");
    assert!(summary.contains("5 records read, 1 imported"), "{summary}");
    assert!(summary.contains("1 email collisions") && summary.contains("3 invalid"), "{summary}");
    assert!(stderr.contains("password_hash: not a hash in a scheme identity can check"), "{stderr}");
    assert!(!stderr.contains("5f4dcc3b"), "a hash never reaches the output: {stderr}");
    assert!(stderr.contains("unknown field `pasword_hash`"), "{stderr}");
    assert!(stderr.contains("line 5: not imported: not valid JSON"), "{stderr}");
    let none = app.store.find_user_by_email(&normalized("ok@example.com")).await.unwrap();
    assert!(none.is_none(), "a dry run writes nothing");
    assert!(!Path::new(&mapping).exists(), "nor a mapping of ids it never stored");
}
