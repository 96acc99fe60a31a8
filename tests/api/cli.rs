//! The operator CLI, run as the real binary against the test's database.

use std::{process::Command, time::Duration};

use identity::proto::GetCurrentUserRequest;
use tonic::Code;

use crate::{
    helpers::{PASSWORD, TestApp, assert_code, bearer, eventually},
    on_both_backends,
};

on_both_backends!(
    deactivating_a_user_refuses_logins_and_ends_every_session,
    revoke_sessions_logs_a_user_out_everywhere,
    a_user_command_for_an_unknown_email_fails_clearly,
    a_user_command_writes_its_audit_event_to_stderr_and_only_the_outcome_to_stdout,
    granting_a_role_reaches_tokens_at_refresh_and_revoking_it_ends_the_sessions,
    service_keys_are_shown_once_listed_without_secrets_and_revoked_at_once,
    a_service_key_can_be_written_to_a_private_file,
    service_key_commands_refuse_bad_names_permissions_and_duplicates,
);

async fn watch_with(app: &TestApp, key: &str) -> Result<(), tonic::Status> {
    let request = bearer(identity::proto::WatchRevocationsRequest { since: 0 }, key);
    app.tokens().watch_revocations(request).await.map(drop)
}

async fn service_keys_are_shown_once_listed_without_secrets_and_revoked_at_once(app: TestApp) {
    let output = identity_logging(
        &app,
        &["service-key", "create", "gateway", "--permission", "watch_revocations", "--permission", "admin"],
        "info",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout.trim_end();
    assert!(key.starts_with("idk_") && !key.contains('\n'), "only the key on stdout: {stdout:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(r#""event":"service_key_created""#) && stderr.contains("gateway"), "{stderr}");
    assert!(!stderr.contains(&key[4..]), "the key reached the logs");
    watch_with(&app, key).await.expect("the new key is let in");

    let listed = identity(&app, &["service-key", "list"]);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    let row = listed.lines().find(|line| line.starts_with("gateway\t")).expect("the key is listed");
    let columns: Vec<_> = row.split('\t').collect();
    assert_eq!(columns[1], "admin,watch_revocations");
    assert_eq!(columns[3], "-", "not revoked");
    assert!(!listed.contains(&key[4..]));

    let output = identity_logging(&app, &["service-key", "revoke", "gateway"], "info");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains(r#""event":"service_key_revoked""#));
    assert_code(watch_with(&app, key).await, Code::Unauthenticated);
    let listed = String::from_utf8(identity(&app, &["service-key", "list"]).stdout).unwrap();
    let row = listed.lines().find(|line| line.starts_with("gateway\t")).unwrap();
    assert_ne!(row.split('\t').nth(3), Some("-"), "the revocation time is listed: {row}");

    let again = identity(&app, &["service-key", "revoke", "gateway"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live service key named gateway"));
}

async fn a_service_key_can_be_written_to_a_private_file(app: TestApp) {
    let path = app.data_dir().join("gateway.key");
    let path_text = path.display().to_string();
    let output = identity(
        &app,
        &["service-key", "create", "gateway", "--permission", "watch_revocations", "--out", &path_text],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "nothing on stdout when the key goes to a file");
    let key = std::fs::read_to_string(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    watch_with(&app, key.trim_end()).await.expect("the key in the file is let in");
    // Never over an existing file, and no key is made when the file cannot be written.
    let output = identity(
        &app,
        &["service-key", "create", "other", "--permission", "watch_revocations", "--out", &path_text],
    );
    assert!(!output.status.success());
    let listed = String::from_utf8(identity(&app, &["service-key", "list"]).stdout).unwrap();
    assert!(!listed.contains("other"), "{listed}");
}

async fn service_key_commands_refuse_bad_names_permissions_and_duplicates(app: TestApp) {
    let output = identity(&app, &["service-key", "create", "gateway", "--permission", "root"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown permission \"root\""));
    let output = identity(&app, &["service-key", "create", "Gateway Two", "--permission", "admin"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be 1 to 64 characters"));
    let output = identity(&app, &["service-key", "create", "gateway"]);
    assert!(!output.status.success(), "a permission is required");

    assert!(identity(&app, &["service-key", "create", "gateway", "--permission", "admin"]).status.success());
    let output = identity(&app, &["service-key", "create", "gateway", "--permission", "admin"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
    assert!(output.stdout.is_empty(), "no key printed for a refused name");
}

pub fn identity(app: &TestApp, args: &[&str]) -> std::process::Output {
    identity_logging(app, args, "warn")
}

fn identity_logging(app: &TestApp, args: &[&str], rust_log: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_identity"))
        .args(args)
        .env_clear()
        .env("IDENTITY_DATABASE_URL", &app.db.url)
        .env("IDENTITY_DATA_DIR", app.data_dir())
        .env("IDENTITY_LOG_FORMAT", "json")
        .env("RUST_LOG", rust_log)
        .output()
        .expect("the identity binary runs")
}

async fn inactive_soon(app: &TestApp, token: &str) -> bool {
    // Postgres: NOTIFY, within milliseconds; SQLite: the server polls every second.
    eventually(Duration::from_secs(5), || async { !app.is_active(token).await }).await.is_some()
}

async fn deactivating_a_user_refuses_logins_and_ends_every_session(app: TestApp) {
    let (user, login) = app.signed_in_user().await;
    let token = login.tokens.unwrap().access_token;
    let output = identity(&app, &["user", "deactivate", &user.email.to_uppercase()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 sessions revoked"));

    assert_code(app.login(&user.email, PASSWORD).await, Code::Unauthenticated);
    assert_code(
        app.users().get_current_user(bearer(GetCurrentUserRequest {}, &token)).await,
        Code::Unauthenticated,
    );
    assert!(inactive_soon(&app, &token).await, "the running server still accepts the token");

    let output = identity(&app, &["user", "activate", &user.email]);
    assert!(output.status.success());
    assert!(app.login(&user.email, PASSWORD).await.is_ok());
}

async fn revoke_sessions_logs_a_user_out_everywhere(app: TestApp) {
    let (user, laptop) = app.signed_in_user().await;
    let phone = app.login(&user.email, PASSWORD).await.unwrap();
    let output = identity(&app, &["user", "revoke-sessions", &user.email]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 sessions revoked"));
    for tokens in [laptop.tokens.unwrap(), phone.tokens.unwrap()] {
        assert!(inactive_soon(&app, &tokens.access_token).await);
    }
    assert!(app.login(&user.email, PASSWORD).await.is_ok(), "the account itself stays active");
}

async fn a_user_command_for_an_unknown_email_fails_clearly(app: TestApp) {
    let output = identity(&app, &["user", "deactivate", "nobody@example.com"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no account with email nobody@example.com"));
}

async fn a_user_command_writes_its_audit_event_to_stderr_and_only_the_outcome_to_stdout(app: TestApp) {
    let (user, _) = app.signed_in_user().await;
    for (command, event, revoked) in [
        ("deactivate", "user_deactivated", 1),
        ("activate", "user_activated", 0),
        ("revoke-sessions", "sessions_revoked", 0),
    ] {
        let output = identity_logging(&app, &["user", command, &user.email], "info");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout.lines().count(), 1, "stdout holds the outcome alone: {stdout}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let audit: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["target"] == "audit")
            .collect();
        assert_eq!(audit.len(), 1, "one audit event for `user {command}`: {stderr}");
        assert_eq!(audit[0]["event"], event);
        assert_eq!(audit[0]["user_id"], user.id.as_str());
        assert_eq!(audit[0]["sessions_revoked"], revoked);
    }
}

async fn granting_a_role_reaches_tokens_at_refresh_and_revoking_it_ends_the_sessions(app: TestApp) {
    use identity::proto::{RefreshTokenRequest, ValidateTokenRequest};
    let (user, login) = app.signed_in_user().await;
    let tokens = login.tokens.unwrap();
    let output = identity(&app, &["user", "grant-role", &user.email, "billing.read"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("roles now [billing.read], 0 sessions revoked"));
    for bad in
        [["user", "grant-role", &user.email, "Billing"], ["user", "grant-role", "nobody@example.com", "x"]]
    {
        assert!(!identity(&app, &bad).status.success(), "{bad:?}");
    }

    // The token in hand is unchanged; the next refresh carries the role.
    let claims = |token: String| async {
        let request = ValidateTokenRequest { access_token: token };
        app.tokens().validate_token(request).await.unwrap().into_inner().claims.expect("active")
    };
    assert!(claims(tokens.access_token.clone()).await.roles.is_empty());
    let refreshed = app
        .auth()
        .refresh_token(RefreshTokenRequest { refresh_token: tokens.refresh_token })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_eq!(claims(refreshed.access_token.clone()).await.roles, ["billing.read"]);

    let output = identity(&app, &["user", "revoke-role", &user.email, "billing.read"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("roles now [], 1 sessions revoked"));
    assert!(inactive_soon(&app, &refreshed.access_token).await, "a token naming a removed role dies");
    let refused =
        app.auth().refresh_token(RefreshTokenRequest { refresh_token: refreshed.refresh_token }).await;
    assert_code(refused, Code::Unauthenticated);
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let output = Command::new(env!("CARGO_BIN_EXE_identity"))
        .arg("check-config")
        .env_clear()
        .env("IDENTITY_DATABASE_URL", "postgres://identity:hunter2@db.internal:5432/identity")
        .env("IDENTITY_ACCESS_TOKEN_TTL", "5m")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("IDENTITY_DATABASE_URL=postgres://identity:***@db.internal:5432/identity"),
        "{stdout}"
    );
    assert!(stdout.contains("IDENTITY_ACCESS_TOKEN_TTL=5m"));
    assert!(stdout.contains("IDENTITY_BCRYPT_COST=12"));
    assert!(!stdout.contains("hunter2"));
}

#[test]
fn an_invalid_variable_stops_with_status_2_and_one_line_naming_it() {
    for args in [&["check-config"][..], &[][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_identity"))
            .args(args)
            .env_clear()
            .env("IDENTITY_BCRYPT_COST", "99")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("IDENTITY_BCRYPT_COST") && stderr.contains("between 4 and 31"), "{stderr}");
    }
}

#[test]
fn check_config_refuses_a_signing_key_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("key.pem");
    std::fs::write(&bogus, "not a key").unwrap();
    std::fs::set_permissions(&bogus, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_identity"))
        .arg("check-config")
        .env_clear()
        .env("IDENTITY_SIGNING_KEY_FILE", &bogus)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("key.pem"));
}

#[test]
fn every_variable_is_documented_in_the_readme_and_env_example() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let declared: Vec<&str> = identity::config::VARIABLES.iter().map(|variable| variable.name).collect();
    for name in &declared {
        assert!(readme.contains(&format!("`{name}`")), "{name} is missing from the README's table");
        assert!(example.contains(&format!("{name}=")), "{name} is missing from .env.example");
    }
    // And the other way round: the table documents no variable the service does not read.
    let documented = readme
        .lines()
        .filter(|line| line.starts_with("| `IDENTITY_"))
        .flat_map(|line| line.split('|').nth(1).unwrap_or_default().split(','))
        .map(|name| name.trim().trim_matches('`').to_owned());
    for name in documented {
        assert!(declared.contains(&name.as_str()), "the README documents {name}, which is not declared");
    }
}
