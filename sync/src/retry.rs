//! Retry policy: *whether* to retry is the error's business ([`Retriable`]), *when* is
//! the [`Backoff`]'s — capped exponential backoff with full jitter: attempt `n` (from 0)
//! waits a uniformly random time in `[0, min(cap, base · 2ⁿ)]`.
//!
//! [`retry`] runs an operation under a policy until it succeeds, fails with an error that
//! is not retriable, or the shutdown signal fires. It is the driver's only retry loop:
//! setup, reads of the log, writes, cursor commits and dead letters all go through it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::error::{ErrorClass, SinkError};

/// A boxed future borrowing for `'a` (what an operation under [`retry`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Classifies an error as worth retrying as it is, or not.
pub trait Retriable {
    /// True when the same operation, called again unchanged, may succeed.
    fn is_retriable(&self) -> bool;
}

/// Only [`ErrorClass::Retriable`]: a lost connection needs `setup` first, and a
/// permanent error never passes.
impl Retriable for SinkError {
    fn is_retriable(&self) -> bool {
        self.class == ErrorClass::Retriable
    }
}

/// Capped exponential backoff with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Largest ceiling of any wait.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The longest wait after failed attempt `attempt` (0-based): `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait for `attempt` given a uniform sample `u` in `[0, 1]` (deterministic part).
    pub fn delay_at(&self, attempt: u32, u: f64) -> Duration {
        self.ceiling(attempt).mul_f64(u.clamp(0.0, 1.0))
    }

    /// A random wait for `attempt`: uniform in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let u: f64 = rand::rng().random_range(0.0..=1.0);
        self.delay_at(attempt, u)
    }
}

/// Sleeps `d`, or returns false early when `shutdown` becomes true (or its sender is gone).
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

/// Counts the failed attempts of one operation and waits the backoff between them.
#[derive(Clone, Debug)]
pub struct Attempts {
    policy: Backoff,
    failed: u32,
}

impl Attempts {
    /// A fresh count under `policy`.
    pub fn new(policy: Backoff) -> Attempts {
        Attempts { policy, failed: 0 }
    }

    /// Failed attempts so far.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Records a failure and waits its backoff; false if `shutdown` fired meanwhile.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let d = self.policy.delay(self.failed);
        self.failed = self.failed.saturating_add(1);
        sleep_or_shutdown(d, shutdown).await
    }
}

/// Runs `op` on `ctx` until it succeeds or fails with an error that is not retriable,
/// waiting `policy.delay(n)` after the `n`-th retriable failure and calling `on_retry`
/// with it first. Returns `None` if `shutdown` fires while waiting (the first attempt
/// always runs, and an attempt in flight is never cancelled by this function). `ctx` is what the
/// operation borrows mutably on each attempt (a sink, a batch), so `op` can be a plain
/// closure returning a boxed future: `|sink| Box::pin(sink.setup())`.
pub async fn retry<C, T, E>(
    policy: &Backoff,
    shutdown: &mut watch::Receiver<bool>,
    ctx: &mut C,
    mut on_retry: impl FnMut(&E, u32),
    mut op: impl for<'c> FnMut(&'c mut C) -> BoxFuture<'c, Result<T, E>>,
) -> Option<Result<T, E>>
where
    C: ?Sized,
    E: Retriable,
{
    let mut attempts = Attempts::new(*policy);
    loop {
        match op(ctx).await {
            Ok(v) => return Some(Ok(v)),
            Err(e) if e.is_retriable() => {
                on_retry(&e, attempts.failed());
                if !attempts.wait(shutdown).await {
                    return None;
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::time::Instant;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let got: Vec<u128> = (0..8).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let p = policy();
        assert_eq!(p.delay_at(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay_at(3, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay_at(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.delay_at(3, 7.0), Duration::from_millis(800));
        for a in 0..10 {
            for _ in 0..100 {
                assert!(p.delay(a) <= p.ceiling(a));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retriable_errors_within_the_backoff_budget() {
        let (_tx, mut rx) = watch::channel(false);
        let mut calls = 0u32;
        let retried = Cell::new(0u32);
        let started = Instant::now();
        let out = retry(
            &policy(),
            &mut rx,
            &mut calls,
            |_e: &SinkError, _| retried.set(retried.get() + 1),
            |calls| {
                *calls += 1;
                let n = *calls;
                Box::pin(async move {
                    if n <= 4 {
                        Err(SinkError::retriable("down"))
                    } else {
                        Ok(n)
                    }
                })
            },
        )
        .await;
        assert_eq!(out, Some(Ok(5)));
        assert_eq!(retried.get(), 4);
        // Waits were at most 100 + 200 + 400 + 800 ms of virtual time.
        assert!(
            started.elapsed() <= Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lost_and_permanent_errors_are_returned_at_once() {
        let (_tx, mut rx) = watch::channel(false);
        for e in [
            SinkError::permanent("CHECK violated"),
            SinkError::lost("schema gone"),
        ] {
            let started = Instant::now();
            let out: Option<Result<(), SinkError>> = retry(
                &policy(),
                &mut rx,
                &mut (),
                |_, _| panic!("no retry"),
                |()| {
                    let e = e.clone();
                    Box::pin(async move { Err(e) })
                },
            )
            .await;
            assert_eq!(out, Some(Err(e)));
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_wait() {
        let (tx, mut rx) = watch::channel(false);
        let p = Backoff {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(60),
        };
        let task = tokio::spawn(async move {
            retry(
                &p,
                &mut rx,
                &mut (),
                |_, _| {},
                |()| Box::pin(async { Err::<(), _>(SinkError::retriable("down")) }),
            )
            .await
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tx.send_replace(true);
        let started = Instant::now();
        assert_eq!(task.await.unwrap(), None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
