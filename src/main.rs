//! The `identity` binary: parse the command line and hand it to [`identity::cli::run`], with
//! the process's stop signal. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use identity::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse(), shutdown_signal()).await
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
