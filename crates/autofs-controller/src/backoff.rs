//! Exponential backoff with jitter, and the tiny generator behind the jitter (and DNS query
//! ids): nothing here needs cryptographic randomness, only nodes that do not retry in step.

use std::time::Duration;

/// xorshift64* — small, fast, good enough to spread retries.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock, the pid and a per-process counter.
    pub fn seeded() -> Rng {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let c = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Rng::from_seed(nanos ^ c ^ u64::from(std::process::id()).rotate_left(32))
    }

    /// A generator with a fixed seed (tests).
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Settings of exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Delays `initial · 2ⁿ` capped at `max`, each drawn uniformly from the upper half
/// ("equal jitter"): never shorter than half the nominal delay, never in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: Rng,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            attempt: 0,
            rng: Rng::seeded(),
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self
            .config
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.config.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = nominal / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.rng.next_u64() % span)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds_and_cap() {
        let config = BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut b = Backoff::new(config);
        for nominal_ms in [100u64, 200, 400, 800, 1000, 1000, 1000] {
            let d = b.next_delay();
            let nominal = Duration::from_millis(nominal_ms);
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_retries() {
        let mut a = Rng::from_seed(1);
        let values: std::collections::HashSet<u64> =
            (0..100).map(|_| a.next_u64() % 1000).collect();
        assert!(values.len() > 50);
    }
}
