//! `list-users`: AdminService.ListUsers over a million users in Postgres (`--database-url`,
//! created when missing). Seeds the users up to `--list-users`, resumably (chunks of
//! `INSERT ... SELECT FROM generate_series`, each user's data derived from its number, so a later
//! run adds only what is missing; a tenth get roles, in three sizes; the tables are vacuumed and
//! analyzed), then for each single filter times pages of 100 through the real server: the first
//! `--list-pages` pages of the listing, and as many after skipping `--list-deep` users (keyset
//! pages cost the same at any depth). Prints p50/p99 per filter against the 20 ms target, each
//! filter's plan nodes (EXPLAIN ANALYZE of the statement the store runs, for a first and a deep
//! page) with whether they are all index scans, and the full plans at the end.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use identity::{
    domain::{EmailPrefix, Permission, Role, ServiceKeyName, UserId},
    proto::{ListUsersRequest, User, admin_service_client::AdminServiceClient},
    store::{Limits, Store, UserCursor, UserFilter},
};
use secrecy::ExposeSecret;
use tonic::transport::Channel;

use super::{
    Args,
    runner::histogram,
    server::{Server, channels},
};

/// The target the issue sets for a page of 100 with any one filter.
const TARGET_P99_MS: f64 = 20.0;
/// Every seeded address ends so.
const SEED_DOMAIN: &str = "@seed.example";

struct Case {
    name: &'static str,
    request: ListUsersRequest,
    filter: UserFilter,
}

fn cases(created: (DateTime<Utc>, DateTime<Utc>)) -> Vec<Case> {
    let prefix = |p: &str| (EmailPrefix::parse("email_prefix", p).unwrap(), p.to_owned());
    let role = |r: &str| (Role::parse("role", r).unwrap(), r.to_owned());
    let mut cases =
        vec![Case { name: "none", request: ListUsersRequest::default(), filter: UserFilter::default() }];
    for (name, p) in
        [("email_prefix 1 char", "a"), ("email_prefix 2 chars", "ab"), ("email_prefix 4 chars", "abcd")]
    {
        let (parsed, text) = prefix(p);
        cases.push(Case {
            name,
            request: ListUsersRequest { email_prefix: text, ..Default::default() },
            filter: UserFilter { email_prefix: Some(parsed), ..Default::default() },
        });
    }
    for (name, active) in [("active = true", true), ("active = false (10%)", false)] {
        cases.push(Case {
            name,
            request: ListUsersRequest { active: Some(active), ..Default::default() },
            filter: UserFilter { active: Some(active), ..Default::default() },
        });
    }
    for (name, r) in [("role 10%", "billing.read"), ("role 1%", "bench.some"), ("role 0.1%", "bench.rare")] {
        let (parsed, text) = role(r);
        cases.push(Case {
            name,
            request: ListUsersRequest { role: text, ..Default::default() },
            filter: UserFilter { role: Some(parsed), ..Default::default() },
        });
    }
    let (from, before) = created;
    cases.push(Case {
        name: "created in 30 days",
        request: ListUsersRequest {
            created_after: Some(timestamp(from)),
            created_before: Some(timestamp(before)),
            ..Default::default()
        },
        filter: UserFilter { created_from: Some(from), created_before: Some(before), ..Default::default() },
    });
    cases
}

pub(super) async fn list_users(args: &Args) {
    let Some(url) = args.database_url.as_deref().filter(|url| url.starts_with("postgres")) else {
        println!("list-users: skipped, it needs --database-url postgres://...");
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(args, 4, &data_dir, &[]).await;
    let limits = Limits {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(60),
        statement_timeout: Duration::from_secs(60),
    };
    let store = Store::open(server.config.database_url.expose_secret(), limits).await.expect("bench store");
    seed(url, args.list_users).await;

    let name = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
    let key = server
        .identity
        .service_keys()
        .create(&ServiceKeyName::parse("name", &name).unwrap(), &[Permission::Admin].into_iter().collect())
        .await
        .expect("key stored")
        .expect("name free");
    let client = AdminServiceClient::new(channels(server.addr, 1).await.remove(0));
    let key = key.expose().to_owned();
    println!(
        "list-users: {} users seeded, pages of 100, {} pages from the start and {} after skipping {} users per filter; target p99 < {TARGET_P99_MS} ms",
        args.list_users, args.list_pages, args.list_pages, args.list_deep
    );
    let mut plans = Vec::new();
    for case in cases(created_window(args.list_users)) {
        let first = time_pages(&client, &key, &case.request, String::new(), args.list_pages).await;
        let (token, skipped, last) = skip(&client, &key, &case.request, args.list_deep).await;
        let deep = if token.is_empty() {
            None
        } else {
            Some(time_pages(&client, &key, &case.request, token, args.list_pages).await)
        };
        let mut line = format!("list-users {:<22} first {}", case.name, summary(&first));
        match &deep {
            Some(deep) => line += &format!(" | after {skipped:>7} users {}", summary(deep)),
            None => line += &format!(" | the listing ends after {skipped} users: no deep pages"),
        }
        println!("{line}");
        let mut explained = vec![("first page", store.explain_list_users(&case.filter, None, 101).await)];
        if let Some(after) = last.as_ref().and_then(cursor_of).filter(|_| deep.is_some()) {
            explained.push(("deep page", store.explain_list_users(&case.filter, Some(after), 101).await));
        }
        for (which, plan) in explained {
            if let Ok(lines) = &plan {
                let (nodes, indexed, time) = plan_nodes(lines);
                let verdict = if indexed { "index scans only" } else { "NOT ONLY INDEX SCANS" };
                println!("    {which:<10} {verdict}, executed in {time}: {nodes}");
            }
            plans.push((case.name, which, plan));
        }
    }
    for (name, which, plan) in plans {
        println!("\nlist-users plan, {name}, {which}:");
        match plan {
            Ok(lines) => lines.iter().for_each(|line| println!("    {line}")),
            Err(error) => println!("    (EXPLAIN failed: {error})"),
        }
    }
    store.close().await;
}

/// Seeded users are numbered from 1; a user's id, address, creation time, activity and role
/// follow from its number alone, so a seed stopped anywhere is finished by the next run, which
/// adds only the chunks that are missing.
const SEED_CHUNK: u32 = 50_000;
/// Seeded user n was created `n` minutes after this instant (1,000,000 users span 694 days).
const SEED_EPOCH: &str = "2024-01-01T00:00:00Z";

fn seed_epoch() -> DateTime<Utc> {
    SEED_EPOCH.parse().expect("a valid instant")
}

/// A 30-day window in the middle of `count` seeded users' creation times (about 43,000 users
/// at one a minute).
fn created_window(count: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let middle = seed_epoch() + TimeDelta::minutes(i64::from(count / 2));
    (middle - TimeDelta::days(15), middle + TimeDelta::days(15))
}

/// The seeded user `$1`'s id (a random-looking v4-shaped uuid, as the service's are).
const SEED_ID: &str = "md5('seed-user-' || $1::bigint)::uuid";
/// Seeds users `$1..=$2`: addresses start with 8 hex digits of md5(n), so a prefix of k hex
/// digits matches about count / 16^k of them; creation times are a minute apart from `$3`; one
/// in ten is deactivated. A row already there (by id or address) is left alone.
const SEED_USERS: &str =
    "INSERT INTO users (id, email, email_lower, email_skeleton, full_name, password_hash,
         is_active, created_at, updated_at)
     SELECT md5('seed-user-' || n)::uuid, e, e, e, 'Seeded User', '!', n % 10 <> 0, t, t
     FROM (SELECT n, substr(md5(n::text), 1, 8) || '.' || n || $4 AS e,
                  $3::timestamptz + n * interval '1 minute' AS t
           FROM generate_series($1::bigint, $2::bigint) AS n) s
     ON CONFLICT DO NOTHING";
/// Gives about a tenth of users `$1..=$2` a role, by a hash of their number: 10% billing.read,
/// 1% bench.some, 0.1% bench.rare (only users that exist: a leftover address may have kept an
/// id out).
const SEED_ROLES: &str = "INSERT INTO user_roles (user_id, role, granted_at)
     SELECT u.id, CASE WHEN h < 1 THEN 'bench.rare' WHEN h < 11 THEN 'bench.some' ELSE 'billing.read' END,
            u.created_at
     FROM (SELECT n, ('x' || substr(md5('seed-role-' || n), 1, 8))::bit(32)::bigint % 1000 AS h
           FROM generate_series($1::bigint, $2::bigint) AS n) s
     JOIN users u ON u.id = md5('seed-user-' || s.n)::uuid
     WHERE s.h < 111
     ON CONFLICT DO NOTHING";

/// Seeds users 1..=`count` in chunks of [`SEED_CHUNK`], one transaction each (a chunk's users
/// and roles together), skipping the chunks already there (their last user exists), then
/// VACUUM ANALYZE when anything was added or the tables have changed since their last vacuum,
/// so index-only scans and the planner's estimates are what a settled production table has.
async fn seed(url: &str, count: u32) {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await.expect("connect");
    let started = Instant::now();
    let (mut added, mut present) = (0u64, 0u32);
    let mut first = 1u32;
    while first <= count {
        let last = first.saturating_add(SEED_CHUNK - 1).min(count);
        let done: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM users WHERE id = {SEED_ID})"))
                .bind(i64::from(last))
                .fetch_one(&pool)
                .await
                .expect("look for the chunk's last user");
        if done {
            present += last - first + 1;
        } else {
            let mut tx = pool.begin().await.expect("begin");
            // One commit per chunk: nothing here needs each statement flushed on its own.
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.expect("set");
            let users = sqlx::query(SEED_USERS)
                .bind(i64::from(first))
                .bind(i64::from(last))
                .bind(seed_epoch())
                .bind(SEED_DOMAIN)
                .execute(&mut *tx)
                .await
                .expect("seed users");
            sqlx::query(SEED_ROLES)
                .bind(i64::from(first))
                .bind(i64::from(last))
                .execute(&mut *tx)
                .await
                .expect("seed roles");
            tx.commit().await.expect("commit a chunk");
            added += users.rows_affected();
            println!("list-users: seeded users {first}..={last} ({:.1?} so far)", started.elapsed());
        }
        first = last.saturating_add(1);
        if last == u32::MAX {
            break;
        }
    }
    const UNSETTLED: &str =
        "SELECT COALESCE(bool_or(n_ins_since_vacuum + n_dead_tup + n_mod_since_analyze > 1000), false)
         FROM pg_stat_user_tables WHERE relname IN ('users', 'user_roles')";
    let unsettled: bool = sqlx::query_scalar(UNSETTLED).fetch_one(&pool).await.expect("table statistics");
    if added > 0 || unsettled {
        for table in ["users", "user_roles"] {
            sqlx::query(&format!("VACUUM ANALYZE {table}")).execute(&pool).await.expect("vacuum");
        }
    }
    println!(
        "list-users: {present} seeded users were there, {added} added, vacuumed: {} ({:.1?})",
        added > 0 || unsettled,
        started.elapsed()
    );
    pool.close().await;
}

/// A plan's nodes, outermost first (`Sort > Nested Loop > ... > Index Only Scan using X on
/// users > ...`), whether every table is read through an index (no `Seq Scan`, no `Bitmap Heap
/// Scan` reading pages in bulk), and the execution time the database reported.
fn plan_nodes(lines: &[String]) -> (String, bool, &str) {
    let nodes: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter_map(|(n, line)| {
            let line = line.trim_start();
            let node = if n == 0 { line } else { line.strip_prefix("->")?.trim_start() };
            let end = [" (actual", " (never"].iter().filter_map(|at| node.find(at)).min();
            Some(&node[..end.unwrap_or(node.len())])
        })
        .collect();
    let indexed =
        !nodes.iter().any(|node| node.starts_with("Seq Scan") || node.starts_with("Bitmap Heap Scan"));
    let time = lines.iter().find_map(|line| line.trim().strip_prefix("Execution Time: ")).unwrap_or("?");
    (nodes.join(" > "), indexed, time)
}

/// Times `pages` consecutive pages of 100 from `token`, in microseconds.
async fn time_pages(
    client: &AdminServiceClient<Channel>,
    key: &str,
    template: &ListUsersRequest,
    mut token: String,
    pages: usize,
) -> hdrhistogram::Histogram<u64> {
    let mut latency = histogram();
    for _ in 0..pages {
        let request = ListUsersRequest { page_size: 100, page_token: token, ..template.clone() };
        let started = Instant::now();
        let page = client.clone().list_users(bearer(request, key)).await.expect("ListUsers").into_inner();
        latency.saturating_record(started.elapsed().as_micros() as u64);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    latency
}

/// Pages of 1000 (a page token does not depend on the page size) until `users` are behind, or
/// halfway through the listing when it holds fewer (so every filter matching more than a few
/// pages gets deep pages): the token to go on from (empty when there is no such page), how many
/// were skipped, and the last of them.
async fn skip(
    client: &AdminServiceClient<Channel>,
    key: &str,
    template: &ListUsersRequest,
    users: u32,
) -> (String, u32, Option<User>) {
    // Where each page of 1000 ended: (token, users behind, last user).
    let mut checkpoints: Vec<(String, u32, Option<User>)> = Vec::new();
    let (mut token, mut skipped) = (String::new(), 0);
    while skipped < users {
        let request = ListUsersRequest { page_size: 1000, page_token: token, ..template.clone() };
        let page = client.clone().list_users(bearer(request, key)).await.expect("ListUsers").into_inner();
        skipped += page.users.len() as u32;
        token = page.next_page_token;
        checkpoints.push((token.clone(), skipped, page.users.last().cloned()));
        if token.is_empty() {
            break;
        }
    }
    if token.is_empty() {
        // The listing ended: go back to the checkpoint nearest its middle.
        if let Some(middle) = checkpoints.iter().rev().find(|(_, behind, _)| *behind <= skipped / 2) {
            return middle.clone();
        }
        return (String::new(), skipped, None);
    }
    checkpoints.pop().unwrap_or((token, skipped, None))
}

fn cursor_of(user: &User) -> Option<UserCursor> {
    let at = user.created_at.as_ref()?;
    let created_at = DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)?;
    Some(UserCursor { created_at, id: user.id.parse::<UserId>().ok()? })
}

/// `pages: p50 .. p99 .. max ..` and whether the p99 meets the target.
fn summary(latency: &hdrhistogram::Histogram<u64>) -> String {
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let verdict = if ms(0.99) < TARGET_P99_MS { "ok" } else { "MISSED" };
    format!(
        "{:>4} pages: p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms {verdict:<6}",
        latency.len(),
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0
    )
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

/// `message` with `authorization: Bearer KEY`.
pub(super) fn bearer<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii key"));
    request
}
