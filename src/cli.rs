//! The `identity` command line: its clap types, and what each subcommand does (`serve`,
//! `migrate`, `keygen`, `user ...`, `service-key ...`, `mail ...`, `import`, `export`, `check-config`,
//! `healthcheck`; import and export live in [`crate::transfer`]). `main` only parses and calls
//! [`run`]. Every subcommand logs to standard error, so what one prints on standard output (a
//! key, a configuration, an outcome) stays clean; operator actions on accounts go through the
//! service's own code, audit event included.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use identity_contract::SigningAlgorithm;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    clock::Clock,
    config::{Config, LogFormat},
    domain::{Email, MailId, Permission, Permissions, Role, ServiceKeyName},
    error::AppError,
    service::{
        AccountAction, AccountActionOutcome, AccountAdmin, FAILED_LIST_LIMIT, MailAdmin, RolesOutcome,
        ServiceKeyAdmin,
    },
    startup::{App, StartupError, connect_and_migrate},
    telemetry,
    tokens::{KeyError, generate_key_pem},
};

/// A gRPC identity service: signup, login, sessions and token validation.
/// Configured by IDENTITY_* environment variables (see README).
#[derive(Parser)]
#[command(name = "identity", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a new signing key (PKCS#8 PEM) to PATH, or to standard output.
    Keygen {
        path: Option<PathBuf>,
        /// The algorithm the key is for: EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA, 2048 bits).
        #[arg(long, default_value = "EdDSA", value_parser = parse_algorithm)]
        alg: SigningAlgorithm,
    },
    /// Operator actions on one account.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// API keys of the services that call WatchRevocations (and, later, the admin API).
    ServiceKey {
        #[command(subcommand)]
        action: ServiceKeyAction,
    },
    /// The outbox: messages given up on, and queueing them again.
    Mail {
        #[command(subcommand)]
        action: MailAction,
    },
    /// Import users from an old app's Postgres table or a JSON Lines file (docs/migrating.md).
    Import(crate::transfer::ImportArgs),
    /// Export every user as JSON Lines (the format import reads).
    Export(crate::transfer::ExportArgs),
    /// Validate the environment and print the effective configuration, secrets redacted.
    CheckConfig,
    /// Exit 0 if the server at ADDR reports SERVING. ADDR defaults to IDENTITY_HEALTH_LISTEN_ADDR
    /// if set (needed when TLS is on: this check speaks plaintext), else IDENTITY_LISTEN_ADDR.
    Healthcheck {
        addr: Option<SocketAddr>,
        /// The health service name to ask about; "" is the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Subcommand)]
enum ServiceKeyAction {
    /// Create a key for the service NAME and print it once on standard output (or write it to
    /// --out, mode 0600): only its digest is kept.
    Create {
        name: String,
        /// admin, watch_events or watch_revocations; repeat for several.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// Write the key to this new file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke the key NAME: new calls are refused at once, its open streams end within one
    /// IDENTITY_REVOCATION_HEARTBEAT.
    Revoke { name: String },
    /// List the keys: name, permissions, created, revoked. Never the keys or their digests.
    List,
}

#[derive(Subcommand)]
enum UserAction {
    /// Refuse the user's logins and end all their sessions.
    Deactivate { email: String },
    /// Let a deactivated user log in again.
    Activate { email: String },
    /// End every session of the user (log out everywhere).
    RevokeSessions { email: String },
    /// Give the user ROLE (in their tokens from their next login or refresh). Bootstrap an
    /// administrator with IDENTITY_ADMIN_ROLE (default identity.admin).
    GrantRole { email: String, role: String },
    /// Take ROLE from the user; their sessions end, so no live token still names it.
    RevokeRole { email: String, role: String },
    /// How many stored password hashes there are per scheme (imported ones remain until their
    /// owner's next login).
    HashSchemes,
}

#[derive(Subcommand)]
enum MailAction {
    /// List messages kept as failed after IDENTITY_MAIL_MAX_ATTEMPTS (oldest first).
    Failed,
    /// Queue the failed message ID again, with a fresh count of attempts.
    Retry { id: String },
    /// Queue every failed message again.
    RetryAll,
}

/// Exit status for a configuration error, as documented.
const EXIT_CONFIG: u8 = 2;

/// Runs the parsed command line; `shutdown` resolves when a server should stop.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()> + Send) -> ExitCode {
    if let Some(Command::Keygen { path, alg }) = &cli.command {
        // Before the configuration, which a key generator must not need.
        telemetry::init(LogFormat::Text);
        return match keygen(path.as_deref(), *alg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        };
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("identity: invalid configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match App::build(&config).await {
            Ok(app) => match app.run_until_stopped(shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            },
            Err(StartupError::ExposedKey(error)) => {
                eprintln!("identity: invalid configuration: {error}");
                ExitCode::from(EXIT_CONFIG)
            }
            Err(error) => fail(&error),
        },
        Command::Migrate => match migrate(&config).await {
            Ok(()) => {
                eprintln!("identity: migrations applied");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Healthcheck { addr, service } => {
            let addr =
                addr.unwrap_or_else(|| local_target(config.health_listen_addr.unwrap_or(config.listen_addr)));
            match healthcheck(addr, &service).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("identity: {addr} is not serving");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("identity: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::User { action: UserAction::HashSchemes } => {
            match crate::transfer::hash_schemes(&config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Import(args) => match crate::transfer::import(&config, args).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::Export(args) => match crate::transfer::export(&config, args).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::User { action } => {
            let (action, email) = match action {
                UserAction::Deactivate { email } => (AccountAction::Deactivate, email),
                UserAction::Activate { email } => (AccountAction::Activate, email),
                UserAction::RevokeSessions { email } => (AccountAction::RevokeSessions, email),
                UserAction::GrantRole { email, role } => {
                    return role_command_outcome(&config, &email, &role, true).await;
                }
                UserAction::RevokeRole { email, role } => {
                    return role_command_outcome(&config, &email, &role, false).await;
                }
                UserAction::HashSchemes => return ExitCode::SUCCESS,
            };
            match user_command(&config, action, &email).await {
                Ok(outcome) => {
                    println!(
                        "{email}: done (user {}, {} sessions revoked)",
                        outcome.user_id, outcome.sessions_revoked
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
        Command::ServiceKey { action } => match service_key_command(&config, action).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::Mail { action } => match mail_command(&config, action).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
        Command::CheckConfig => {
            for (name, value) in config.describe() {
                println!("{name}={value}");
            }
            match check_files(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(problem) => {
                    eprintln!("identity: invalid configuration: {problem}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Keygen { .. } => ExitCode::SUCCESS,
    }
}

fn fail(error: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("identity: {}", crate::error::error_chain(error));
    ExitCode::FAILURE
}

pub async fn migrate(config: &Config) -> Result<(), StartupError> {
    let store = connect_and_migrate(config).await?;
    store.close().await;
    Ok(())
}

fn parse_algorithm(name: &str) -> Result<SigningAlgorithm, String> {
    SigningAlgorithm::from_name(name).ok_or_else(|| "must be EdDSA, ES256 or RS256".to_owned())
}

/// Writes a new PKCS#8 PEM key for `algorithm` to `path` (mode 0600, never over an existing
/// file), or to standard output.
pub fn keygen(path: Option<&Path>, algorithm: SigningAlgorithm) -> Result<(), KeyError> {
    let pem = generate_key_pem(algorithm)?;
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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no account with email {0}")]
    NoSuchUser(String),
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("a service key named {0} already exists (revoked keys keep their names)")]
    KeyNameTaken(String),
    #[error("no live service key named {0}")]
    NoSuchKey(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0} is not a message id")]
    InvalidMailId(String),
    #[error("no failed message with id {0}")]
    NoSuchFailedMail(String),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Service(#[from] AppError),
}

/// `identity user deactivate|activate|revoke-sessions EMAIL`, through the service's
/// [`AccountAdmin`]: one transaction and one audit event per command. Ending sessions reaches
/// every replica at once on Postgres (NOTIFY); a SQLite server picks it up within a second.
pub async fn user_command(
    config: &Config,
    action: AccountAction,
    email: &str,
) -> Result<AccountActionOutcome, CliError> {
    let parsed = Email::parse("email", email)
        .map_err(|v| CliError::InvalidEmail(format!("{email}: {}", v.description)))?;
    let store = connect_and_migrate(config).await?;
    let admin = AccountAdmin::new(store.clone(), Clock::system(), None);
    let outcome = admin.apply(action, &parsed).await;
    store.close().await;
    outcome?.ok_or_else(|| CliError::NoSuchUser(email.to_owned()))
}

async fn role_command_outcome(config: &Config, email: &str, role: &str, grant: bool) -> ExitCode {
    match role_command(config, email, role, grant).await {
        Ok(outcome) => {
            let roles: Vec<&str> = outcome.user.roles.iter().map(Role::as_str).collect();
            println!(
                "{email}: done (user {}, roles now [{}], {} sessions revoked)",
                outcome.user.id,
                roles.join(", "),
                outcome.sessions_revoked
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

/// `identity user grant-role|revoke-role EMAIL ROLE`, through the service's [`AccountAdmin`]:
/// one transaction and one audit event. Revoking a role ends the user's sessions on every
/// replica (as `revoke-sessions` does).
pub async fn role_command(
    config: &Config,
    email: &str,
    role: &str,
    grant: bool,
) -> Result<RolesOutcome, CliError> {
    let parsed = Email::parse("email", email)
        .map_err(|v| CliError::InvalidEmail(format!("{email}: {}", v.description)))?;
    let role = Role::parse("role", role)
        .map_err(|v| CliError::InvalidArgument(format!("{role}: {}", v.description)))?;
    let store = connect_and_migrate(config).await?;
    let admin = AccountAdmin::new(store.clone(), Clock::system(), None);
    let outcome = admin.grant_or_revoke(&parsed, role, grant).await;
    store.close().await;
    outcome?.ok_or_else(|| CliError::NoSuchUser(email.to_owned()))
}

/// `identity service-key create|revoke|list`, through the service's [`ServiceKeyAdmin`]: one
/// statement and one audit event each.
async fn service_key_command(config: &Config, action: ServiceKeyAction) -> Result<(), CliError> {
    let name = |raw: &str| {
        ServiceKeyName::parse("name", raw)
            .map_err(|v| CliError::InvalidArgument(format!("{raw}: {}", v.description)))
    };
    // Parse before touching the database.
    let parsed = match &action {
        ServiceKeyAction::Create { name: raw, permissions, .. } => {
            let permissions: Permissions = permissions
                .iter()
                .map(|p| Permission::parse(p.trim()))
                .collect::<Result<_, _>>()
                .map_err(CliError::InvalidArgument)?;
            Some((name(raw)?, permissions))
        }
        ServiceKeyAction::Revoke { name: raw } => Some((name(raw)?, Permissions::default())),
        ServiceKeyAction::List => None,
    };
    let store = connect_and_migrate(config).await?;
    let admin = ServiceKeyAdmin::new(store.clone(), Clock::system());
    let outcome = match (action, parsed) {
        (ServiceKeyAction::Create { out, .. }, Some((name, permissions))) => {
            create_service_key(&admin, &name, &permissions, out.as_deref()).await
        }
        (ServiceKeyAction::Revoke { .. }, Some((name, _))) => match admin.revoke(&name).await {
            Ok(true) => {
                println!("{name}: revoked");
                Ok(())
            }
            Ok(false) => Err(CliError::NoSuchKey(name.to_string())),
            Err(error) => Err(error.into()),
        },
        _ => admin.list().await.map_err(CliError::from).map(|keys| {
            println!("NAME\tPERMISSIONS\tCREATED\tREVOKED");
            let time =
                |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            for key in keys {
                let revoked = key.revoked_at.map_or_else(|| "-".to_owned(), time);
                println!("{}\t{}\t{}\t{revoked}", key.name, key.permissions, time(key.created_at));
            }
        }),
    };
    store.close().await;
    outcome
}

/// `identity mail failed|retry ID|retry-all`, through the service's [`MailAdmin`]. Failed
/// messages are printed one per line (id, kind, recipient, attempts, created, last error),
/// tab-separated for scripts.
async fn mail_command(config: &Config, action: MailAction) -> Result<(), CliError> {
    let id = match &action {
        MailAction::Retry { id } => {
            Some(id.parse::<MailId>().map_err(|_| CliError::InvalidMailId(id.clone()))?)
        }
        MailAction::Failed | MailAction::RetryAll => None,
    };
    let store = connect_and_migrate(config).await?;
    let admin = MailAdmin::new(store.clone(), Clock::system());
    let outcome = async {
        match action {
            MailAction::Failed => {
                let failed = admin.failed().await?;
                for mail in &failed {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        mail.id,
                        mail.kind,
                        mail.recipient,
                        mail.attempts,
                        mail.created_at.to_rfc3339(),
                        mail.last_error.as_deref().unwrap_or("").replace(['\t', '\n', '\r'], " ")
                    );
                }
                if failed.len() as u32 == FAILED_LIST_LIMIT {
                    eprintln!("identity: only the oldest {FAILED_LIST_LIMIT} failed messages are listed");
                }
                Ok(())
            }
            MailAction::Retry { id: text } => match admin.retry(id).await? {
                0 => Err(CliError::NoSuchFailedMail(text)),
                _ => {
                    println!("{text}: queued again");
                    Ok(())
                }
            },
            MailAction::RetryAll => {
                let queued = admin.retry(None).await?;
                println!("{queued} messages queued again");
                Ok(())
            }
        }
    }
    .await;
    store.close().await;
    outcome
}

async fn create_service_key(
    admin: &ServiceKeyAdmin,
    name: &ServiceKeyName,
    permissions: &Permissions,
    out: Option<&Path>,
) -> Result<(), CliError> {
    // Refuse an existing file before a key exists that nobody could see.
    let file = out
        .map(|path| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(path).map_err(|source| CliError::Write { path: path.to_owned(), source })
        })
        .transpose()?;
    let Some(key) = admin.create(name, permissions).await? else {
        if let Some(path) = out {
            let _ = std::fs::remove_file(path);
        }
        return Err(CliError::KeyNameTaken(name.to_string()));
    };
    let line = format!("{}\n", key.expose());
    match (file, out) {
        (Some(mut file), Some(path)) => {
            file.write_all(line.as_bytes())
                .map_err(|source| CliError::Write { path: path.to_owned(), source })?;
            eprintln!("identity: service key {name} ({permissions}) written to {}", path.display());
        }
        _ => {
            std::io::stdout()
                .write_all(line.as_bytes())
                .map_err(|source| CliError::Write { path: "<stdout>".into(), source })?;
            eprintln!("identity: service key {name} ({permissions}) created; it is shown only this once");
        }
    }
    Ok(())
}

/// The checks `identity check-config` makes beyond parsing: the key and TLS files it names can
/// be read and parsed. It never generates a key.
pub fn check_files(config: &Config) -> Result<(), String> {
    crate::secret_files::check_private_keys(config).map_err(|e| e.to_string())?;
    if config.signing_key_file.is_some() || !config.verify_key_files.is_empty() {
        let generated = config.data_dir.join(crate::tokens::generated_key_file(config.signing_alg));
        let signing = config.signing_key_file.as_deref().unwrap_or(&generated);
        if config.signing_key_file.is_some() || generated.exists() {
            let verify = &config.verify_key_files;
            crate::tokens::KeyRing::load(Some(signing), &config.data_dir, verify, config.signing_alg)
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
