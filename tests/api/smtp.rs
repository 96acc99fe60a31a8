//! A small SMTP server for the tests, on a real TCP port: it speaks enough of RFC 5321 for
//! lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps every message it accepts, and can
//! be stopped (every connection closed, as a crashed server would) and started again on the
//! same port.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::{JoinHandle, JoinSet},
};

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    pub recipients: Vec<String>,
    /// The message as sent, dot-stuffing undone.
    pub data: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        let headers = self.data.split("\r\n\r\n").next()?;
        headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The first `https://…` link in the plain-text part.
    pub fn link(&self) -> Option<String> {
        let start = self.data.find("https://")?;
        let link: String =
            self.data[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
        Some(link)
    }

    /// The `token` query parameter of the link.
    pub fn token(&self) -> Option<String> {
        let link = self.link()?;
        Some(link.split("token=").nth(1)?.split('&').next()?.to_owned())
    }
}

#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Received>>,
    arrived: Notify,
}

pub struct SmtpServer {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: Option<JoinHandle<()>>,
}

impl SmtpServer {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP");
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Inbox::default());
        let task = Some(tokio::spawn(serve(listener, Arc::clone(&inbox))));
        Self { addr, inbox, task }
    }

    /// A port nothing listens on, for a server that is down from the start: start, note, stop.
    pub async fn down() -> Self {
        let mut server = Self::start().await;
        server.stop().await;
        server
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Stops listening and drops every open connection.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, keeping what arrived before.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind SMTP");
        self.task = Some(tokio::spawn(serve(listener, Arc::clone(&self.inbox))));
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.messages.lock().unwrap().clone()
    }

    /// Waits until at least `count` messages have arrived (at most `within`), then returns all.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        self.wait_for_matching(count, within, |_| true).await
    }

    /// Waits until at least `count` messages with this subject have arrived (at most `within`),
    /// then returns those, in order of arrival.
    pub async fn wait_for_subject(&self, subject: &str, count: usize, within: Duration) -> Vec<Received> {
        self.wait_for_matching(count, within, |m| m.header("Subject") == Some(subject)).await
    }

    /// Waits until at least `count` messages that are `wanted` have arrived (at most `within`),
    /// then returns those, in order of arrival.
    pub async fn wait_for_matching(
        &self,
        count: usize,
        within: Duration,
        wanted: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let matching = || self.received().into_iter().filter(|m| wanted(m)).collect::<Vec<_>>();
        let wait = async {
            loop {
                let arrived = self.inbox.arrived.notified();
                if matching().len() >= count {
                    return;
                }
                arrived.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        matching()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, inbox: Arc<Inbox>) {
    // Owned here, so aborting this task closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(session(stream, Arc::clone(&inbox)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn session(stream: TcpStream, inbox: Arc<Inbox>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-test.local\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if command.starts_with("MAIL FROM") {
            recipients.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..].trim().trim_start_matches('<');
            recipients.push(address.split('>').next().unwrap_or_default().to_owned());
            b"250 OK\r\n"
        } else if command == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            inbox
                .messages
                .lock()
                .unwrap()
                .push(Received { recipients: std::mem::take(&mut recipients), data });
            inbox.arrived.notify_waiters();
            b"250 queued\r\n"
        } else if command.starts_with("RSET") {
            recipients.clear();
            b"250 OK\r\n"
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}
