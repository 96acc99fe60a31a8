//! Secrets on disk: what the server creates is private to its user, and a private key others
//! can read stops the server before it is used.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use identity::{proto::SignupRequest, testing::TestServer};

use crate::helpers::PASSWORD;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_and_database_the_server_creates_are_private_to_its_user() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("fresh").join("data");
    let config = identity::testing::config(&data, []).unwrap();
    let server = TestServer::start(&config).await.unwrap();
    // A write, so that the write-ahead log and its index exist.
    let signup = SignupRequest {
        email: "private@example.com".into(),
        password: PASSWORD.into(),
        full_name: "Private".into(),
    };
    identity::proto::auth_service_client::AuthServiceClient::new(server.channel())
        .signup(signup)
        .await
        .unwrap();

    assert_eq!(mode(&root.path().join("fresh")), 0o700);
    assert_eq!(mode(&data), 0o700);
    for file in ["identity.db", "identity.db-wal", "identity.db-shm", "signing_key.pem", "encryption_key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// Runs `identity` (serve) with only `env`, and returns its exit status and standard error.
fn serve(env: &[(&str, &Path)], data_dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_identity"))
        .env_clear()
        .env("IDENTITY_DATA_DIR", data_dir)
        .env("IDENTITY_LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_private_key_readable_by_others_stops_the_server_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    std::fs::write(
        &key,
        identity::tokens::generate_key_pem(identity_contract::SigningAlgorithm::EdDSA).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tls_key = dir.path().join("tls.key");
    std::fs::write(&tls_key, "-----BEGIN PRIVATE KEY-----").unwrap();
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o660)).unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "").unwrap();
    let private = dir.path().join("private.pem");
    std::fs::write(
        &private,
        identity::tokens::generate_key_pem(identity_contract::SigningAlgorithm::EdDSA).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();

    let cases: [(&[(&str, &Path)], &Path); 4] = [
        (&[("IDENTITY_SIGNING_KEY_FILE", &key)], &key),
        // A retired key kept in its private form still verifies: as secret as the signing key.
        (&[("IDENTITY_SIGNING_KEY_FILE", &private), ("IDENTITY_VERIFY_KEY_FILES", &key)], &key),
        // The key a server generated, loosened afterwards.
        (&[], &dir.path().join("signing_key.pem")),
        (
            &[
                ("IDENTITY_SIGNING_KEY_FILE", &private),
                ("IDENTITY_TLS_CERT_FILE", &cert),
                ("IDENTITY_TLS_KEY_FILE", &tls_key),
            ],
            &tls_key,
        ),
    ];
    std::fs::copy(&key, dir.path().join("signing_key.pem")).unwrap();
    std::fs::set_permissions(dir.path().join("signing_key.pem"), std::fs::Permissions::from_mode(0o604))
        .unwrap();
    for (env, exposed) in cases {
        let (code, stderr) = serve(env, dir.path());
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        // `chmod 600 FILE`, or 640 when the tests run as root: a root-owned key may be
        // group-readable, never group-writable or readable by others.
        assert!(
            stderr.contains("chmod 6") && stderr.contains(&format!("0 {}`", exposed.display())),
            "{stderr}"
        );
    }

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_identity"))
        .arg("check-config")
        .env_clear()
        .env("IDENTITY_SIGNING_KEY_FILE", &key)
        .env("IDENTITY_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
