//! Mail scenarios: password-reset requests, which must take as long for an unknown email as for an
//! account so that they tell nobody which emails have one, and delivery through the outbox.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use identity::{
    domain::{MailContent, MailKind, NewMail},
    proto::{RequestPasswordResetRequest, auth_service_client::AuthServiceClient},
    store::Store,
};
use tonic::transport::Channel;

#[allow(dead_code)]
#[path = "../../tests/api/smtp.rs"]
mod smtp;

use super::{
    Args, accounts,
    runner::{histogram, median, run},
    server::{Server, channels},
};

/// RequestPasswordReset for existing and for unknown emails, alternating rounds so that neither
/// gets a warmer cache, on a server of its own whose hourly allowance never runs out. The
/// request path is the same single insert for both; the mail worker answers each request
/// meanwhile (for an existing email a token and a message, delivered as an .eml file; for an
/// unknown one only the request's removal), and after each round the scenario waits until it
/// has answered and delivered everything, so that no round starts behind another's backlog.
/// The existing emails are --reset-accounts accounts asked for in turn, as the unknown ones
/// are each new: a handful of accounts asked for by every client at once would mostly find a
/// request pending already. Run at --concurrency and from a single client; prints the median
/// p50 of each, and how long each round's backlog took to drain.
pub(super) async fn reset_timing(args: &Args) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let env = [("IDENTITY_MAIL_MAX_PER_HOUR", "10000"), ("IDENTITY_RESET_REQUESTS_MAX_PENDING", "1000000")];
    let server = Server::start_in(args, 4, &data_dir, &env).await;
    let users = Arc::new(accounts::seed(&server.config, args.reset_accounts.max(1)).await);
    let channels = Arc::new(channels(server.addr, args.connections).await);
    let store = server.store(Duration::from_secs(60)).await;
    for concurrency in [args.concurrency, 1] {
        let mut medians: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..args.rounds.max(1) {
            for (index, existing) in [true, false].into_iter().enumerate() {
                let (channels, users) = (Arc::clone(&channels), Arc::clone(&users));
                let next = Arc::new(AtomicUsize::new(0));
                // Unknown emails are new in every round, as existing ones are asked for again.
                let round = uuid::Uuid::new_v4().simple().to_string();
                let name = if existing { "ResetRequest existing" } else { "ResetRequest unknown" };
                let report = run(name, concurrency, args.duration, move |task, _| {
                    let mut client = AuthServiceClient::new(channels[task % channels.len()].clone());
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let email = if existing {
                        users[n % users.len()].clone()
                    } else {
                        format!("nobody-{n}-{round}@example.com")
                    };
                    async move {
                        client.request_password_reset(RequestPasswordResetRequest { email }).await.map(drop)
                    }
                })
                .await;
                report.print();
                medians[index].push(report.latency.value_at_quantile(0.5) as f64 / 1000.0);
                let drained = drain_reset_backlog(&store).await;
                println!("  backlog of {name} answered and delivered {drained:.2?} after the round");
            }
        }
        let [mut existing, mut unknown] = medians;
        let rounds = existing.len();
        if let (Some(existing), Some(unknown)) = (median(&mut existing), median(&mut unknown)) {
            println!(
                "reset request p50 at concurrency {concurrency} (median of {rounds} rounds): existing {existing:.3} ms, unknown {unknown:.3} ms, ratio {:.2}",
                existing / unknown
            );
        }
    }
    reset_probes(args, &channels, &users, &store).await;
    store.close().await;
}

/// One request at a time, existing and unknown emails interleaved, each sent only once the
/// worker has answered and delivered everything before it: the latency a single enumeration
/// probe sees, without the load of the probes before it (the rounds above measure that).
async fn reset_probes(args: &Args, channels: &[Channel], users: &[String], store: &Store) {
    let mut client = AuthServiceClient::new(channels[0].clone());
    let mut latency = [histogram(), histogram()];
    for n in 0..args.reset_probes.max(1) * 2 {
        let existing = n % 2 == 0;
        let email = if existing {
            users[(n / 2) % users.len()].clone()
        } else {
            format!("probe-{n}-{}@example.com", uuid::Uuid::new_v4().simple())
        };
        drain_reset_backlog(store).await;
        let started = Instant::now();
        client
            .request_password_reset(RequestPasswordResetRequest { email })
            .await
            .expect("a reset request is answered");
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency[usize::from(!existing)].record(micros.max(1)).expect("latency within the histogram's bounds");
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let [existing, unknown] = &latency;
    println!(
        "reset request, one probe at a time ({} each, interleaved): existing p50 {:.3} ms p99 {:.3} ms, unknown p50 {:.3} ms p99 {:.3} ms, p50 ratio {:.2}",
        existing.len(),
        ms(existing, 0.5),
        ms(existing, 0.99),
        ms(unknown, 0.5),
        ms(unknown, 0.99),
        ms(existing, 0.5) / ms(unknown, 0.5)
    );
}

/// Waits until no reset request is pending and no message waits for delivery; returns how long
/// that took.
async fn drain_reset_backlog(store: &Store) -> Duration {
    let started = Instant::now();
    loop {
        let requests = store.pending_reset_requests().await.expect("count reset requests");
        let (messages, _) = store.mail_queue_depth().await.expect("count queued mail");
        if requests == 0 && messages == 0 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the reset backlog drains within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages per second through the outbox to an SMTP server on loopback (the tests' server):
/// --mail-messages are queued while the worker sleeps, then it is woken and timed until the
/// server has accepted every one. The messages carry this run's tag, so that anything else
/// delivered meanwhile (on a shared Postgres database, messages an earlier run left queued) is
/// not counted.
pub(super) async fn delivery(args: &Args) {
    let smtp = smtp::SmtpServer::start().await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = smtp.url();
    let env = [("IDENTITY_SMTP_URL", url.as_str()), ("IDENTITY_MAIL_POLL_INTERVAL", "1h")];
    let server = Server::start_in(args, 4, &data_dir, &env).await;
    let store = server.store(Duration::from_secs(60)).await;
    let now = server.identity.now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let queueing = Instant::now();
    for n in 0..args.mail_messages {
        let mail = NewMail {
            kind: MailKind::VerifyEmail,
            recipient: format!("delivery-{n}-{run}@example.com"),
            content: MailContent {
                name: "Bench User".into(),
                link: Some(format!("https://app.example.com/verify?token=bench-{n}").into()),
                expires_at: Some(now + chrono::TimeDelta::hours(24)),
            },
        };
        store.queue_mail(&mail, now).await.expect("queue a message");
    }
    let queued = queueing.elapsed();
    let started = Instant::now();
    server.identity.mail_queue().wake();
    let ours = |message: &smtp::Received| {
        message.recipients.iter().any(|to| to.ends_with(&format!("-{run}@example.com")))
    };
    let received = smtp.wait_for_matching(args.mail_messages, Duration::from_secs(600), ours).await.len();
    let elapsed = started.elapsed();
    println!(
        "delivery: {received} of {} messages through the outbox to SMTP on loopback in {elapsed:.2?}: {:.0} messages/s (queued one transaction each in {queued:.2?}: {:.0}/s)",
        args.mail_messages,
        received as f64 / elapsed.as_secs_f64(),
        args.mail_messages as f64 / queued.as_secs_f64()
    );
    store.close().await;
}
