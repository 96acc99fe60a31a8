//! The Postgres databases tests make, and their removal: a test's database is dropped as soon
//! as its last handle is (the test has ended, passed or panicked), and the first database a run
//! makes finds those of earlier runs that were killed (Ctrl-C, a timeout) and drops them too.
//!
//! Why this shape: `DROP DATABASE` requests an immediate checkpoint and waits for it (0.1-0.3 s
//! on a quiet machine, seconds when the disk is busy), so no test waits for its drop: each runs
//! on a thread of its own (`Drop` cannot await, and the test's runtime is shutting down), ending
//! the connections the test's servers may still hold, and the binary waits for the drops still
//! running only as it exits (libtest has no hook at its end but the process's exit: an `atexit`
//! handler, run both when `main` returns and on `process::exit`). Dropping everything at exit
//! instead, concurrently, was no faster (the drops share few checkpoints) and left the run
//! hanging for 10-40 s after its last test. A killed run drops nothing; its databases carry its
//! pid, and the next run drops those whose process is gone, never one of a test binary still
//! running.

use std::{
    sync::{Arc, Mutex, Once, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use identity::store::{Limits, Store};

/// Every test database's name starts so (`.ci/run` drops what any earlier run left).
const PREFIX: &str = "identity_test_";

/// A database made for a test, named `identity_test_<pid>_<uuid>`. Shared by every server and
/// handle on it (replicas, a restarted server); dropping the last drops the database.
pub struct TemporaryDatabase {
    admin_url: String,
    name: String,
}

impl TemporaryDatabase {
    /// A fresh, empty database on the test Postgres server and its URL; `None` when
    /// `IDENTITY_TEST_POSTGRES_URL` is not set.
    pub async fn create() -> Option<(String, Arc<Self>)> {
        static LEFTOVERS_FOUND: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let admin_url = std::env::var("IDENTITY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
        let name = format!("{PREFIX}{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let admin =
            Store::connect(&admin_url, 1, Duration::from_secs(10)).await.expect("test Postgres reachable");
        LEFTOVERS_FOUND.get_or_init(|| drop_left_by_ended_runs(&admin, &admin_url)).await;
        admin.create_database(&name).await.expect("create test database");
        admin.close().await;
        let url = super::with_database(&admin_url, &name);
        Some((url, Arc::new(Self { admin_url, name })))
    }
}

impl Drop for TemporaryDatabase {
    fn drop(&mut self) {
        drop_in_background(&self.admin_url, vec![std::mem::take(&mut self.name)], Connections::End);
    }
}

/// Drops the test databases of processes that no longer run, unless someone is connected to
/// them (the pid says whose a database was on this machine only, and a run elsewhere may share
/// the server). Older names without a pid are left to `.ci/run`: they may be a running older
/// test binary's.
async fn drop_left_by_ended_runs(admin: &Store, admin_url: &str) {
    match admin.databases_starting_with(PREFIX).await {
        Ok(names) => {
            let left: Vec<String> = names.into_iter().filter(|name| left_by_ended_process(name)).collect();
            if !left.is_empty() {
                drop_in_background(admin_url, left, Connections::Refuse);
            }
        }
        Err(error) => eprintln!("test databases of earlier runs were not looked for: {error}"),
    }
}

/// How a database is dropped.
#[derive(Clone, Copy)]
enum Connections {
    /// Any still open (the servers of a test that has just ended) are ended.
    End,
    /// Any open make the drop fail.
    Refuse,
}

/// Drops `names` on a thread of its own, with a runtime of its own; waited for at exit.
fn drop_in_background(admin_url: &str, names: Vec<String>, connections: Connections) {
    let admin_url = admin_url.to_owned();
    let thread = std::thread::Builder::new().name("drop-test-databases".into()).spawn(move || {
        let dropped = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(drop_concurrently(&admin_url, names, connections)),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = dropped {
            eprintln!("test databases left on the server (the next run drops them): {error}");
        }
    });
    match thread {
        Ok(thread) => wait_at_exit(thread),
        Err(error) => eprintln!("test databases left on the server (the next run drops them): {error}"),
    }
}

/// Drops `names` on the server at `admin_url`, several at a time (concurrent drops can share a
/// checkpoint). A database that cannot be dropped is reported and left (to the next run, or
/// `.ci/run`).
async fn drop_concurrently(
    admin_url: &str,
    names: Vec<String>,
    connections: Connections,
) -> Result<(), String> {
    // A drop waits for a checkpoint: longer than a query may take on a loaded machine.
    let limits = Limits {
        max_connections: u32::try_from(names.len()).unwrap_or(u32::MAX).clamp(1, 16),
        acquire_timeout: Duration::from_secs(120),
        statement_timeout: Duration::from_secs(60),
    };
    let admin = Store::open(admin_url, limits).await.map_err(|error| error.to_string())?;
    let mut drops = tokio::task::JoinSet::new();
    for name in names {
        let admin = admin.clone();
        drops.spawn(async move {
            let dropped = match connections {
                Connections::End => admin.drop_database(&name).await,
                Connections::Refuse => admin.drop_database_unless_in_use(&name).await,
            };
            (name, dropped)
        });
    }
    while let Some(dropped) = drops.join_next().await {
        if let Ok((name, Err(error))) = dropped {
            eprintln!("test database {name} left on the server: {error}");
        }
    }
    admin.close().await;
    Ok(())
}

/// The threads dropping databases, joined at exit so that the last tests' drops finish before
/// the run ends. Process-wide because the exit is.
static RUNNING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn wait_at_exit(thread: JoinHandle<()>) {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a function that takes nothing and cannot unwind (it never panics).
        unsafe { libc::atexit(join_running) };
    });
    let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    running.retain(|thread| !thread.is_finished());
    running.push(thread);
}

extern "C" fn join_running() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(PoisonError::into_inner));
    for thread in running {
        let _ = thread.join();
    }
}

/// Whether `name` is `identity_test_<pid>_...` of a process that no longer runs.
fn left_by_ended_process(name: &str) -> bool {
    let pid =
        name.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')).map(|(pid, _)| pid.parse::<u32>());
    let Some(Ok(pid)) = pid else { return false };
    // 0 would ask about this process's group, not a process.
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let asked = unsafe { libc::kill(pid, 0) };
    asked != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}
