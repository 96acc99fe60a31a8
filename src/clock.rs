//! The one source of "now". Tests move it forward instead of sleeping until a token expires.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Microseconds added to the system time; only tests change it.
    skew_micros: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    /// The current time at microsecond precision, the finest both databases keep.
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now() + TimeDelta::microseconds(self.skew_micros.load(Ordering::Relaxed));
        now.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(now)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.skew_micros.fetch_add(micros, Ordering::Relaxed);
    }
}
