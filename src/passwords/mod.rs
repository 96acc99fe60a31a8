//! Password hashing with bcrypt and checking in every stored [`HashScheme`](crate::domain::HashScheme)
//! (see [`schemes`]), run on [`HashPool`]'s dedicated low-priority threads behind a fair bounded
//! queue, never on a tokio worker thread.
//!
//! Every check of a password costs one verify at the configured cost, whatever is stored: an
//! unknown email checks a dummy hash, and a bcrypt hash made at a lower cost (before
//! `IDENTITY_BCRYPT_COST` was raised, or imported) is topped up with dummy verifies at each cost
//! from its own to the configured one less one, which adds up to the same bcrypt work
//! (2^c + 2^c + 2^(c+1) + ... + 2^(n-1) = 2^n). A check in another imported scheme (Argon2,
//! PBKDF2) is measured and topped up with dummies at the costs whose expected times fill what
//! is left of one verify at the configured cost (see [`padding`]); one slower than that is not
//! topped up. Nothing checked (no account, no password, a password bcrypt made here cannot hold,
//! an unreadable hash) gets the full dummy verify. The slow path is the only path, so timing
//! does not tell which emails have accounts.

mod schemes;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};

use self::schemes::Spent;
use crate::{
    clients::Requester,
    domain::{HashScheme, Password, PasswordHash, PresentedPassword},
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
    pool: HashPool,
    costs: Costs,
}

/// The configured cost and what keeps every check at it; what a job on a hash thread takes
/// along.
#[derive(Clone)]
struct Costs {
    cost: u32,
    /// Hashes of a random password at every cost from [`MIN_COST`] to `cost` (index `c -
    /// MIN_COST`): what an unknown email is checked against, and what tops up a cheaper hash.
    dummies: Arc<Vec<PasswordHash>>,
    /// bcrypt work done, in rounds (2^cost per hash or verify): the deterministic measure of
    /// how much a path costs, for tests.
    work: Arc<AtomicU64>,
    /// How long the latest verify at the configured cost took, in nanoseconds (at first, the
    /// dummy's hashing at startup): what a check in another scheme is topped up to.
    one_verify_ns: Arc<AtomicU64>,
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
        let one_verify_ns = Arc::new(AtomicU64::new(one_job.as_nanos() as u64));
        let costs = Costs { cost, dummies: Arc::new(dummies), work: Arc::default(), one_verify_ns };
        Ok(Self { pool, costs })
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
        self.costs.cost
    }

    /// How long one hash takes on this machine (measured at start).
    pub fn one_job(&self) -> Duration {
        self.pool.one_job()
    }

    /// bcrypt rounds done so far (2^cost for each hash or verify).
    pub fn work_done(&self) -> u64 {
        self.costs.work.load(Ordering::Relaxed)
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
        let (cost, work) = (self.costs.cost, Arc::clone(&self.costs.work));
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
    /// at the configured cost, as the module says. A hash made before passwords were
    /// normalized, or imported, is checked against the text as sent, any other against its NFKC
    /// form, both computed when it was parsed. A mismatch charges the requester extra turns in
    /// the pool.
    pub async fn verify(
        &self,
        password: &PresentedPassword,
        hash: Option<&PasswordHash>,
        requester: &Requester,
    ) -> Result<bool, HashError> {
        let stored = hash.map(|hash| (hash.clone(), SecretString::from(password.text_for(hash))));
        let password = SecretString::from(password.expose());
        let costs = self.costs.clone();
        let matches = self
            .pool
            .run(
                requester,
                move || {
                    let started = Instant::now();
                    let (matches, spent) = match &stored {
                        Some((hash, text)) => schemes::check(hash, text.expose_secret()),
                        None => (false, Spent::Nothing),
                    };
                    if let Spent::Bcrypt(cost) = spent {
                        costs.done(cost, started);
                    }
                    for cost in costs.top_up(spent, started.elapsed()) {
                        costs.verify_dummy(cost, &password);
                    }
                    matches
                },
                |matches| if *matches { 0 } else { FAILURE_TURNS },
            )
            .await?;
        Ok(matches)
    }

    /// True when a stored hash is not bcrypt made here (it was imported), was made at a lower
    /// cost than the one configured now, or of the password as typed rather than of its
    /// normalized form.
    pub fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        hash.scheme() != Some(HashScheme::Bcrypt)
            || !hash.is_of_normalized_text()
            || hash.cost().is_some_and(|cost| cost < self.costs.cost)
    }
}

impl Costs {
    /// Records a bcrypt verify at `cost` that started at `started`.
    fn done(&self, cost: u32, started: Instant) {
        self.work.fetch_add(1 << cost, Ordering::Relaxed);
        if cost == self.cost {
            self.one_verify_ns.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Verifies `password` against the dummy of `cost` (its outcome does not matter, only its
    /// work: truncating, so that a password of any length costs the same).
    fn verify_dummy(&self, cost: u32, password: &SecretString) {
        let Some(dummy) = self.dummies.get(cost.saturating_sub(MIN_COST) as usize) else { return };
        let started = Instant::now();
        let _ = bcrypt::verify(password.expose_secret(), dummy.expose());
        self.done(cost, started);
    }

    /// The costs of the dummy verifies that bring a check which `spent` this much (and took
    /// `took`) up to one verify at the configured cost.
    fn top_up(&self, spent: Spent, took: Duration) -> Vec<u32> {
        match spent {
            Spent::Bcrypt(cost) if cost >= self.cost => Vec::new(),
            Spent::Bcrypt(cost) if cost >= MIN_COST => (cost..self.cost).collect(),
            Spent::Measured => {
                let one_verify = Duration::from_nanos(self.one_verify_ns.load(Ordering::Relaxed));
                padding(one_verify.saturating_sub(took), one_verify, self.cost)
            }
            // No account, no password, or nothing bcrypt could check: the full dummy verify.
            Spent::Bcrypt(_) | Spent::Nothing => vec![self.cost],
        }
    }
}

/// The costs of dummy verifies whose expected times (`one_verify` at `cost`, half that at each
/// cost below) add up to as much of `remaining` as they can, largest first: what tops a check in
/// another scheme up to one verify at the configured cost, to within one verify at
/// [`MIN_COST`] (1/256 of it at cost 12).
fn padding(remaining: Duration, one_verify: Duration, cost: u32) -> Vec<u32> {
    let mut left = remaining;
    let mut costs = Vec::new();
    for at in (MIN_COST..=cost).rev() {
        let takes = one_verify / (1u32 << (cost - at).min(31));
        if takes <= left && !takes.is_zero() {
            costs.push(at);
            left -= takes;
        }
    }
    costs
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
        let hasher = PasswordHasher::start(4, 1, Some(1024)).await.unwrap();
        let hash = hasher.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        assert_eq!(hash.cost(), Some(4));
        assert!(hasher.verify(&presented("maple-orbit-tundra-42"), Some(&hash), &LOCAL).await.unwrap());
        assert!(!hasher.verify(&presented("maple-orbit-tundra-43"), Some(&hash), &LOCAL).await.unwrap());
        assert!(!hasher.verify(&presented(&"x".repeat(80)), Some(&hash), &LOCAL).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::start(4, 1, Some(1024)).await.unwrap();
        assert!(!hasher.verify(&presented("anything at all"), None, &LOCAL).await.unwrap());
    }

    #[tokio::test]
    async fn a_lower_cost_hash_needs_rehashing() {
        let low = PasswordHasher::start(4, 1, Some(1024)).await.unwrap();
        let hash = low.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        let mut high = low.clone();
        high.costs.cost = 5;
        assert!(high.needs_rehash(&hash));
        assert!(!low.needs_rehash(&hash));
    }

    #[tokio::test]
    async fn every_check_costs_one_verify_at_the_configured_cost_whatever_is_stored() {
        let low = PasswordHasher::start(4, 1, Some(1024)).await.unwrap();
        let high = PasswordHasher::start(7, 1, Some(1024)).await.unwrap();
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

    #[tokio::test]
    async fn imported_hashes_verify_and_need_rehashing_and_over_long_passwords_cost_a_full_verify() {
        // A queue long enough that a loaded test machine never sheds these jobs.
        let hasher = PasswordHasher::start(5, 1, Some(1024)).await.unwrap();
        let django = PasswordHash::parse_imported(
            "pbkdf2_sha256$20000$5CSJE8K9AL-AyehXyUlK8A$jQW0lxbFeSZRKpivHHB/G1OG5Fc6NGwqFv54E+hjiXY=",
        )
        .unwrap();
        assert!(hasher.verify(&presented("heidi-django-pbkdf2"), Some(&django), &LOCAL).await.unwrap());
        assert!(hasher.needs_rehash(&django));
        let ours = hasher.hash(&password("maple-orbit-tundra-42"), &LOCAL).await.unwrap();
        assert!(!hasher.needs_rehash(&ours));
        for stored in [Some(&ours), None] {
            let before = hasher.work_done();
            assert!(!hasher.verify(&presented(&"x".repeat(200)), stored, &LOCAL).await.unwrap());
            assert_eq!(hasher.work_done() - before, 1 << 5, "{stored:?}");
        }
    }

    #[test]
    fn padding_fills_what_is_left_of_one_verify_largest_first() {
        let one = Duration::from_millis(256);
        // Nothing spent: every cost below the configured one (128 + 64 + ... + 16 ms = 240 ms).
        assert_eq!(padding(Duration::from_millis(255), one, 8), [7, 6, 5, 4]);
        assert_eq!(padding(Duration::from_millis(100), one, 8), [6, 5]);
        assert_eq!(padding(Duration::from_millis(10), one, 8), Vec::<u32>::new());
        assert_eq!(padding(Duration::ZERO, one, 12), Vec::<u32>::new());
    }

    #[test]
    fn the_default_queue_holds_what_the_threads_clear_in_the_target_wait() {
        // Cost 12 here: about 205 ms a job, 2 threads -> 7 each in 1.5 s.
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_millis(205), 2), 14);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_secs(3), 2), 2);
        assert_eq!(queue_for(Duration::from_millis(1500), Duration::from_micros(10), 2), 2048);
    }
}
