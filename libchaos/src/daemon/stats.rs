//! Latency samples and rates for `chaos pool status`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::protocol::Percentiles;

/// Samples kept per series: enough for a stable p99, bounded memory.
const KEEP: usize = 4096;

/// The most recent durations of one kind of event.
#[derive(Debug, Default)]
pub struct Samples(VecDeque<Duration>);

impl Samples {
    pub fn add(&mut self, d: Duration) {
        if self.0.len() == KEEP {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let mut v: Vec<Duration> = self.0.iter().copied().collect();
        v.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of samples at or below it.
        let at = |p: usize| {
            let rank = (p * v.len()).div_ceil(100).max(1);
            super::ms(v[rank.min(v.len()) - 1])
        };
        Percentiles {
            count: v.len(),
            p50_ms: at(50),
            p90_ms: at(90),
            p99_ms: at(99),
        }
    }
}

/// Events per second over a sliding window.
#[derive(Debug)]
pub struct Rate {
    window: Duration,
    events: VecDeque<Instant>,
}

impl Rate {
    pub fn new(window: Duration) -> Rate {
        Rate {
            window,
            events: VecDeque::new(),
        }
    }

    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
        self.events.push_back(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&t) = self.events.front() {
            if now.duration_since(t) <= self.window {
                break;
            }
            self.events.pop_front();
        }
    }

    /// Events per second over the window, or over `alive` if that is shorter.
    pub fn per_second(&mut self, now: Instant, alive: Duration) -> f64 {
        self.expire(now);
        let span = alive.min(self.window).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        self.events.len() as f64 / span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::default();
        assert_eq!(s.percentiles().count, 0);
        for ms in 1..=100 {
            s.add(Duration::from_millis(ms));
        }
        let p = s.percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
    }

    #[test]
    fn only_the_most_recent_samples_are_kept() {
        let mut s = Samples::default();
        for _ in 0..KEEP {
            s.add(Duration::from_millis(1000));
        }
        for _ in 0..KEEP {
            s.add(Duration::from_millis(1));
        }
        assert_eq!(s.percentiles().p99_ms, 1.0);
    }

    #[test]
    fn rate_counts_the_window_only() {
        let start = Instant::now();
        let mut r = Rate::new(Duration::from_secs(10));
        for i in 0..20 {
            r.tick(start + Duration::from_millis(500 * i));
        }
        // 20 events in 10 s, seen 10 s after the first.
        let now = start + Duration::from_secs(10);
        assert_eq!(r.per_second(now, Duration::from_secs(100)), 2.0);
        // Much later, they have all expired.
        assert_eq!(
            r.per_second(start + Duration::from_secs(60), Duration::from_secs(100)),
            0.0
        );
    }
}
