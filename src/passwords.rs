//! bcrypt hashing on a small pool of dedicated, low-priority threads with a bounded queue, so
//! that a flood of logins is shed instead of queued and never runs on a tokio worker thread.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::{
    domain::{Password, PasswordHash, PresentedPassword},
    metrics::{HASH_POOL_BUSY, HASH_POOL_QUEUED, HASH_POOL_REJECTED},
};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce() + Send>;

/// Longest a login should wait for a hashing thread by default: beyond it, shedding (an
/// immediate RESOURCE_EXHAUSTED the client can retry elsewhere) serves callers better than a
/// queue whose tail would time out anyway.
pub const TARGET_MAX_WAIT: Duration = Duration::from_millis(1500);

/// How many jobs `threads` clear in `max_wait` when each takes `one_job`; at least one per thread.
fn queue_for(max_wait: Duration, one_job: Duration, threads: usize) -> usize {
    let per_thread = (max_wait.as_secs_f64() / one_job.as_secs_f64().max(1e-6)).floor() as usize;
    (per_thread.clamp(1, 1024)) * threads
}

fn random_password() -> SecretString {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Hashes and verifies passwords at the configured cost.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    jobs: SyncSender<Job>,
    queue: usize,
    /// Jobs queued or running, against `capacity` (threads + queue).
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    /// A hash of a random password, verified against when a login names an unknown email so
    /// that the answer takes as long as for a wrong password.
    dummy_hash: Arc<PasswordHash>,
}

impl PasswordHasher {
    /// Starts `threads` hashing threads that take work from a queue of `queue` waiting jobs, or,
    /// with `None`, of as many as the threads clear in [`TARGET_MAX_WAIT`] at this cost.
    pub async fn start(cost: u32, threads: usize, queue: Option<usize>) -> Result<Self, HashError> {
        let threads = threads.max(1);
        // The dummy hash doubles as the measurement of one job at this cost on this machine.
        let (dummy_hash, one_job) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let hash = bcrypt::non_truncating_hash(random_password().expose_secret(), cost);
            (hash, started.elapsed())
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy_hash = PasswordHash::new(dummy_hash.map_err(|e| HashError::Failed(e.to_string()))?);
        let queue = queue.unwrap_or_else(|| queue_for(TARGET_MAX_WAIT, one_job, threads));
        tracing::info!(
            cost,
            threads,
            queue,
            one_job_ms = one_job.as_millis() as u64,
            "password hashing pool"
        );

        let (jobs, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("bcrypt-{index}"))
                .spawn(move || run_worker(&receiver))
                .map_err(|e| HashError::Failed(format!("cannot start hashing thread: {e}")))?;
        }
        Ok(Self {
            cost,
            jobs,
            queue,
            in_flight: Arc::default(),
            capacity: threads + queue,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// Jobs that may wait for a thread.
    pub fn queue_capacity(&self) -> usize {
        self.queue
    }

    /// True when every thread is busy and the queue is full: a request that would hash can be
    /// shed before it does any other work (validation, database round trips), which is what
    /// keeps the cores on bcrypt under a flood. A racy hint; `submit` has the final word.
    pub fn is_saturated(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= self.capacity
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    pub async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        self.hash_raw(SecretString::from(password.expose())).await
    }

    /// Hashes a password that met the policy when it was set (rehashing at a higher cost).
    pub async fn hash_presented(&self, password: &PresentedPassword) -> Result<PasswordHash, HashError> {
        self.hash_raw(SecretString::from(password.expose())).await
    }

    async fn hash_raw(&self, password: SecretString) -> Result<PasswordHash, HashError> {
        let cost = self.cost;
        self.run(move || {
            bcrypt::non_truncating_hash(password.expose_secret(), cost)
                .map(PasswordHash::new)
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await?
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no account, so
    /// both cases cost the same. A password bcrypt cannot check in full never matches. A hash
    /// made before passwords were normalized is checked against the text as sent, any other
    /// against its NFKC form: one verify either way, both forms computed when it was parsed.
    pub async fn verify(
        &self,
        password: &PresentedPassword,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, HashError> {
        let found = hash.is_some();
        let hash = hash.cloned().unwrap_or_else(|| (*self.dummy_hash).clone());
        let password = SecretString::from(password.text_for(&hash));
        let matches =
            self.run(move || bcrypt::non_truncating_verify(password.expose_secret(), hash.expose())).await?;
        Ok(found && matches.unwrap_or(false))
    }

    /// True when a stored hash was made at a lower cost than the one configured now, or of the
    /// password as typed rather than of its normalized form.
    pub fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        !hash.is_of_normalized_text() || hash.cost().is_some_and(|cost| cost < self.cost)
    }

    /// Queues `work` on the pool and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let outcome = self.submit(work)?;
        outcome.await.map_err(|_| HashError::Failed("hashing thread dropped the job".into()))
    }

    /// Queues `work`, or fails at once when the queue is full. If the caller stops waiting (its
    /// deadline passed, its connection closed) before a thread picks the job up, the job is
    /// dropped without being computed.
    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, HashError> {
        let (reply, outcome) = oneshot::channel();
        let in_flight = Arc::clone(&self.in_flight);
        let job: Job = Box::new(move || {
            metrics::gauge!(HASH_POOL_QUEUED).decrement(1.0);
            let result = (!reply.is_closed()).then(|| {
                metrics::gauge!(HASH_POOL_BUSY).increment(1.0);
                let result = work();
                metrics::gauge!(HASH_POOL_BUSY).decrement(1.0);
                result
            });
            // Counted out before answering, so a caller that sends its next request as soon as
            // it has the answer never finds the pool still marked full by its own job.
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Some(result) = result {
                let _ = reply.send(result);
            }
        });
        // Counted before sending: a thread may finish the job before `try_send` returns.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(HASH_POOL_QUEUED).increment(1.0);
        self.jobs.try_send(job).map_err(|error| {
            // The job was not taken, so it will not count itself out.
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!(HASH_POOL_QUEUED).decrement(1.0);
            match error {
                TrySendError::Full(_) => {
                    metrics::counter!(HASH_POOL_REJECTED).increment(1);
                    HashError::Overloaded
                }
                TrySendError::Disconnected(_) => HashError::Failed("hashing threads stopped".into()),
            }
        })?;
        Ok(outcome)
    }
}

fn run_worker(receiver: &Mutex<Receiver<Job>>) {
    lower_thread_priority();
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
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
    use super::*;
    use crate::domain::PasswordPolicy;

    fn password(text: &str) -> Password {
        PasswordPolicy { min_length: 8 }.check("password", text, &[]).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        let hash = hasher.hash(&password("maple-orbit-tundra-42")).await.unwrap();
        assert_eq!(hash.cost(), Some(4));
        assert!(
            hasher
                .verify(&PresentedPassword::new("maple-orbit-tundra-42".into()), Some(&hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&PresentedPassword::new("maple-orbit-tundra-43".into()), Some(&hash))
                .await
                .unwrap()
        );
        assert!(!hasher.verify(&PresentedPassword::new("x".repeat(80)), Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        assert!(!hasher.verify(&PresentedPassword::new("anything at all".into()), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_lower_cost_hash_needs_rehashing() {
        let low = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        let hash = low.hash(&password("maple-orbit-tundra-42")).await.unwrap();
        let high = PasswordHasher { cost: 5, ..low.clone() };
        assert!(high.needs_rehash(&hash));
        assert!(!low.needs_rehash(&hash));
    }

    #[test]
    fn the_default_queue_holds_what_the_threads_clear_in_the_target_wait() {
        // Cost 12 here: about 205 ms a job, 2 threads -> 7 each in 1.5 s.
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_millis(205), 2), 14);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_secs(3), 2), 2);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_micros(10), 2), 2048);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once() {
        let hasher = PasswordHasher::start(4, 1, Some(1)).await.unwrap();
        let (started, has_started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = hasher
            .submit(move || {
                started.send(()).unwrap();
                released.recv().unwrap();
            })
            .unwrap();
        tokio::task::spawn_blocking(move || has_started.recv()).await.unwrap().unwrap();
        let queued = hasher.submit(|| 7).unwrap();
        assert!(matches!(hasher.submit(|| 8), Err(HashError::Overloaded)));
        assert!(hasher.is_saturated());
        release.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 7);
        hasher.run(|| ()).await.unwrap();
        assert!(!hasher.is_saturated());
    }

    #[tokio::test]
    async fn a_job_whose_caller_gave_up_is_not_computed() {
        let hasher = PasswordHasher::start(4, 1, Some(2)).await.unwrap();
        let (started, has_started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = hasher
            .submit(move || {
                started.send(()).unwrap();
                released.recv().unwrap();
            })
            .unwrap();
        tokio::task::spawn_blocking(move || has_started.recv()).await.unwrap().unwrap();
        let (ran, did_run) = std::sync::mpsc::channel();
        drop(hasher.submit(move || ran.send(()).unwrap()).unwrap());
        release.send(()).unwrap();
        busy.await.unwrap();
        // A job queued after the abandoned one runs only after it, so once it has answered the
        // abandoned one has been either run or skipped.
        hasher.run(|| ()).await.unwrap();
        assert!(did_run.try_recv().is_err());
    }
}
