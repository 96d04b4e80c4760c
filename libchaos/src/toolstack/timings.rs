//! Per-phase timings of a creation, so a user can see where the time goes.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One phase and how long it took, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Borrowed when recorded here, owned when read back (from chaosd's replies).
    pub name: Cow<'static, str>,
    pub us: u64,
}

impl Phase {
    fn new(name: &'static str, took: Duration) -> Phase {
        Phase {
            name: Cow::Borrowed(name),
            us: took.as_micros().try_into().unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timings(Vec<Phase>);

impl Timings {
    /// Records a phase that started at `start` and ends now.
    pub fn record(&mut self, name: &'static str, start: Instant) {
        self.push(name, start.elapsed());
    }

    pub fn push(&mut self, name: &'static str, took: Duration) {
        self.0.push(Phase::new(name, took));
    }

    /// A phase that ran before the ones recorded so far (chaosd's checks, measured around the
    /// creation that recorded the rest).
    pub fn push_front(&mut self, name: &'static str, took: Duration) {
        self.0.insert(0, Phase::new(name, took));
    }

    pub fn phases(&self) -> &[Phase] {
        &self.0
    }

    pub fn total_us(&self) -> u64 {
        self.0.iter().map(|p| p.us).sum()
    }

    /// Microseconds of the named phase, if it ran.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|p| p.name == name).map(|p| p.us)
    }
}
