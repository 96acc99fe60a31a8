use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use identity::{cli, config::Config, startup::App, telemetry};

/// A gRPC identity service: signup, login, sessions and token validation.
/// Configured by IDENTITY_* environment variables (see README).
#[derive(Parser)]
#[command(name = "identity", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a new Ed25519 signing key (PKCS#8 PEM) to PATH, or to standard output.
    Keygen { path: Option<PathBuf> },
    /// Operator actions on one account.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
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
enum UserAction {
    /// Refuse the user's logins and end all their sessions.
    Deactivate { email: String },
    /// Let a deactivated user log in again.
    Activate { email: String },
    /// End every session of the user (log out everywhere).
    RevokeSessions { email: String },
}

/// Exit status for a configuration error, as documented.
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Keygen { path }) = &cli.command {
        return match cli::keygen(path.as_deref()) {
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
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(config.log_format);
            match App::build(&config).await {
                Ok(app) => match app.run_until_stopped(shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => fail(&error),
                },
                Err(error) => fail(&error),
            }
        }
        Command::Migrate => {
            telemetry::init(config.log_format);
            match cli::migrate(&config).await {
                Ok(()) => {
                    eprintln!("identity: migrations applied");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
        Command::Healthcheck { addr, service } => {
            let addr = addr.unwrap_or_else(|| {
                cli::local_target(config.health_listen_addr.unwrap_or(config.listen_addr))
            });
            match cli::healthcheck(addr, &service).await {
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
        Command::User { action } => {
            let (command, email) = match action {
                UserAction::Deactivate { email } => (cli::UserCommand::Deactivate, email),
                UserAction::Activate { email } => (cli::UserCommand::Activate, email),
                UserAction::RevokeSessions { email } => (cli::UserCommand::RevokeSessions, email),
            };
            match cli::user_command(&config, command, &email).await {
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
        Command::CheckConfig => {
            for (name, value) in config.describe() {
                println!("{name}={value}");
            }
            match cli::check_files(&config) {
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
    eprintln!("identity: {}", identity::error::error_chain(error));
    ExitCode::FAILURE
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes and Docker send to stop a container).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
