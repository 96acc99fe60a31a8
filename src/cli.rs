//! The subcommands other than serving: `migrate`, `keygen` and `healthcheck`.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    config::Config,
    startup::{StartupError, connect_and_migrate},
    tokens::{KeyError, generate_key_pem},
};

pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    let store = connect_and_migrate(config).await?;
    store.close().await;
    Ok(())
}

/// Writes a new Ed25519 PKCS#8 PEM key to `path` (mode 0600, never over an existing file), or
/// to standard output.
pub fn keygen(path: Option<&Path>) -> Result<(), KeyError> {
    let pem = generate_key_pem()?;
    let Some(path) = path else {
        let mut out = std::io::stdout();
        return out
            .write_all(pem.as_bytes())
            .map_err(|source| KeyError::Write { path: "<stdout>".into(), source });
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .map_err(|source| KeyError::Write { path: path.to_owned(), source })
}

/// The address a local health check should dial: the listen address, with a wildcard IP
/// replaced by loopback.
pub fn local_target(listen_addr: SocketAddr) -> SocketAddr {
    if listen_addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen_addr.port())
    } else {
        listen_addr
    }
}

/// Asks grpc.health.v1 about `service` ("" for the whole server); Ok(true) only for SERVING.
pub async fn healthcheck(addr: SocketAddr, service: &str) -> Result<bool, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3));
    let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .map_err(|status| format!("health check failed: {}", status.message()))?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// What an operator command did.
#[derive(Debug, PartialEq, Eq)]
pub struct UserCommandOutcome {
    pub user_id: uuid::Uuid,
    pub sessions_revoked: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no account with email {0}")]
    NoSuchUser(String),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// `identity user deactivate|activate|revoke-sessions EMAIL`. Deactivating or revoking ends
/// every session of the user: on Postgres every replica hears of it at once (NOTIFY); a SQLite
/// server picks it up within a second.
pub async fn user_command(
    config: &Config,
    command: UserCommand,
    email: &str,
) -> Result<UserCommandOutcome, CliError> {
    let store = connect_and_migrate(config).await?;
    let email_lower = crate::domain::normalize_email(email);
    let user = store
        .find_user_by_email(&email_lower)
        .await?
        .ok_or_else(|| CliError::NoSuchUser(email.to_owned()))?;
    let now = chrono::Utc::now();
    if let UserCommand::Activate | UserCommand::Deactivate = command {
        store.set_user_active(&email_lower, command == UserCommand::Activate, now).await?;
    }
    let revoked = match command {
        UserCommand::Deactivate | UserCommand::RevokeSessions => {
            store.revoke_sessions_of_user(user.id, now).await?
        }
        UserCommand::Activate => None,
    };
    let revoked = revoked.map_or(0, |revocation| revocation.session_ids.len());
    tracing::info!(target: "audit", event = command.event(), user_id = %user.id, sessions_revoked = revoked);
    store.close().await;
    Ok(UserCommandOutcome { user_id: user.id, sessions_revoked: revoked })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserCommand {
    Deactivate,
    Activate,
    RevokeSessions,
}

impl UserCommand {
    fn event(self) -> &'static str {
        match self {
            Self::Deactivate => "user_deactivated",
            Self::Activate => "user_activated",
            Self::RevokeSessions => "sessions_revoked",
        }
    }
}

/// The checks `identity check-config` makes beyond parsing: the key and TLS files it names can
/// be read and parsed. It never generates a key.
pub fn check_files(config: &Config) -> Result<(), String> {
    if config.signing_key_file.is_some() || !config.verify_key_files.is_empty() {
        let generated = config.data_dir.join("signing_key.pem");
        let signing = config.signing_key_file.as_deref().unwrap_or(&generated);
        if config.signing_key_file.is_some() || generated.exists() {
            crate::tokens::KeyRing::load(Some(signing), &config.data_dir, &config.verify_key_files)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(tls) = &config.tls {
        for path in
            [Some(&tls.cert_file), Some(&tls.key_file), tls.client_ca_file.as_ref()].into_iter().flatten()
        {
            std::fs::read(path).map_err(|e| format!("TLS: cannot read {}: {e}", path.display()))?;
        }
    }
    Ok(())
}
