//! Exponential backoff with jitter. The jitter needs no cryptographic randomness, only nodes
//! that do not retry in step: [`fastrand`] (seeded per generator from the OS's randomness).

use std::time::Duration;

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
    rng: fastrand::Rng,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            attempt: 0,
            rng: fastrand::Rng::new(),
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
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(self.rng.u64(0..=span))
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
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        let mut b = Backoff {
            rng: fastrand::Rng::with_seed(1),
            ..Backoff::new(config)
        };
        let values: std::collections::HashSet<Duration> =
            (0..100).map(|_| b.next_delay()).collect();
        assert!(values.len() > 50, "{values:?}");
    }
}
