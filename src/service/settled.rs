//! Wakes the attempts parked behind checks of the same (subject, client) pair when one of those
//! checks ends, so that a parked attempt asks the throttle again at once instead of polling.
//! Pairs share a fixed number of wake-up channels (a collision only costs a spurious look at
//! the database), so nothing here grows with what strangers send.

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Notify, futures::Notified};

const CHANNELS: usize = 64;

pub(super) struct Settled {
    channels: [Notify; CHANNELS],
    /// Keyed per process, so a client cannot pick emails that share its victim's channel.
    keys: RandomState,
}

impl Settled {
    pub(super) fn new() -> Self {
        Self { channels: std::array::from_fn(|_| Notify::new()), keys: RandomState::new() }
    }

    fn channel(&self, subject: &str, client: &str) -> &Notify {
        &self.channels[(self.keys.hash_one((subject, client)) % CHANNELS as u64) as usize]
    }

    /// A future that completes once a check of the pair ends after this call (made before the
    /// database is asked, so an end in between is not missed).
    pub(super) fn next_end(&self, subject: &str, client: &str) -> Notified<'_> {
        self.channel(subject, client).notified()
    }

    /// A check of the pair ended (whatever its outcome): its parked attempts look again.
    pub(super) fn ended(&self, subject: &str, client: &str) {
        self.channel(subject, client).notify_waiters();
    }
}
