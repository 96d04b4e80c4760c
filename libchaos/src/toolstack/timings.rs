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

/// The phases, in the order they ran.
///
/// Phases that follow one another are timed as laps ([`start_laps`](Self::start_laps), then
/// [`lap`](Self::lap) at the end of each): one clock read per phase instead of two. In a PV
/// dom0 without a vDSO clock every read is a system call, and a creation has a dozen phases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timings {
    phases: Vec<Phase>,
    /// When the last lap ended.
    #[serde(skip)]
    lap: Option<Instant>,
}

impl PartialEq for Timings {
    fn eq(&self, other: &Timings) -> bool {
        self.phases == other.phases
    }
}

impl Eq for Timings {}

impl Timings {
    /// Records a phase that started at `start` and ends now.
    pub fn record(&mut self, name: &'static str, start: Instant) {
        self.push(name, start.elapsed());
    }

    pub fn push(&mut self, name: &'static str, took: Duration) {
        self.phases.push(Phase::new(name, took));
    }

    /// A phase that ran before the ones recorded so far (chaosd's checks, measured around the
    /// creation that recorded the rest).
    pub fn push_front(&mut self, name: &'static str, took: Duration) {
        self.phases.insert(0, Phase::new(name, took));
    }

    /// The next lap starts now.
    pub fn start_laps(&mut self) {
        self.lap = Some(Instant::now());
    }

    /// The time since the last lap ended (or laps started), and the next lap starts now.
    pub fn lap_time(&mut self) -> Duration {
        let now = Instant::now();
        let took = self.lap.map_or(Duration::ZERO, |last| now - last);
        self.lap = Some(now);
        took
    }

    /// Records the phase that ran since the last lap ended.
    pub fn lap(&mut self, name: &'static str) {
        let took = self.lap_time();
        self.push(name, took);
    }

    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    pub fn total_us(&self) -> u64 {
        self.phases.iter().map(|p| p.us).sum()
    }

    /// Microseconds of the named phase, if it ran.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_follow_one_another_and_are_not_serialized() {
        let mut t = Timings::default();
        t.start_laps();
        std::thread::sleep(Duration::from_millis(2));
        t.lap("first");
        t.lap("second");
        let between = t.lap_time();
        t.push("pending", between);
        let names: Vec<&str> = t.phases().iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names, ["first", "second", "pending"]);
        assert!(t.get("first").is_some_and(|us| us >= 2000));
        let json = serde_json::to_string(&t).expect("json");
        assert!(json.starts_with('['), "still a plain list: {json}");
        let back: Timings = serde_json::from_str(&json).expect("back");
        assert_eq!(back, t);
    }
}
