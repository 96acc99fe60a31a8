//! Accepted TCP connections, before TLS and HTTP/2 see them. Every connection a stranger opens
//! costs a file descriptor and memory, so this is where they are bounded:
//!
//! - a connection must send its first bytes within the handshake timeout (the 24-byte HTTP/2
//!   preface in plaintext; with TLS, its answer to the server's handshake and the first record
//!   of application data), or it is closed. The deadline lives in the connection itself, so a
//!   silent client costs nothing but its own timer and never holds up the accept loop;
//! - at most `max_connections` are open per listener, and at most `max_per_client` from one
//!   client address (one IPv6 /64 counts as one address); an excess connection is closed at
//!   once, before any byte of it is read. The per-client map holds an entry only while that
//!   client has a connection open, so it is bounded by `max_connections`;
//! - an accept error that means the process is out of something (file descriptors, memory,
//!   buffers) backs off, from 5 ms doubling up to 1 s, instead of retrying at once: retrying is
//!   what spun the accept loop at full CPU with descriptors exhausted.
//!
//! [`Connection`] implements tonic's `Connected` with the same [`TcpConnectInfo`] as tonic's own
//! incoming stream, so handlers still see the peer address and, under TLS, the peer certificate.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::{ACCEPT_ERRORS, CONNECTIONS_OPEN, CONNECTIONS_REFUSED, HANDSHAKE_TIMEOUTS};

/// The HTTP/2 client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const H2_PREFACE_BYTES: u64 = 24;
/// What an honest TLS client sends after the server's first flight, at the least: its Finished
/// record (58 bytes in TLS 1.3; key exchange, ChangeCipherSpec and Finished, 93 bytes, in 1.2)
/// and the start of the record that carries the HTTP/2 preface (at least 55 bytes).
const TLS_BYTES_AFTER_SERVER_FLIGHT: u64 = 100;
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Notices peers that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How many connections a listener keeps open and how long a new one may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
}

/// What a connection must send before its handshake deadline is lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// HTTP/2 in clear text: the preface.
    Plaintext,
    /// TLS (tonic performs it over this connection): the client's side of the handshake.
    Tls,
}

/// The accepted connections of one listener, within its [`ConnectionLimits`], for tonic's
/// `serve_with_incoming`. It never yields an error: accept errors are handled here.
pub struct Incoming {
    listener: TcpListener,
    limits: ConnectionLimits,
    handshake: Handshake,
    open: Arc<OpenConnections>,
    /// Set while backing off after an accept error.
    backoff: Option<Pin<Box<Sleep>>>,
    next_backoff: Duration,
    keepalive: TcpKeepalive,
}

impl Incoming {
    /// `name` labels this listener's metrics (`api`, `health`).
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        handshake: Handshake,
        name: &'static str,
    ) -> Self {
        Self {
            listener,
            limits,
            handshake,
            open: Arc::new(OpenConnections { name, counts: Mutex::default() }),
            backoff: None,
            next_backoff: FIRST_ACCEPT_BACKOFF,
            keepalive: TcpKeepalive::new().with_time(TCP_KEEPALIVE),
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Connection> {
        let slot = match self.open.take(client_key(peer.ip()), &self.limits) {
            Ok(slot) => slot,
            Err(reason) => {
                tracing::debug!(%peer, reason, "connection refused");
                metrics::counter!(CONNECTIONS_REFUSED, "listener" => self.open.name, "reason" => reason)
                    .increment(1);
                return None;
            }
        };
        // Small gRPC frames must not wait for the peer's delayed ACK (40 ms on Linux).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        if let Err(error) = SockRef::from(&stream).set_tcp_keepalive(&self.keepalive) {
            tracing::debug!(%error, "cannot set TCP keepalive");
        }
        let info = TcpConnectInfo { local_addr: stream.local_addr().ok(), remote_addr: Some(peer) };
        let progress = match self.handshake {
            Handshake::Plaintext => Progress::Preface { read: 0 },
            Handshake::Tls => Progress::Tls { wrote: false, read_after: 0 },
        };
        Some(Connection {
            stream,
            info,
            deadline: Some(Box::pin(tokio::time::sleep(self.limits.handshake_timeout))),
            progress,
            slot,
        })
    }
}

impl Stream for Incoming {
    type Item = Result<Connection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = &mut this.backoff {
                std::task::ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            match std::task::ready!(this.listener.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    this.next_backoff = FIRST_ACCEPT_BACKOFF;
                    if let Some(connection) = this.admit(stream, peer) {
                        return Poll::Ready(Some(Ok(connection)));
                    }
                }
                // The connection died in the queue: nothing is wrong with the process.
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "accepted connection already gone");
                }
                Err(error) => {
                    metrics::counter!(ACCEPT_ERRORS, "listener" => this.open.name).increment(1);
                    tracing::warn!(
                        %error,
                        backoff_ms = this.next_backoff.as_millis() as u64,
                        listener = this.open.name,
                        "cannot accept connections; backing off"
                    );
                    this.backoff = Some(Box::pin(tokio::time::sleep(this.next_backoff)));
                    this.next_backoff = (this.next_backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// The address a per-client limit counts by: IPv4 (also mapped into IPv6) as is, and IPv6 by
/// its /64, which one host usually holds whole.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The open connections of one listener, in total and per client. A client's entry exists only
/// while it has a connection open.
struct OpenConnections {
    name: &'static str,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl OpenConnections {
    fn take(self: &Arc<Self>, client: IpAddr, limits: &ConnectionLimits) -> Result<Slot, &'static str> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= limits.max_connections {
            return Err("max_connections");
        }
        let from_client = counts.per_client.entry(client).or_insert(0);
        if *from_client >= limits.max_per_client {
            return Err("max_per_client");
        }
        *from_client += 1;
        counts.total += 1;
        metrics::gauge!(CONNECTIONS_OPEN, "listener" => self.name).set(counts.total as f64);
        Ok(Slot { open: Arc::clone(self), client })
    }

    fn give_back(&self, client: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_client) = counts.per_client.get_mut(&client) {
            *from_client = from_client.saturating_sub(1);
            if *from_client == 0 {
                counts.per_client.remove(&client);
            }
        }
        metrics::gauge!(CONNECTIONS_OPEN, "listener" => self.name).set(counts.total as f64);
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).per_client.len()
    }
}

/// A connection's place in the counts, given back when the connection is dropped.
struct Slot {
    open: Arc<OpenConnections>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.give_back(self.client);
    }
}

/// How far a connection has got through its handshake.
#[derive(Debug, Clone, Copy)]
enum Progress {
    Preface { read: u64 },
    Tls { wrote: bool, read_after: u64 },
    Done,
    TimedOut,
}

impl Progress {
    fn read(&mut self, bytes: u64) {
        *self = match *self {
            Self::Preface { read } if read + bytes >= H2_PREFACE_BYTES => Self::Done,
            Self::Preface { read } => Self::Preface { read: read + bytes },
            Self::Tls { wrote: true, read_after } if read_after + bytes >= TLS_BYTES_AFTER_SERVER_FLIGHT => {
                Self::Done
            }
            Self::Tls { wrote: true, read_after } => {
                Self::Tls { wrote: true, read_after: read_after + bytes }
            }
            other => other,
        }
    }

    fn wrote(&mut self) {
        if let Self::Tls { read_after, .. } = *self {
            *self = Self::Tls { wrote: true, read_after };
        }
    }
}

/// An accepted TCP connection that counts against its listener's limits while it is open and
/// fails its reads and writes once its handshake deadline has passed unmet.
pub struct Connection {
    stream: TcpStream,
    info: TcpConnectInfo,
    /// Armed until the handshake is done.
    deadline: Option<Pin<Box<Sleep>>>,
    progress: Progress,
    slot: Slot,
}

impl Connection {
    /// The client's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.info.remote_addr
    }

    /// Called when the stream has no progress to report: has the deadline passed?
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = &mut self.deadline else { return false };
        if deadline.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.deadline = None;
        self.progress = Progress::TimedOut;
        metrics::counter!(HANDSHAKE_TIMEOUTS, "listener" => self.slot.open.name).increment(1);
        tracing::debug!(peer = ?self.info.remote_addr, "handshake timed out: closing the connection");
        true
    }

    fn after_io(&mut self) {
        if matches!(self.progress, Progress::Done) {
            self.deadline = None;
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "connection handshake timed out")
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.progress, Progress::TimedOut) {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.progress.read((buf.filled().len() - before) as u64);
                this.after_io();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Connection {
    /// One write through `write`, with the handshake bookkeeping every write needs: refused once
    /// timed out, progress noted when bytes went out, the deadline checked while blocked.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut TcpStream, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if matches!(self.progress, Progress::TimedOut) {
            return Poll::Ready(Err(Self::timed_out()));
        }
        match write(&mut self.stream, cx) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.progress.wrote();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(Self::timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write_with(cx, |stream, cx| Pin::new(stream).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.write_with(cx, |stream, cx| Pin::new(stream).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_client: usize) -> ConnectionLimits {
        ConnectionLimits { handshake_timeout: Duration::from_secs(5), max_connections, max_per_client }
    }

    #[test]
    fn clients_are_capped_one_by_one_and_all_together_and_forgotten_when_gone() {
        let open = Arc::new(OpenConnections { name: "test", counts: Mutex::default() });
        let limits = limits(3, 2);
        let (a, b, c) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let a1 = open.take(a, &limits).unwrap();
        let a2 = open.take(a, &limits).unwrap();
        assert_eq!(open.take(a, &limits).err(), Some("max_per_client"));
        let b1 = open.take(b, &limits).unwrap();
        assert_eq!(open.take(c, &limits).err(), Some("max_connections"));
        drop(a1);
        let c1 = open.take(c, &limits).unwrap();
        drop((a2, b1, c1));
        assert_eq!(open.clients(), 0, "no entry outlives its connections");
        assert_eq!(open.counts.lock().unwrap().total, 0);
    }

    #[test]
    fn an_ipv6_host_counts_as_one_client_across_its_64() {
        let one = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let same = client_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let other = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, same);
        assert_ne!(one, other);
        let mapped = client_key("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_deadline_lifts_after_the_preface_or_the_clients_tls_answer() {
        let mut plain = Progress::Preface { read: 0 };
        plain.read(20);
        assert!(matches!(plain, Progress::Preface { read: 20 }));
        plain.read(4);
        assert!(matches!(plain, Progress::Done));

        let mut tls = Progress::Tls { wrote: false, read_after: 0 };
        tls.read(517); // a ClientHello, before the server has said anything
        assert!(matches!(tls, Progress::Tls { read_after: 0, .. }));
        tls.wrote();
        tls.read(58);
        assert!(matches!(tls, Progress::Tls { read_after: 58, .. }));
        tls.read(60);
        assert!(matches!(tls, Progress::Done));
    }
}
