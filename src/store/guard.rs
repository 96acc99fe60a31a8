//! What keeps a database call from outliving its usefulness: a bound on every call's statements
//! (a server that stops answering never sends an error), an early verdict when Postgres refuses
//! connections (the pool would otherwise retry quietly until its acquire timeout), and, while
//! the health probe finds the database down, no call at all: callers hear UNAVAILABLE at once
//! and only the probe goes on asking.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::{
    Database,
    pool::{Pool, PoolConnection},
    postgres::PgConnectOptions,
};
use tokio::time::error::Elapsed;

use super::Limits;

/// How long a call may wait for a new connection before we look whether the server refuses
/// them: well above a healthy connect (milliseconds, a TLS handshake included), well under the
/// 1 s in which a refusal should reach the caller.
const REFUSAL_CHECK_AFTER: Duration = Duration::from_millis(250);
/// How long that look may take: a refusal comes back in one round trip.
const REFUSAL_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct Guard {
    statement_timeout: Duration,
    /// Set when the health probe found the database down (or a connection was refused); only a
    /// probe that answers clears it.
    down: AtomicBool,
    /// The Postgres server's TCP address, to tell a refusal from a slow connect. `None` for
    /// SQLite and Unix sockets.
    server: Option<(String, u16)>,
}

/// Where a Postgres connection goes over TCP, if it does.
pub(super) fn tcp_server(options: &PgConnectOptions) -> Option<(String, u16)> {
    let host = options.get_host();
    (options.get_socket().is_none() && !host.starts_with('/')).then(|| (host.to_owned(), options.get_port()))
}

impl Guard {
    pub(super) fn new(limits: Limits, server: Option<(String, u16)>) -> Arc<Self> {
        Arc::new(Self { statement_timeout: limits.statement_timeout, down: AtomicBool::new(false), server })
    }

    pub(super) fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// A connection for a request's call; refused at once while the database is known down.
    pub(super) async fn connection<DB: Database>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<PoolConnection<DB>, sqlx::Error> {
        if self.down.load(Ordering::Relaxed) {
            return Err(sqlx::Error::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "the database did not answer the last health probe; not trying until it does",
            )));
        }
        self.connection_for_probe(pool).await
    }

    /// A connection whatever the last probe said, with the wait recorded. When no connection
    /// has come after [`REFUSAL_CHECK_AFTER`], one plain TCP connect to the server tells a
    /// refusal (a certain answer, passed on at once) from a slow server (keep waiting, up to
    /// the pool's acquire timeout). Postgres logs nothing for a connection that sends nothing.
    pub(super) async fn connection_for_probe<DB: Database>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<PoolConnection<DB>, sqlx::Error> {
        let started = Instant::now();
        let acquire = pool.acquire();
        tokio::pin!(acquire);
        let connection = match &self.server {
            None => acquire.await,
            Some(server) => {
                tokio::select! {
                    connection = &mut acquire => connection,
                    () = tokio::time::sleep(REFUSAL_CHECK_AFTER) => match refused(server).await {
                        Some(error) => {
                            self.down.store(true, Ordering::Relaxed);
                            Err(sqlx::Error::Io(error))
                        }
                        None => acquire.await,
                    },
                }
            }
        };
        metrics::histogram!(crate::metrics::DB_ACQUIRE).record(started.elapsed().as_secs_f64());
        connection
    }

    /// The result of a call's statements, or UNAVAILABLE when they outlasted the statement
    /// timeout. A connection whose statement was cut off may still have it in flight (or sit
    /// behind a dead network), so it is dropped instead of going back to the pool.
    pub(super) fn finish<DB: Database, T>(
        &self,
        connection: PoolConnection<DB>,
        outcome: Result<Result<T, sqlx::Error>, Elapsed>,
    ) -> Result<T, sqlx::Error> {
        match outcome {
            Ok(result) => result,
            Err(_) => {
                drop(connection.detach());
                metrics::counter!(crate::metrics::DB_TIMEOUTS).increment(1);
                Err(sqlx::Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the database did not answer within {:?}", self.statement_timeout),
                )))
            }
        }
    }

    /// Starts a health probe: its verdict is recorded when it answers, and "down" if it is
    /// abandoned first (the watcher stopped waiting for it).
    pub(super) fn probe_started(self: &Arc<Self>) -> Verdict {
        Verdict { guard: Arc::clone(self), recorded: false }
    }
}

/// The pending verdict of one health probe.
pub(super) struct Verdict {
    guard: Arc<Guard>,
    recorded: bool,
}

impl Verdict {
    pub(super) fn record(mut self, answered: bool) {
        self.recorded = true;
        let was_down = self.guard.down.swap(!answered, Ordering::Relaxed);
        if was_down && answered {
            tracing::info!("the database answers again: calls resume");
        }
    }
}

impl Drop for Verdict {
    fn drop(&mut self) {
        if !self.recorded {
            self.guard.down.store(true, Ordering::Relaxed);
        }
    }
}

/// `Some` when the server refuses TCP connections; `None` when it accepts them, or when the
/// look itself is inconclusive.
async fn refused((host, port): &(String, u16)) -> Option<io::Error> {
    match tokio::time::timeout(REFUSAL_CHECK_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), *port)))
        .await
    {
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => Some(error),
        _ => None,
    }
}
