//! The queue in front of the hashing threads: whose job goes next, and whose is shed when the
//! queue is full. No threads or clocks here (the pool in `mod.rs` adds them), so each rule is
//! tested step by step.
//!
//! **Turns** are start-time fair queueing keyed by client ([`ClientKey`]): each client has a
//! virtual finish time; a job is tagged with the later of the pool's virtual time and its
//! client's finish, and moves that finish on by one turn. Jobs are served in tag order, so a
//! client with one job waiting goes ahead of one with ten, and a newcomer goes ahead of a flood.
//! Within one turn, the job whose client had fewer jobs queued goes first, then arrival order:
//! flooding clients move in step, so one turn can hold a job of every one of them, and a
//! newcomer given that turn would otherwise wait behind the whole round (24 attackers: twelve
//! jobs' time on two threads, past the longest wait). A failed password check costs its client
//! [`FAILURE_TURNS`] more, so a client that keeps guessing falls behind clients whose logins
//! succeed, the one difference between an attacker and a user the queue can see.
//!
//! **Order** is by the turn a job is *due to end*, then its turn: one turn after it starts, or
//! `1 + FAILURE_TURNS` when its client's last check failed (it is expected to fail again).
//! Between clients whose checks succeed this is the start order above. It matters when
//! guessers move in step: a turn of theirs holds a job of each, and a client whose login just
//! had that turn would wait for the whole round before its next one starts; ordered by when
//! they are due, its next `FAILURE_TURNS` jobs go ahead of the round.
//!
//! **A full queue** (`max_pending` jobs) gives every client one place before anyone a second:
//! a client with nothing queued takes the place of the last extra job (the last job of a client
//! holding two or more), whatever its turn. A client with jobs queued, or a newcomer when every
//! client holds one place, only displaces a job of a later turn, and a client with jobs queued
//! never takes another client's only place. The displaced job's caller is shed.
//!
//! Everything a stranger can grow is bounded: jobs (`max_pending`), and clients tracked (those
//! with jobs queued, plus at most [`MAX_REMEMBERED_CLIENTS`] whose failures still count against
//! them).

use std::collections::{BTreeMap, HashMap};

use super::PoolError;
use crate::{
    clients::ClientKey,
    metrics::{HASH_POOL_QUEUED, HASH_POOL_REJECTED},
};

/// Turns charged on top of the one every job pays when a password check fails. Against `n`
/// clients that keep guessing, a client whose logins succeed gets one job for every
/// `n / (FAILURE_TURNS + 1)` of theirs: 24 guessers at 15 leave it 40 % of the threads (at 3 it
/// was 1 in 7, which a slow machine's hash rate could not cover at one login a second). A user
/// who mistypes pays it once, and only while the pool is contended.
pub const FAILURE_TURNS: u64 = 15;
/// Clients remembered while they have nothing queued, because their failures still count.
const MAX_REMEMBERED_CLIENTS: usize = 4096;

/// The order jobs are served in (field order is the comparison order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tag {
    /// The turn the job is expected to end at: its turn plus one, plus [`FAILURE_TURNS`] when
    /// its client's last check failed.
    due: u64,
    /// The virtual time the job starts at: its turn.
    turn: u64,
    /// Jobs its client had queued when it came.
    queued_before: usize,
    arrival: u64,
}

pub(super) struct State<J> {
    queue: BTreeMap<Tag, Entry<J>>,
    clients: HashMap<ClientKey, Client>,
    max_clients: usize,
    max_pending: usize,
    /// Clients with two or more jobs queued: while there are none, nobody holds an extra place.
    crowded: usize,
    /// The turn of the job served last.
    virtual_time: u64,
    arrivals: u64,
    pub(super) running: usize,
    pub(super) stopped: bool,
}

struct Entry<J> {
    client: ClientKey,
    job: J,
}

#[derive(Debug)]
struct Client {
    finish: u64,
    queued: usize,
    /// Its last check failed: its next ones are expected to.
    failing: bool,
}

impl<J> State<J> {
    pub(super) fn new(max_pending: usize) -> Self {
        Self {
            queue: BTreeMap::new(),
            clients: HashMap::new(),
            max_clients: max_pending + MAX_REMEMBERED_CLIENTS,
            max_pending,
            crowded: 0,
            virtual_time: 0,
            arrivals: 0,
            running: 0,
            stopped: false,
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn clients_tracked(&self) -> usize {
        self.clients.len()
    }

    /// True when a job from `client` would be refused now.
    pub(super) fn would_shed(&self, client: &ClientKey) -> bool {
        self.is_full() && self.place_to_take(client).is_none()
    }

    /// Queues `job`, returning its tag and the job it displaced, if it did.
    pub(super) fn admit(&mut self, client: ClientKey, job: J) -> Result<(Tag, Option<J>), PoolError> {
        if self.stopped {
            return Err(PoolError::Stopped);
        }
        let tag = self.tag_for(&client);
        let mut displaced = None;
        if self.is_full() {
            let Some(place) = self.place_to_take(&client) else {
                metrics::counter!(HASH_POOL_REJECTED).increment(1);
                return Err(PoolError::Shed);
            };
            if let Some(entry) = self.queue.remove(&place) {
                metrics::gauge!(HASH_POOL_QUEUED).decrement(1.0);
                self.unqueued(&entry.client);
                displaced = Some(entry.job);
            }
        }
        self.arrivals += 1;
        let entry = self.client_mut(client);
        entry.finish = tag.turn + 1;
        entry.queued += 1;
        if entry.queued == 2 {
            self.crowded += 1;
        }
        self.queue.insert(tag, Entry { client, job });
        metrics::gauge!(HASH_POOL_QUEUED).increment(1.0);
        Ok((tag, displaced))
    }

    /// Takes a job out of the queue if no thread has it yet; true if it did.
    pub(super) fn take_back(&mut self, tag: Tag) -> bool {
        let Some(entry) = self.queue.remove(&tag) else { return false };
        metrics::gauge!(HASH_POOL_QUEUED).decrement(1.0);
        self.unqueued(&entry.client);
        true
    }

    /// True when the job tagged `tag` is the one the next free thread takes.
    pub(super) fn is_next(&self, tag: Tag) -> bool {
        self.queue.first_key_value().is_some_and(|(first, _)| *first == tag)
    }

    /// The next job in turn, counted as running until [`State::finished`].
    pub(super) fn next_job(&mut self) -> Option<(ClientKey, J)> {
        let (tag, entry) = self.queue.pop_first()?;
        metrics::gauge!(HASH_POOL_QUEUED).decrement(1.0);
        self.virtual_time = tag.turn;
        self.unqueued(&entry.client);
        self.running += 1;
        Some((entry.client, entry.job))
    }

    /// A job of `client` ended, owing `extra_turns` on top of its turn.
    pub(super) fn finished(&mut self, client: ClientKey, extra_turns: u64) {
        self.running = self.running.saturating_sub(1);
        let now = self.virtual_time;
        if extra_turns > 0 {
            let entry = self.client_mut(client);
            entry.finish = entry.finish.max(now) + extra_turns;
            entry.failing = true;
        } else if let Some(entry) = self.clients.get_mut(&client) {
            entry.failing = false;
        }
        if self.queue.is_empty() && self.running == 0 {
            // Idle: a turn just had by a client is no debt any more, only failures are.
            self.clients.retain(|_, c| c.finish > now + 1);
        }
    }

    fn is_full(&self) -> bool {
        self.queue.len() >= self.max_pending
    }

    fn queued_by(&self, client: &ClientKey) -> usize {
        self.clients.get(client).map_or(0, |c| c.queued)
    }

    fn tag_for(&self, client: &ClientKey) -> Tag {
        let (finish, queued_before, failing) =
            self.clients.get(client).map_or((0, 0, false), |c| (c.finish, c.queued, c.failing));
        let turn = finish.max(self.virtual_time);
        // Ordered by the turn the job is expected to end at: see the module.
        let due = turn + 1 + if failing { FAILURE_TURNS } else { 0 };
        Tag { due, turn, queued_before, arrival: self.arrivals }
    }

    /// The queued job a new job of `client` may take the place of in a full queue (see the
    /// module). The search for an extra place runs from the back, where the turns of clients
    /// holding many places are, and only while someone holds one.
    fn place_to_take(&self, client: &ClientKey) -> Option<Tag> {
        let tag = self.tag_for(client);
        let newcomer = tag.queued_before == 0;
        if self.crowded > 0 {
            let extra = self
                .queue
                .iter()
                .rev()
                .take_while(|(queued, _)| newcomer || **queued > tag)
                .find(|(_, entry)| self.queued_by(&entry.client) >= 2);
            if let Some((place, _)) = extra {
                return Some(*place);
            }
        }
        let (last, _) = self.queue.last_key_value()?;
        (newcomer && *last > tag).then_some(*last)
    }

    /// A job of `client` left the queue; forget the client if nothing is left to remember.
    fn unqueued(&mut self, client: &ClientKey) {
        let now = self.virtual_time;
        if let Some(entry) = self.clients.get_mut(client) {
            if entry.queued == 2 {
                self.crowded -= 1;
            }
            entry.queued = entry.queued.saturating_sub(1);
            if entry.queued == 0 && entry.finish <= now {
                self.clients.remove(client);
            }
        }
    }

    /// The client's entry, made if need be. At the cap, clients that owe nothing are forgotten
    /// first, then every client with nothing queued: the map never outgrows `max_clients`, since
    /// clients with queued jobs are at most `max_pending`.
    fn client_mut(&mut self, client: ClientKey) -> &mut Client {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.max_clients {
            let now = self.virtual_time;
            self.clients.retain(|_, c| c.queued > 0 || c.finish > now);
            if self.clients.len() >= self.max_clients {
                self.clients.retain(|_, c| c.queued > 0);
            }
        }
        let now = self.virtual_time;
        self.clients.entry(client).or_insert(Client { finish: now, queued: 0, failing: false })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(last_octet: u8) -> ClientKey {
        ClientKey::V4([127, 0, 0, last_octet])
    }

    /// The jobs of `state` in the order the threads would take them.
    fn served(state: &mut State<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| state.next_job().map(|(_, job)| job)).collect()
    }

    #[test]
    fn turns_alternate_between_clients_whatever_they_sent() {
        let mut state = State::new(64);
        for job in ["a1", "a2", "a3"] {
            state.admit(key(2), job).unwrap();
        }
        state.admit(key(3), "b1").unwrap();
        assert_eq!(served(&mut state), ["a1", "b1", "a2", "a3"]);
    }

    #[test]
    fn a_newcomer_goes_ahead_of_a_flood_that_shares_its_turn() {
        let mut state = State::new(64);
        // Three flooding clients in step, two jobs each: turns 0 and 1.
        for attacker in 2..=4 {
            state.admit(key(attacker), "flood").unwrap();
            state.admit(key(attacker), "flood").unwrap();
        }
        // Turn 0 served and turn 1 begun: two flood jobs still wait in the current turn.
        for _ in 0..4 {
            let (attacker, _) = state.next_job().unwrap();
            state.finished(attacker, FAILURE_TURNS);
        }
        state.admit(key(1), "newcomer").unwrap();
        assert_eq!(served(&mut state), ["newcomer", "flood", "flood"]);
    }

    #[test]
    fn a_client_with_nothing_queued_takes_an_extra_place_whatever_its_turn() {
        let mut state = State::new(4);
        // The newcomer failed ten times: its turn is far behind every queued job.
        state.finished(key(1), 10 * FAILURE_TURNS);
        for job in ["a1", "a2", "a3", "a4"] {
            state.admit(key(2), job).unwrap();
        }
        assert!(state.would_shed(&key(2)), "a full queue refuses a fifth job of the client holding it");
        assert!(!state.would_shed(&key(1)));
        let (_, displaced) = state.admit(key(1), "b1").unwrap();
        assert_eq!(displaced, Some("a4"));
        // Two more newcomers get places the same way, until each client holds one.
        assert_eq!(state.admit(key(3), "c1").unwrap().1, Some("a3"));
        assert_eq!(state.admit(key(4), "d1").unwrap().1, Some("a2"));
        // Now every client holds one place and only a later turn gives way: b1 (its client in
        // debt) to a newcomer that owes nothing, and nothing to b1's client coming back.
        assert_eq!(state.admit(key(5), "e1").unwrap().1, Some("b1"));
        assert!(state.would_shed(&key(1)));
        assert_eq!(state.admit(key(1), "b2").unwrap_err(), PoolError::Shed);
        assert_eq!(served(&mut state), ["a1", "c1", "d1", "e1"]);
    }

    #[test]
    fn a_client_with_jobs_queued_never_takes_another_client_s_only_place() {
        let mut state = State::new(2);
        state.finished(key(2), 10 * FAILURE_TURNS);
        state.admit(key(2), "a1").unwrap();
        state.admit(key(3), "b1").unwrap();
        // b2's turn (1) is earlier than a1's (30), but a1 is client 2's only place.
        assert!(state.would_shed(&key(3)));
        assert_eq!(state.admit(key(3), "b2").unwrap_err(), PoolError::Shed);
        assert_eq!(served(&mut state), ["b1", "a1"]);
    }

    #[test]
    fn clients_are_forgotten_once_they_owe_nothing() {
        let mut state = State::new(64);
        for octet in 1..=200 {
            state.admit(key(octet), "job").unwrap();
            let (client, _) = state.next_job().unwrap();
            state.finished(client, 0);
        }
        assert!(state.clients_tracked() <= 1, "{}", state.clients_tracked());
        for octet in 0..=255u8 {
            for other in 0..40u8 {
                state.finished(ClientKey::V4([10, other, 0, octet]), FAILURE_TURNS);
            }
        }
        assert!(state.clients.len() <= state.max_clients);
    }

    /// The fair-flood bench on a slow machine, step by step: 2 threads, 24 clients each keeping
    /// two wrong guesses in flight, and one client whose logins succeed sending one job for
    /// every three the threads finish (one login a second when a verify takes 0.67 s). The
    /// guessers move in step, so each turn of theirs holds a job of all 24: ordered by start
    /// alone, the client's second login in a turn waited for that whole round (twelve jobs'
    /// time). Ordered by when a job is due to end, the client's jobs (due one turn after they
    /// start) go ahead of the guessers' (due `1 + FAILURE_TURNS` after) for `FAILURE_TURNS`
    /// turns of its own: at 3 its fourth login in a round waited, at 15 none does.
    #[test]
    fn a_client_that_succeeds_once_per_three_jobs_starts_within_a_job_s_time_among_24_guessers() {
        const THREADS: usize = 2;
        let legit = key(1);
        let guessers: Vec<ClientKey> = (2..26).map(key).collect();
        let mut state = State::new(64);
        for guesser in &guessers {
            state.admit(*guesser, "guess").unwrap();
            state.admit(*guesser, "guess").unwrap();
        }
        let mut running = std::collections::VecDeque::new();
        let (mut arrived, mut waits) = (None, Vec::new());
        // The guessers run alone for a while first, as in the bench.
        const ALONE: usize = 300;
        for finished in 0..ALONE + 600 {
            if finished >= ALONE && finished % 3 == 0 {
                assert!(arrived.is_none(), "login {} waited three jobs: {waits:?}", waits.len());
                state.admit(legit, "login").unwrap();
                arrived = Some(finished);
            }
            while running.len() < THREADS {
                let (client, _) = state.next_job().unwrap();
                if client == legit {
                    waits.push(finished - arrived.take().unwrap());
                }
                running.push_back(client);
            }
            let client = running.pop_front().unwrap();
            if client == legit {
                state.finished(client, 0);
            } else {
                state.finished(client, FAILURE_TURNS);
                state.admit(client, "guess").unwrap();
            }
        }
        // Every login started before the threads finished two more jobs: one job's time.
        assert_eq!(waits.len(), 200);
        assert!(waits.iter().all(|&wait| wait <= 2), "{waits:?}");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Admit(u8),
        Serve,
        Finish { failed: bool },
        TakeBack(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u8..=6).prop_map(Step::Admit),
            2 => Just(Step::Serve),
            2 => any::<bool>().prop_map(|failed| Step::Finish { failed }),
            1 => any::<usize>().prop_map(Step::TakeBack),
        ]
    }

    proptest! {
        /// Whatever clients do, the queue stays within its bound, `would_shed` says what `admit`
        /// does, and a client with nothing queued gets a place whenever another holds two.
        #[test]
        fn a_client_with_nothing_queued_is_refused_only_when_every_client_holds_one_place(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut state = State::new(5);
            let mut running = Vec::new();
            let mut tags = Vec::new();
            for step in steps {
                match step {
                    Step::Admit(octet) => {
                        let client = key(octet);
                        let newcomer = state.queued_by(&client) == 0;
                        let someone_holds_two = state.clients.values().any(|c| c.queued >= 2);
                        let predicted_shed = state.would_shed(&client);
                        let admitted = state.admit(client, "job");
                        prop_assert_eq!(admitted.is_err(), predicted_shed);
                        if newcomer && someone_holds_two {
                            prop_assert!(admitted.is_ok());
                        }
                        if let Ok((tag, _)) = admitted {
                            tags.push(tag);
                        }
                    }
                    Step::Serve => running.extend(state.next_job().map(|(client, _)| client)),
                    Step::Finish { failed } => {
                        if let Some(client) = running.pop() {
                            state.finished(client, if failed { FAILURE_TURNS } else { 0 });
                        }
                    }
                    Step::TakeBack(index) => {
                        if !tags.is_empty() {
                            state.take_back(tags.swap_remove(index % tags.len()));
                        }
                    }
                }
                prop_assert!(state.queue.len() <= state.max_pending);
                let counted: usize = state.clients.values().map(|c| c.queued).sum();
                prop_assert_eq!(counted, state.queue.len());
                let crowded = state.clients.values().filter(|c| c.queued >= 2).count();
                prop_assert_eq!(crowded, state.crowded);
            }
        }
    }
}
