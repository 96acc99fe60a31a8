//! Password hashing and checking with bcrypt, run on [`HashPool`]'s dedicated low-priority
//! threads behind a fair bounded queue, never on a tokio worker thread.
//!
//! Every check of a password costs one verify at the configured cost, whatever is stored: an
//! unknown email checks a dummy hash, and a hash made at a lower cost (before
//! `IDENTITY_BCRYPT_COST` was raised) is topped up with dummy verifies at each cost from its own
//! to the configured one less one, which adds up to the same bcrypt work (2^c + 2^c + 2^(c+1) +
//! ... + 2^(n-1) = 2^n). A hash bcrypt cannot read (another scheme) gets the full dummy verify on
//! top. The slow path is the only path, so timing does not tell which emails have accounts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    clients::Requester,
    domain::{Password, PasswordHash, PresentedPassword},
    hash_pool::{FAILURE_TURNS, HashPool, PoolError},
};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hashing queue is full")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Longest a login should wait for a hashing thread by default: beyond it, shedding (an
/// immediate RESOURCE_EXHAUSTED the client can retry elsewhere) serves callers better than a
/// queue whose tail would time out anyway.
pub const TARGET_MAX_WAIT: Duration = Duration::from_millis(1500);

/// bcrypt's lowest cost; dummy hashes exist for every cost from it to the configured one.
const MIN_COST: u32 = 4;

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
    pool: HashPool,
    /// Hashes of a random password at every cost from [`MIN_COST`] to `cost` (index `c -
    /// MIN_COST`): what an unknown email is checked against, and what tops up a cheaper hash.
    dummies: Arc<Vec<PasswordHash>>,
    /// bcrypt work done, in rounds (2^cost per hash or verify): the deterministic measure of
    /// how much a path costs, for tests.
    work: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// Starts `threads` hashing threads that take work from a queue of `queue` waiting jobs, or,
    /// with `None`, of as many as the threads clear in [`TARGET_MAX_WAIT`] at this cost.
    pub async fn start(cost: u32, threads: usize, queue: Option<usize>) -> Result<Self, HashError> {
        let threads = threads.max(1);
        // The dummy at the configured cost doubles as the measurement of one job on this machine.
        let (dummies, one_job) = tokio::task::spawn_blocking(move || {
            let password = random_password();
            let mut dummies = Vec::new();
            let mut one_job = Duration::ZERO;
            for at in MIN_COST..=cost.max(MIN_COST) {
                let started = std::time::Instant::now();
                let hash = bcrypt::non_truncating_hash(password.expose_secret(), at)
                    .map_err(|e| HashError::Failed(e.to_string()))?;
                one_job = started.elapsed();
                dummies.push(PasswordHash::new(hash));
            }
            Ok::<_, HashError>((dummies, one_job))
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))??;
        let queue = queue.unwrap_or_else(|| queue_for(TARGET_MAX_WAIT, one_job, threads));
        tracing::info!(
            cost,
            threads,
            queue,
            one_job_ms = one_job.as_millis() as u64,
            "password hashing pool"
        );
        let pool = HashPool::start(threads, queue, one_job)
            .map_err(|e| HashError::Failed(format!("cannot start hashing thread: {e}")))?;
        Ok(Self { cost, pool, dummies: Arc::new(dummies), work: Arc::default() })
    }

    /// Jobs that may wait for a thread.
    pub fn queue_capacity(&self) -> usize {
        self.pool.queue_capacity()
    }

    pub fn pool(&self) -> &HashPool {
        &self.pool
    }

    /// True when a request from `requester` that would hash is refused at once however it
    /// waits: it can be shed before it does any other work (validation, database round trips),
    /// which is what keeps the cores on bcrypt under a flood. A racy hint.
    pub fn would_shed(&self, requester: &Requester) -> bool {
        self.pool.would_shed(&requester.client)
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// bcrypt rounds done so far (2^cost for each hash or verify).
    pub fn work_done(&self) -> u64 {
        self.work.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Password, requester: &Requester) -> Result<PasswordHash, HashError> {
        self.hash_raw(SecretString::from(password.expose()), requester).await
    }

    /// Hashes a password that met the policy when it was set (rehashing at a higher cost).
    pub async fn hash_presented(
        &self,
        password: &PresentedPassword,
        requester: &Requester,
    ) -> Result<PasswordHash, HashError> {
        self.hash_raw(SecretString::from(password.expose()), requester).await
    }

    async fn hash_raw(
        &self,
        password: SecretString,
        requester: &Requester,
    ) -> Result<PasswordHash, HashError> {
        let (cost, work) = (self.cost, Arc::clone(&self.work));
        let hashed = self
            .pool
            .run(
                requester,
                move || {
                    let hashed = bcrypt::non_truncating_hash(password.expose_secret(), cost);
                    work.fetch_add(1 << cost, Ordering::Relaxed);
                    hashed
                },
                |_| 0,
            )
            .await?;
        hashed.map(PasswordHash::new).map_err(|e| HashError::Failed(e.to_string()))
    }

    /// Checks `password` against `hash` (`None`: there is no account) at the cost of one verify
    /// at the configured cost, as the module says. A password bcrypt cannot check in full never
    /// matches. A hash made before passwords were normalized is checked against the text as
    /// sent, any other (dummies included) against its NFKC form, both computed when it was
    /// parsed. A mismatch charges the requester extra turns in the pool.
    pub async fn verify(
        &self,
        password: &PresentedPassword,
        hash: Option<&PasswordHash>,
        requester: &Requester,
    ) -> Result<bool, HashError> {
        let top_up = self.top_up(hash);
        let stored = hash.map(|hash| (hash.clone(), SecretString::from(password.text_for(hash))));
        let password = SecretString::from(password.expose());
        let work = Arc::clone(&self.work);
        let matches = self
            .pool
            .run(
                requester,
                move || {
                    let verify = |hash: &PasswordHash, text: &SecretString| {
                        let outcome = bcrypt::non_truncating_verify(text.expose_secret(), hash.expose());
                        // Refused before hashing (a password bcrypt would truncate): no work.
                        if outcome.is_ok()
                            && let Some(cost) = hash.cost()
                        {
                            work.fetch_add(1 << cost, Ordering::Relaxed);
                        }
                        outcome.unwrap_or(false)
                    };
                    let matches = stored.as_ref().is_some_and(|(hash, text)| verify(hash, text));
                    for dummy in &top_up {
                        verify(dummy, &password);
                    }
                    matches
                },
                |matches| if *matches { 0 } else { FAILURE_TURNS },
            )
            .await?;
        Ok(matches)
    }

    /// The dummy hashes to verify besides `stored` so the whole costs one verify at the
    /// configured cost.
    fn top_up(&self, stored: Option<&PasswordHash>) -> Vec<PasswordHash> {
        let dummy = |cost: u32| self.dummies.get(cost.saturating_sub(MIN_COST) as usize).cloned();
        match stored.and_then(PasswordHash::cost) {
            Some(cost) if cost >= self.cost => Vec::new(),
            Some(cost) if cost >= MIN_COST => (cost..self.cost).filter_map(dummy).collect(),
            // No account, another scheme, or nonsense: the full dummy verify.
            _ => dummy(self.cost).into_iter().collect(),
        }
    }

    /// True when a stored hash was made at a lower cost than the one configured now, or of the
    /// password as typed rather than of its normalized form.
    pub fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        !hash.is_of_normalized_text() || hash.cost().is_some_and(|cost| cost < self.cost)
    }
}

impl From<PoolError> for HashError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Shed => Self::Overloaded,
            PoolError::Stopped => Self::Failed(error.to_string()),
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

    fn presented(text: &str) -> PresentedPassword {
        PresentedPassword::new(text.into())
    }

    const LOCAL: Requester = Requester { client: crate::clients::ClientKey::Unknown, deadline: None };

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        let hash = hasher.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        assert_eq!(hash.cost(), Some(4));
        assert!(hasher.verify(&presented("maple-orbit-tundra-42"), Some(&hash), &LOCAL).await.unwrap());
        assert!(!hasher.verify(&presented("maple-orbit-tundra-43"), Some(&hash), &LOCAL).await.unwrap());
        assert!(!hasher.verify(&presented(&"x".repeat(80)), Some(&hash), &LOCAL).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        assert!(!hasher.verify(&presented("anything at all"), None, &LOCAL).await.unwrap());
    }

    #[tokio::test]
    async fn a_lower_cost_hash_needs_rehashing() {
        let low = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        let hash = low.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        let high = PasswordHasher { cost: 5, ..low.clone() };
        assert!(high.needs_rehash(&hash));
        assert!(!low.needs_rehash(&hash));
    }

    #[tokio::test]
    async fn every_check_costs_one_verify_at_the_configured_cost_whatever_is_stored() {
        let low = PasswordHasher::start(4, 1, Some(4)).await.unwrap();
        let high = PasswordHasher::start(7, 1, Some(4)).await.unwrap();
        let old = low.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        let current = high.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        let foreign = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        for stored in [None, Some(&old), Some(&current), Some(&foreign)] {
            for attempt in ["maple-orbit-tundra-42", "wrong-password-entirely"] {
                let before = high.work_done();
                high.verify(&presented(attempt), stored, &LOCAL).await.unwrap();
                assert_eq!(high.work_done() - before, 1 << 7, "{stored:?} with {attempt}");
            }
        }
        assert!(high.verify(&presented("maple-orbit-tundra-42"), Some(&old), &LOCAL).await.unwrap());
    }

    #[test]
    fn the_default_queue_holds_what_the_threads_clear_in_the_target_wait() {
        // Cost 12 here: about 205 ms a job, 2 threads -> 7 each in 1.5 s.
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_millis(205), 2), 14);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_secs(3), 2), 2);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_micros(10), 2), 2048);
    }
}
