//! Token buckets: `rate` per second refills up to `burst`; each request takes one.
//!
//! Time is passed in (an [`Instant`]), so the arithmetic is tested without a clock.
//! [`Limiter`] keeps one bucket per key (a token id, or a client address for failed
//! authentications) behind one short lock per call.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (> 0).
    pub per_second: f64,
    /// Most requests at once (≥ 1).
    pub burst: f64,
}

impl Rate {
    /// `per_second` with a burst of twice that (DESIGN §8), at least 1.
    pub fn per_second(per_second: f64) -> Rate {
        Rate {
            per_second,
            burst: (per_second * 2.0).max(1.0),
        }
    }
}

/// One bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token at `now`, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / rate.per_second))
        }
    }
}

/// Buckets by key. Idle buckets that have refilled are dropped now and then, so the
/// map stays as large as the set of recently active keys.
pub struct Limiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> Default for Limiter<K> {
    fn default() -> Self {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

/// Entries above which a call also sweeps full buckets out.
const SWEEP_ABOVE: usize = 4096;

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// Takes one request for `key` at `rate`; `Err(wait)` when over the rate.
    pub fn check(&self, key: &K, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock();
        if map.len() > SWEEP_ABOVE {
            let full = |b: &Bucket| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate.per_second
                    >= rate.burst
            };
            map.retain(|_, b| !full(b));
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        bucket.take(rate, now)
    }

    /// Whether `key` has a request left at `rate` now, taking nothing; `Err(wait)` when
    /// not.
    pub fn peek(&self, key: &K, rate: Rate, now: Instant) -> Result<(), Duration> {
        let map = self.buckets.lock();
        match map.get(key) {
            None => Ok(()),
            Some(b) => {
                let mut probe = *b;
                probe.take(rate, now)
            }
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let l = Limiter::default();
        let rate = Rate::per_second(10.0);
        let t0 = Instant::now();
        let ok = (0..30).filter(|_| l.check(&1, rate, t0).is_ok()).count();
        assert_eq!(ok, 20, "burst = 2 × rate");
        // Over one simulated second at 1 000 tries/s, about `rate` more get through.
        let ok = (1..=1000)
            .filter(|i| l.check(&1, rate, t0 + Duration::from_millis(*i)).is_ok())
            .count();
        assert_eq!(ok, 10);
    }

    #[test]
    fn an_empty_bucket_says_how_long_to_wait() {
        let l = Limiter::default();
        let rate = Rate {
            per_second: 4.0,
            burst: 1.0,
        };
        let t0 = Instant::now();
        assert!(l.check(&"k", rate, t0).is_ok());
        let wait = l.check(&"k", rate, t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(250));
        assert!(
            l.check(&"k", rate, t0 + wait).is_ok(),
            "refilled after the wait"
        );
    }

    #[test]
    fn peeking_takes_nothing() {
        let l = Limiter::default();
        let rate = Rate {
            per_second: 1.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        assert!(
            l.peek(&"k", rate, t0).is_ok(),
            "an unknown key has its burst"
        );
        for _ in 0..5 {
            assert!(l.peek(&"k", rate, t0).is_ok());
        }
        assert!(l.check(&"k", rate, t0).is_ok());
        assert!(l.check(&"k", rate, t0).is_ok());
        assert_eq!(l.peek(&"k", rate, t0), Err(Duration::from_secs(1)));
        assert!(l.peek(&"k", rate, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn keys_are_independent_and_idle_full_buckets_are_swept() {
        let l = Limiter::default();
        let rate = Rate {
            per_second: 1.0,
            burst: 1.0,
        };
        let t0 = Instant::now();
        for k in 0..=SWEEP_ABOVE {
            assert!(l.check(&k, rate, t0).is_ok(), "key {k} has its own bucket");
        }
        assert!(l.check(&0, rate, t0).is_err());
        // A minute later every bucket is full again; the next call sweeps them.
        assert!(l.check(&0, rate, t0 + Duration::from_secs(60)).is_ok());
        assert!(l.len() <= 1, "swept to the active key, kept {}", l.len());
    }
}
