//! The threads that run bcrypt, and how long a job waits for one. Whose job goes next and
//! whose is shed when the queue is full is the [`queue`]'s business.
//!
//! **Waiting**: a job waits for a thread at most as long as the threads take to clear `queue`
//! jobs (one job's time when `queue` is 0), and never past the point where its caller's deadline
//! leaves no time to hash; then it is taken out and its caller shed, unless it is next in line:
//! then it waits while a thread is free (one the OS has not woken yet) and for one job's time
//! more, since the next thread to finish takes it. The queue may hold more
//! jobs than `queue` (up to `max_pending`): those beyond are the ones that will be shed unless
//! earlier ones go, and they wait rather than being refused at once. A client that resends at
//! once on RESOURCE_EXHAUSTED is therefore parked (no CPU) for that long instead of spinning, so
//! cheap rejections cannot crowd the hashing threads off the cores.

mod queue;

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

pub use queue::FAILURE_TURNS;
use queue::{State, Tag};
use tokio::sync::oneshot;

use crate::{
    clients::{ClientKey, Requester},
    metrics::{HASH_POOL_BUSY, HASH_POOL_REJECTED},
};

/// Jobs that may wait, per slot (thread or configured queue place), and a floor and ceiling.
const PENDING_PER_SLOT: usize = 4;
const MIN_PENDING: usize = 64;
const MAX_PENDING: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the hashing queue is full")]
    Shed,
    #[error("the hashing threads have stopped")]
    Stopped,
}

/// A job reports the extra turns its client owes through the callback before it answers its
/// caller, so a caller that sends its next request at once finds the accounts settled.
type Job = Box<dyn FnOnce(&mut dyn FnMut(u64)) + Send>;

/// The pool. Clones share it; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct HashPool {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    threads: usize,
    queue: usize,
    /// Longest a job waits for a thread.
    max_wait: Duration,
    /// How long one job takes: a caller whose deadline is closer than this is not queued.
    one_job: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.work.notify_all();
    }
}

struct Shared {
    state: Mutex<State<Job>>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State<Job>> {
        // No code holding the lock can panic half-way through a change; take the state as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the queue looks like now (for tests and the load bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub queued: usize,
    pub running: usize,
    pub clients_tracked: usize,
}

impl HashPool {
    /// Starts `threads` threads at a lower OS priority. `queue` and `one_job` (how long one job
    /// takes) set how long a job may wait, as the module says.
    pub fn start(threads: usize, queue: usize, one_job: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let max_pending = ((threads + queue) * PENDING_PER_SLOT).clamp(MIN_PENDING, MAX_PENDING);
        Self::start_with(threads, queue, one_job, max_pending)
    }

    fn start_with(
        threads: usize,
        queue: usize,
        one_job: Duration,
        max_pending: usize,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { state: Mutex::new(State::new(max_pending)), work: Condvar::new() });
        let rounds = (queue as f64 / threads as f64).ceil().max(1.0);
        let handle = Handle {
            shared: Arc::clone(&shared),
            threads,
            queue,
            max_wait: one_job.mul_f64(rounds),
            one_job,
        };
        for index in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(format!("bcrypt-{index}")).spawn(move || work(&shared))?;
        }
        Ok(Self { handle: Arc::new(handle) })
    }

    pub fn threads(&self) -> usize {
        self.handle.threads
    }

    /// How long one job takes, as the pool was told.
    pub fn one_job(&self) -> Duration {
        self.handle.one_job
    }

    /// The configured queue length (see the module on what it sets).
    pub fn queue_capacity(&self) -> usize {
        self.handle.queue
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.handle.shared.lock();
        PoolStats { queued: state.queued(), running: state.running, clients_tracked: state.clients_tracked() }
    }

    /// True when a job from `client` would be refused at once: the queue at its bound and no
    /// place it may take (see [`queue`]). Lets a request be shed before it does any other work
    /// (validation, database round trips). A racy hint; `run` has the final word.
    pub fn would_shed(&self, client: &ClientKey) -> bool {
        self.handle.shared.lock().would_shed(client)
    }

    /// Runs `work` on a pool thread for `requester` and returns its result, charging the client
    /// `extra_turns(&result)` more turns. Waits in turn as the module says; if the caller stops
    /// waiting (deadline, closed connection), its job is taken out of the queue.
    pub async fn run<T: Send + 'static>(
        &self,
        requester: &Requester,
        work: impl FnOnce() -> T + Send + 'static,
        extra_turns: fn(&T) -> u64,
    ) -> Result<T, PoolError> {
        let now = Instant::now();
        // The last moment a job can start and still answer within its caller's deadline.
        let latest_start =
            requester.deadline.map(|deadline| deadline.checked_sub(self.handle.one_job).unwrap_or(now));
        let before_latest_start = |at: Instant| latest_start.map_or(at, |latest| at.min(latest));
        let mut give_up_at = before_latest_start(now + self.handle.max_wait);
        if give_up_at <= now {
            metrics::counter!(HASH_POOL_REJECTED).increment(1);
            return Err(PoolError::Shed);
        }
        let (reply, mut outcome) = oneshot::channel();
        // A traced request sees the wait for a thread and the run as spans of their own. The
        // wait ends when a thread takes the job (or the job is dropped unrun).
        let waiting = tracing::trace_span!("hash.wait");
        let parent = if waiting.is_disabled() { tracing::Span::none() } else { tracing::Span::current() };
        let job: Job = Box::new(move |charge: &mut dyn FnMut(u64)| {
            crate::telemetry::with_span_subscriber(parent, move |parent| {
                drop(waiting);
                if reply.is_closed() {
                    return;
                }
                let running = tracing::trace_span!(parent: parent, "hash.run");
                metrics::gauge!(HASH_POOL_BUSY).increment(1.0);
                let result = running.in_scope(work);
                metrics::gauge!(HASH_POOL_BUSY).decrement(1.0);
                drop(running);
                charge(extra_turns(&result));
                let _ = reply.send(result);
            });
        });
        let shared = &self.handle.shared;
        let (tag, pushed_out) = shared.lock().admit(requester.client, job)?;
        shared.work.notify_one();
        if pushed_out.is_some() {
            metrics::counter!(HASH_POOL_REJECTED).increment(1);
        }
        // Dropped outside the lock: its caller learns it was shed.
        drop(pushed_out);
        // Takes the job back out if this future is dropped while it waits.
        let queued = Queued { shared, tag };
        // Whether a job next in line has had its one extra job's time while every thread worked.
        let mut extended = false;
        let answer = loop {
            if let Ok(answer) = tokio::time::timeout_at(give_up_at.into(), &mut outcome).await {
                break answer;
            }
            let now = Instant::now();
            let threads = self.handle.threads;
            let (keep_waiting, all_busy, taken_back) = {
                let mut state = shared.lock();
                let all_busy = state.running >= threads;
                // Next in line, with a thread free (the OS has not woken it yet) or for one job's
                // time more (the first thread to finish takes it): shedding it would waste its wait.
                let keep_waiting = state.is_next(tag)
                    && (!all_busy || !extended)
                    && latest_start.is_none_or(|latest| now < latest);
                (keep_waiting, all_busy, !keep_waiting && state.take_back(tag))
            };
            if keep_waiting {
                extended |= all_busy;
                give_up_at = before_latest_start(now + self.handle.one_job);
                continue;
            }
            if taken_back {
                metrics::counter!(HASH_POOL_REJECTED).increment(1);
                return Err(PoolError::Shed);
            }
            // A thread has it: the answer is a job's time away.
            break outcome.await;
        };
        drop(queued);
        // Dropped unanswered: pushed out by an earlier turn, or the pool stopped.
        answer.map_err(|_| PoolError::Shed)
    }
}

/// A job in the queue, taken back out if its caller stops waiting.
struct Queued<'a> {
    shared: &'a Shared,
    tag: Tag,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.shared.lock().take_back(self.tag);
    }
}

fn work(shared: &Shared) {
    lower_thread_priority();
    loop {
        let (client, job) = {
            let mut state = shared.lock();
            loop {
                if state.stopped {
                    return;
                }
                if let Some(next) = state.next_job() {
                    break next;
                }
                state = shared.work.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let mut settled = false;
        let mut settle = |extra_turns: u64| {
            if !settled {
                settled = true;
                shared.lock().finished(client, extra_turns);
            }
        };
        job(&mut settle);
        settle(0);
    }
}

/// bcrypt is the one thing here that can saturate every core; at nice 10 the scheduler still
/// gives RPC threads (health checks, token validation) the CPU when they need it.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread with no pointers involved. On Linux the nice
    // value is per thread, and `setpriority(PRIO_PROCESS, tid)` sets this thread's.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::warn!("could not lower the priority of a hashing thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// One job's time as the pool is told: long enough that no test job's wait runs out.
    const PATIENT: Duration = Duration::from_secs(5);

    fn from(last_octet: u8) -> Requester {
        Requester { client: ClientKey::V4([127, 0, 0, last_octet]), deadline: None }
    }

    /// Occupies the pool's one thread until the returned sender is used or dropped.
    async fn block(pool: &HashPool) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (started, has_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let pool_ = pool.clone();
        let busy = tokio::spawn(async move {
            pool_
                .run(
                    &from(250),
                    move || {
                        started.send(()).unwrap();
                        let _ = released.recv();
                    },
                    |_| 0,
                )
                .await
                .unwrap();
        });
        tokio::task::spawn_blocking(move || has_started.recv()).await.unwrap().unwrap();
        (release, busy)
    }

    /// Submits a job that records `label` into `order` when it runs.
    fn record(
        pool: &HashPool,
        requester: Requester,
        order: &Arc<Mutex<Vec<&'static str>>>,
        label: &'static str,
    ) -> tokio::task::JoinHandle<Result<(), PoolError>> {
        let (pool, order) = (pool.clone(), Arc::clone(order));
        tokio::spawn(
            async move { pool.run(&requester, move || order.lock().unwrap().push(label), |_| 0).await },
        )
    }

    async fn until(pool: &HashPool, condition: impl Fn(PoolStats) -> bool) {
        let started = Instant::now();
        while !condition(pool.stats()) {
            if started.elapsed() > Duration::from_secs(3) {
                panic!("stuck at {:?}", pool.stats());
            }
            // Poll briefly: sleeping a whole job's time here let queued jobs' waits run out.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_caller_of_a_job_that_gave_up_its_place_is_shed() {
        let pool = HashPool::start_with(1, 2, PATIENT, 2).unwrap();
        let (release, busy) = block(&pool).await;
        let order = Arc::default();
        let first = record(&pool, from(2), &order, "a1");
        until(&pool, |s| s.queued == 1).await;
        let second = record(&pool, from(2), &order, "a2");
        until(&pool, |s| s.queued == 2).await;
        assert!(pool.would_shed(&ClientKey::V4([127, 0, 0, 2])));
        assert!(!pool.would_shed(&ClientKey::V4([127, 0, 0, 3])));
        let newcomer = record(&pool, from(3), &order, "b1");
        assert_eq!(second.await.unwrap(), Err(PoolError::Shed));
        release.send(()).unwrap();
        busy.await.unwrap();
        first.await.unwrap().unwrap();
        newcomer.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["a1", "b1"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_is_shed_when_its_deadline_leaves_no_time_or_its_wait_runs_out() {
        // No queue configured: a job waits for the thread at most one job's time.
        let pool = HashPool::start(1, 0, Duration::from_millis(50)).unwrap();
        let (release, busy) = block(&pool).await;
        let hurried = Requester { deadline: Some(Instant::now() + Duration::from_millis(20)), ..from(2) };
        assert_eq!(pool.run(&hurried, || (), |_| 0).await, Err(PoolError::Shed));
        let order = Arc::default();
        let patient = record(&pool, from(2), &order, "patient");
        assert_eq!(patient.await.unwrap(), Err(PoolError::Shed));
        assert_eq!(pool.stats().queued, 0, "the job was taken out");
        release.send(()).unwrap();
        busy.await.unwrap();
        assert!(order.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_job_next_in_line_waits_one_job_s_time_longer_than_the_ones_behind_it() {
        // No queue configured: a job waits for the thread one job's time, the next one two.
        let pool = HashPool::start(1, 0, Duration::from_millis(200)).unwrap();
        let (release, busy) = block(&pool).await;
        let order = Arc::default();
        let next = record(&pool, from(2), &order, "next");
        until(&pool, |s| s.queued == 1).await;
        let behind = record(&pool, from(3), &order, "behind");
        assert_eq!(behind.await.unwrap(), Err(PoolError::Shed));
        assert_eq!(pool.stats().queued, 1, "the job next in line still waits");
        assert_eq!(next.await.unwrap(), Err(PoolError::Shed), "the thread stayed busy");
        release.send(()).unwrap();
        busy.await.unwrap();
        assert!(order.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_charged_by_a_job_put_its_client_behind_clients_that_succeed() {
        let pool = HashPool::start(1, 8, PATIENT).unwrap();
        // Client 2 fails once, then both queue two jobs behind a busy thread.
        pool.run(&from(2), || false, |ok| if *ok { 0 } else { FAILURE_TURNS }).await.unwrap();
        let (release, busy) = block(&pool).await;
        let order = Arc::default();
        let mut jobs = Vec::new();
        for (requester, label) in [(from(2), "a1"), (from(2), "a2"), (from(3), "b1"), (from(3), "b2")] {
            jobs.push(record(&pool, requester, &order, label));
            until(&pool, |s| s.queued == jobs.len()).await;
        }
        release.send(()).unwrap();
        busy.await.unwrap();
        for job in jobs {
            job.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["b1", "b2", "a1", "a2"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_gave_up_is_not_computed() {
        let pool = HashPool::start(1, 2, PATIENT).unwrap();
        let (release, busy) = block(&pool).await;
        let (ran, did_run) = mpsc::channel();
        let pool_ = pool.clone();
        let abandoned =
            tokio::spawn(async move { pool_.run(&from(2), move || ran.send(()).unwrap(), |_| 0).await });
        until(&pool, |s| s.queued == 1).await;
        abandoned.abort();
        let _ = abandoned.await;
        release.send(()).unwrap();
        busy.await.unwrap();
        // Queued after the abandoned job, so served after it: by now it was run or skipped.
        pool.run(&from(2), || (), |_| 0).await.unwrap();
        assert!(did_run.try_recv().is_err());
    }
}
