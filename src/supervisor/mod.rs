//! Keeps the background tasks running: each runs in a task of its own, and when one panics or
//! returns before a stop was asked for, the failure is logged and counted, whatever the task
//! vouched for is withdrawn (for most, readiness: see [`Supervised::failed`]), and the task is
//! started again after a backoff. Restarts are counted per task in
//! `identity_task_restarts_total{task}`, whose label set is [`TaskName`]'s variants.

#[cfg(feature = "test-helpers")]
mod faults;

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::{
    sync::watch,
    task::{JoinError, JoinSet},
    time::Instant,
};

#[cfg(feature = "test-helpers")]
pub use faults::{Fault, Faults};

/// Every supervised task, by the name logs and the restart metric use. A closed set, so the
/// metric's label set stays bounded; a new kind of background work adds a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskName {
    /// Follows revocations made by other replicas and processes (`service::RevocationSync`).
    RevocationSync,
    /// Keeps the readiness entries of grpc.health.v1 true (`health::HealthWatcher`).
    HealthWatcher,
    /// Deletes sessions and login windows nobody can use any more (`service::Purge`).
    Purge,
    /// Samples the database pool for the metrics (`metrics::PoolSampler`).
    PoolSampler,
    /// Answers reset requests and delivers queued mail (`mail::OutboxWorker`).
    MailOutbox,
    /// Publishes new user events to this replica's subscribers (`service::EventSync`).
    EventSync,
}

impl TaskName {
    pub const ALL: [TaskName; 6] = [
        Self::RevocationSync,
        Self::HealthWatcher,
        Self::Purge,
        Self::PoolSampler,
        Self::MailOutbox,
        Self::EventSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RevocationSync => "revocation_sync",
            Self::HealthWatcher => "health_watcher",
            Self::Purge => "purge",
            Self::PoolSampler => "pool_sampler",
            Self::MailOutbox => "mail_outbox",
            Self::EventSync => "event_sync",
        }
    }
}

/// Work that runs beside the RPCs for the life of the server.
pub trait Supervised: Send + Sync + 'static {
    fn name(&self) -> TaskName;

    /// One run, until `stop` becomes true; returning before that counts as a failure. Called
    /// again for each restart, so a run starts from what it can re-read, not from where the
    /// last one stopped.
    fn run(&self, stop: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static;

    /// Withdraws what a failed run vouched for (a health entry, a "synchronised" flag) before
    /// it is restarted. Nothing by default: a task no entry depends on is only logged and
    /// counted.
    fn failed(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Waits between restarts of a task that keeps failing: from 100 ms, doubling, each stretched
/// by a random 0-100 % so that replicas do not restart in lockstep; at most 5 s.
const RESTART: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_millis(2500))
    .with_jitter()
    .without_max_times();
const RESTART_CEILING: Duration = Duration::from_secs(5);
/// A run that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised tasks of one server, joined (or aborted, with their runs) on the way out.
pub struct Supervisor {
    tasks: JoinSet<()>,
    stop: watch::Receiver<bool>,
    #[cfg(feature = "test-helpers")]
    faults: Faults,
}

impl Supervisor {
    /// Tasks started here end once `stop` becomes true.
    pub fn new(stop: watch::Receiver<bool>, #[cfg(feature = "test-helpers")] faults: Faults) -> Self {
        for task in TaskName::ALL {
            // Present from the start, so that an alert on its rate has a series to look at.
            metrics::counter!(crate::metrics::TASK_RESTARTS, "task" => task.as_str()).increment(0);
        }
        Self {
            tasks: JoinSet::new(),
            stop,
            #[cfg(feature = "test-helpers")]
            faults,
        }
    }

    pub fn spawn(&mut self, task: impl Supervised) {
        let stop = self.stop.clone();
        #[cfg(feature = "test-helpers")]
        let faults = self.faults.clone();
        self.tasks.spawn(async move {
            let name = task.name();
            let mut backoff = RESTART.build();
            loop {
                let started = Instant::now();
                // A set of one, so that dropping this supervisor (aborted at the end of the stop
                // grace) aborts the run too.
                let mut run = JoinSet::new();
                #[cfg(feature = "test-helpers")]
                run.spawn(faults.inject_into(name, task.run(stop.clone())));
                #[cfg(not(feature = "test-helpers"))]
                run.spawn(task.run(stop.clone()));
                let outcome = run.join_next().await;
                if *stop.borrow() {
                    return;
                }
                let cause = match outcome {
                    Some(Err(error)) => describe(error),
                    Some(Ok(())) | None => "returned".to_owned(),
                };
                tracing::error!(task = name.as_str(), %cause, "background task failed: restarting it");
                metrics::counter!(crate::metrics::TASK_RESTARTS, "task" => name.as_str()).increment(1);
                task.failed().await;
                #[cfg(feature = "test-helpers")]
                if !faults.hold_if_injected(name, stop.clone()).await {
                    return;
                }
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = RESTART.build();
                }
                let delay = backoff.next().unwrap_or(RESTART_CEILING);
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stopping| *stopping) => return,
                }
            }
        });
    }

    /// Waits for every task to end (after a stop was requested). Dropping the future aborts
    /// them all, runs included.
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// "panicked: <message>" or "was cancelled", for the log.
fn describe(error: JoinError) -> String {
    if !error.is_panic() {
        return "was cancelled".to_owned();
    }
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("panicked: {message}")
}
