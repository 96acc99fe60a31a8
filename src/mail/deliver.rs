//! The three ways a message leaves the service: over SMTP (lettre, pooled connections, every
//! network step under a timeout), as an `.eml` file in the data directory for development, or
//! not at all (a team whose own notification service delivers). Each takes a finished
//! [`lettre::Message`]; which one runs is the operator's choice (`IDENTITY_MAIL`).

use std::{path::PathBuf, time::Duration};

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::MailId;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("SMTP: no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot write the message file: {0}")]
    File(#[from] std::io::Error),
    #[error("the file writer stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How messages are delivered.
pub enum Deliverer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        timeout: Duration,
    },
    /// One `.eml` file per message in this directory.
    Files(PathBuf),
    /// Nothing is sent; the message only counts as handed on.
    Discard,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("IDENTITY_SMTP_URL: {0}")]
pub struct SmtpUrlError(String);

impl Deliverer {
    /// An SMTP deliverer for `url` (`smtp://`, `smtps://`, `smtp://…?tls=starttls`); it connects
    /// on first use. `timeout` bounds each network step (connect, each command).
    pub fn smtp(url: &SecretString, timeout: Duration) -> Result<Self, SmtpUrlError> {
        let url = smtp_url(url.expose_secret());
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            // lettre's error can quote the URL, which holds the password: say what is wrong only.
            .map_err(|_| SmtpUrlError("not a usable smtp://, smtps:// URL".into()))?
            .timeout(Some(timeout))
            .build();
        Ok(Self::Smtp { transport, timeout })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Smtp { .. } => "smtp",
            Self::Files(_) => "files",
            Self::Discard => "none",
        }
    }

    /// Hands `message` on.
    pub async fn deliver(&self, id: MailId, message: Message) -> Result<(), DeliveryError> {
        match self {
            Self::Smtp { transport, timeout } => {
                // Beyond lettre's per-step timeout, a bound on the whole exchange (connect,
                // greeting, envelope, data): a server that trickles cannot hold a worker.
                let whole = timeout.saturating_mul(4);
                match tokio::time::timeout(whole, transport.send(message)).await {
                    Ok(sent) => sent.map(drop).map_err(DeliveryError::from),
                    Err(_) => Err(DeliveryError::Timeout(whole)),
                }
            }
            Self::Files(dir) => {
                let path = dir.join(format!("{id}.eml"));
                let dir = dir.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_private(&dir, &path, &bytes)).await??;
                Ok(())
            }
            Self::Discard => Ok(()),
        }
    }
}

/// The issue's `?tls=starttls` spelling is lettre's `?tls=required` (STARTTLS, refused
/// without it).
fn smtp_url(url: &str) -> String {
    url.replace("tls=starttls", "tls=required")
}

/// Writes `bytes` to a new file readable by the owner only (the message holds a link that
/// grants access to an account), in a directory readable by the owner only.
fn write_private(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    // Written aside and renamed into place, so a file that exists is whole, and a retry after a
    // write whose outcome was lost replaces it with the same message rather than adding one.
    let partial = path.with_extension("eml.partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lettre's pool starts a task when built: inside a runtime, as at start.
    #[tokio::test]
    async fn starttls_is_spelt_the_way_lettre_reads_it_and_bad_urls_do_not_echo_the_password() {
        assert_eq!(smtp_url("smtp://h:587?tls=starttls"), "smtp://h:587?tls=required");
        let error =
            Deliverer::smtp(&SecretString::from("ftp://u:hunter2@h"), Duration::from_secs(1)).unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        assert!(
            Deliverer::smtp(&SecretString::from("smtps://u:p@mail.example.com"), Duration::from_secs(1))
                .is_ok()
        );
    }
}
