//! Fault injection for tests (the `test-helpers` feature only, never in a release build): make
//! a supervised task panic or return as a bug would, and hold its restart until the test has
//! looked at what the failure did.

use std::{future::Future, sync::Arc};

use tokio::sync::watch;

use super::TaskName;

/// How an injected failure ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Panic,
    /// Returns as if the work were done, before any stop was asked for.
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running,
    /// Asked for by a test; the run picks it up.
    Inject(Fault),
    /// The run has failed as asked.
    Injected,
    /// The supervisor has dealt with the failure and waits before restarting.
    Held,
    /// The test lets the supervisor restart the task.
    Released,
}

/// One stage per task; clones share them.
#[derive(Debug, Clone)]
pub struct Faults {
    stages: Arc<[watch::Sender<Stage>; TaskName::ALL.len()]>,
}

impl Default for Faults {
    fn default() -> Self {
        Self { stages: Arc::new(std::array::from_fn(|_| watch::Sender::new(Stage::Running))) }
    }
}

impl Faults {
    fn stage(&self, task: TaskName) -> &watch::Sender<Stage> {
        let index = TaskName::ALL.iter().position(|t| *t == task).unwrap_or(0);
        &self.stages[index]
    }

    /// Makes the running `task` fail with `fault`; returns once the supervisor has logged and
    /// counted the failure and withdrawn what the task vouched for. The task stays down until
    /// [`Faults::restart`].
    pub async fn fail(&self, task: TaskName, fault: Fault) {
        let stage = self.stage(task);
        let mut seen = stage.subscribe();
        stage.send_replace(Stage::Inject(fault));
        let _ = seen.wait_for(|stage| *stage == Stage::Held).await;
    }

    /// Lets a task failed by [`Faults::fail`] restart; returns once its new run has started.
    pub async fn restart(&self, task: TaskName) {
        let stage = self.stage(task);
        let mut seen = stage.subscribe();
        stage.send_replace(Stage::Released);
        let _ = seen.wait_for(|stage| *stage == Stage::Running).await;
    }

    /// `run`, failing when a test asks.
    pub(super) fn inject_into(
        &self,
        task: TaskName,
        run: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let stage = self.stage(task).clone();
        stage.send_if_modified(|current| {
            let released = *current == Stage::Released;
            if released {
                *current = Stage::Running;
            }
            released
        });
        let mut asked = stage.subscribe();
        async move {
            let fault = tokio::select! {
                () = run => return,
                asked = asked.wait_for(|stage| matches!(stage, Stage::Inject(_))) => match asked.as_deref() {
                    Ok(Stage::Inject(fault)) => *fault,
                    _ => return,
                },
            };
            stage.send_replace(Stage::Injected);
            match fault {
                #[allow(clippy::panic, reason = "the fault asked for is a panic")]
                Fault::Panic => panic!("fault injected by a test"),
                Fault::Return => {}
            }
        }
    }

    /// After a failure: if a test injected it, tell the test and wait for its
    /// [`Faults::restart`]. False when a stop came first.
    pub(super) async fn hold_if_injected(&self, task: TaskName, mut stop: watch::Receiver<bool>) -> bool {
        let stage = self.stage(task);
        if *stage.borrow() != Stage::Injected {
            return true;
        }
        let mut released = stage.subscribe();
        stage.send_replace(Stage::Held);
        tokio::select! {
            _ = released.wait_for(|stage| *stage == Stage::Released) => true,
            _ = stop.wait_for(|stopping| *stopping) => false,
        }
    }
}
