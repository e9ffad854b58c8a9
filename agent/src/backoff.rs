//! How long the agent waits before dialling the server again: exponential backoff with full
//! jitter.
//!
//! After the n-th failure in a row the wait is drawn uniformly between zero and
//! `min(cap, base × 2ⁿ)`. Drawing from the whole range (rather than adding a little noise to a
//! fixed delay) spreads thousands of agents that lost the server at the same moment over the
//! whole window, so a restarted server is not met by all of them at once. The count starts
//! again after a connection that stayed up a while.

use std::time::Duration;

use rand::Rng;

/// The first ceiling: one second.
pub const DEFAULT_BASE: Duration = Duration::from_secs(1);

/// The largest wait: one minute.
pub const DEFAULT_CAP: Duration = Duration::from_mins(1);

/// Failures in a row and the bounds of the next wait.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    #[must_use]
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The wait before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = full_jitter(ceiling(self.base, self.cap, self.failures), rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Starts counting again, after a connection that lasted.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row have been counted.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `min(cap, base × 2^failures)`, without overflow for any count.
#[must_use]
pub fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// A wait drawn uniformly from `[0, ceiling]`, to the millisecond.
pub fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn the_ceiling_doubles_from_the_base_and_stops_at_the_cap() {
        let ceilings: Vec<u64> = (0..9)
            .map(|n| ceiling(DEFAULT_BASE, DEFAULT_CAP, n).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(ceiling(DEFAULT_BASE, DEFAULT_CAP, u32::MAX), DEFAULT_CAP);
        assert_eq!(
            ceiling(Duration::MAX, DEFAULT_CAP, 3),
            DEFAULT_CAP,
            "an overflowing product is the cap"
        );
    }

    #[test]
    fn every_delay_is_within_zero_and_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(DEFAULT_BASE, DEFAULT_CAP);
        for failures in 0..50 {
            let bound = ceiling(DEFAULT_BASE, DEFAULT_CAP, failures);
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= bound, "failure {failures}: {delay:?} > {bound:?}");
            assert!(delay <= Duration::from_mins(1));
        }
        assert_eq!(backoff.failures(), 50);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(&mut rng) <= DEFAULT_BASE);
    }

    #[test]
    fn the_jitter_covers_the_whole_range() {
        // Full jitter: draws reach from near zero to near the ceiling, not a band around it.
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..2000)
            .map(|_| full_jitter(DEFAULT_CAP, &mut rng))
            .collect();
        let min = draws.iter().min().unwrap();
        let max = draws.iter().max().unwrap();
        assert!(*min < Duration::from_secs(1), "{min:?}");
        assert!(*max > Duration::from_secs(59), "{max:?}");
        let below_half = draws
            .iter()
            .filter(|d| **d < Duration::from_secs(30))
            .count();
        assert!(
            (800..1200).contains(&below_half),
            "{below_half} of 2000 below half"
        );
        assert_eq!(full_jitter(Duration::ZERO, &mut rng), Duration::ZERO);
    }
}
