//! A process-wide circuit breaker on AWS errors: when too many recent calls fail with an
//! outage-like error (throttling, 5xx, timeouts, connection failures), new remediation pauses
//! so the controller does not pile onto an AWS-side outage. Detection goes on; the breaker
//! closes by itself once the window holds fewer failures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker settings.
#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// How far back calls count.
    pub window: Duration,
    /// Fewer calls than this in the window never open the breaker.
    pub min_calls: usize,
    /// Opens when at least this share of the window's calls failed.
    pub failure_ratio: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), min_calls: 20, failure_ratio: 0.5 }
    }
}

/// The breaker: a sliding window of call outcomes.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    calls: Mutex<VecDeque<(Instant, bool)>>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, calls: Mutex::new(VecDeque::new()) }
    }

    /// Records one call: `failed` only for outage-like errors.
    pub fn record(&self, failed: bool) {
        self.record_at(Instant::now(), failed);
    }

    /// Whether new remediation should pause now.
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    fn record_at(&self, now: Instant, failed: bool) {
        let mut calls = self.calls.lock().expect("not poisoned");
        calls.push_back((now, failed));
        Self::expire(&mut calls, now, self.config.window);
    }

    fn is_open_at(&self, now: Instant) -> bool {
        let mut calls = self.calls.lock().expect("not poisoned");
        Self::expire(&mut calls, now, self.config.window);
        let failed = calls.iter().filter(|(_, f)| *f).count();
        calls.len() >= self.config.min_calls && failed as f64 >= self.config.failure_ratio * calls.len() as f64
    }

    fn expire(calls: &mut VecDeque<(Instant, bool)>, now: Instant, window: Duration) {
        while calls.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
            calls.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_a_failing_window_and_closes_as_it_slides() {
        let b = Breaker::new(BreakerConfig { window: Duration::from_secs(10), min_calls: 4, failure_ratio: 0.5 });
        let t0 = Instant::now();
        for i in 0..3 {
            b.record_at(t0 + Duration::from_secs(i), true);
        }
        assert!(!b.is_open_at(t0 + Duration::from_secs(3)), "below min_calls");
        b.record_at(t0 + Duration::from_secs(3), false);
        assert!(b.is_open_at(t0 + Duration::from_secs(4)), "3 of 4 failed");
        for i in 4..8 {
            b.record_at(t0 + Duration::from_secs(i), false);
        }
        assert!(!b.is_open_at(t0 + Duration::from_secs(8)), "3 of 8 failed is under half");
    }

    #[test]
    fn successes_and_time_close_it() {
        let b = Breaker::new(BreakerConfig { window: Duration::from_secs(10), min_calls: 2, failure_ratio: 0.5 });
        let t0 = Instant::now();
        b.record_at(t0, true);
        b.record_at(t0, true);
        assert!(b.is_open_at(t0));
        assert!(!b.is_open_at(t0 + Duration::from_secs(11)), "the failures left the window");
        b.record_at(t0 + Duration::from_secs(12), true);
        b.record_at(t0 + Duration::from_secs(12), false);
        b.record_at(t0 + Duration::from_secs(12), false);
        assert!(!b.is_open_at(t0 + Duration::from_secs(12)), "1 of 3 failed");
    }
}
