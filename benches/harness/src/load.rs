//! The load generator: N agents, each a task applying its own work items in order,
//! closed loop (next item as soon as the previous one is answered) or open loop (items
//! due at a fixed aggregate rate, whatever the answers do).
//!
//! The agents run on threads of their own ([`LoadThreads`]), not on the harness's
//! runtime.
//!
//! Open-loop latency is measured from when an item was *due*, not from when it was
//! sent, so a system that falls behind its schedule shows it in the percentiles (no
//! coordinated omission); the time from send to answer is kept apart as `service`.
//! Every run is bounded in count (`max_items`) and in time: closed loop, no item starts
//! after `duration`; open loop, every item due within `duration` is sent, however late,
//! until `2 × duration` (what is still unsent then counts as failed); each item has its
//! own timeout.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::stats::Recorder;

/// How items are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Each agent sends its next item when the previous one is answered.
    Closed,
    /// Items are due at `rate` per second in total, spread evenly over the agents.
    Open {
        /// Items per second, all agents together.
        rate: f64,
    },
}

impl Pace {
    /// `closed` or `open`.
    pub fn name(&self) -> &'static str {
        match self {
            Pace::Closed => "closed",
            Pace::Open { .. } => "open",
        }
    }

    /// The open-loop rate, if any.
    pub fn rate(&self) -> Option<f64> {
        match self {
            Pace::Closed => None,
            Pace::Open { rate } => Some(*rate),
        }
    }
}

/// Bounds of a run.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// No item starts after this much time.
    pub duration: Duration,
    /// At most this many items in total.
    pub max_items: u64,
    /// One item may take at most this long (then it counts as an error).
    pub item_timeout: Duration,
    /// An agent stops after this many consecutive failures (its later items depend on
    /// the failed ones; a query that timed out will time out again).
    pub give_up_after: u32,
}

/// The default of [`Bounds::give_up_after`] for writes.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 50;

/// What a run measured.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Latency from due time (open loop) or send time (closed loop) to answer.
    pub latency: Recorder,
    /// Latency from send to answer.
    pub service: Recorder,
    /// Wall time from the first item to the last answer.
    pub elapsed: Duration,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

/// The threads the agents run on: one per core, each a current-thread tokio runtime of
/// its own, as wrk runs one event loop per thread. An agent, the connections it dials
/// and its timers then stay on one thread (no work stealing, no cross-thread wake-ups),
/// and the load has threads of its own beside the server's. They live as long as the
/// process, so whatever a client library spawned on them (connection tasks) keeps
/// running between series.
struct LoadThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl LoadThreads {
    /// The process's load threads, started on first use; `None` if no thread could be
    /// started (the agents then run on the caller's runtime).
    fn get() -> Option<&'static LoadThreads> {
        static THREADS: OnceLock<Option<LoadThreads>> = OnceLock::new();
        THREADS.get_or_init(LoadThreads::start).as_ref()
    }

    fn start() -> Option<LoadThreads> {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("bench-load-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
        }
        Some(LoadThreads {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Spawns `f` on the next thread, round robin.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(f)
    }
}

/// Spawns an agent: on the load threads, or on the caller's runtime without them.
fn spawn_agent<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    match LoadThreads::get() {
        Some(t) => t.spawn(f),
        None => tokio::spawn(f),
    }
}

/// When agent `agent` of `agents` should send its `k`-th item, relative to the start.
pub fn due(pace: Pace, agents: usize, agent: usize, k: u64) -> Duration {
    match pace {
        Pace::Closed => Duration::ZERO,
        Pace::Open { rate } => {
            let slot = k as f64 * agents.max(1) as f64 + agent as f64;
            Duration::from_secs_f64(slot / rate.max(1e-9))
        }
    }
}

/// Runs `agents` (one iterator of items each) against `apply`.
pub async fn drive<W, I, F, Fut>(
    agents: Vec<I>,
    pace: Pace,
    bounds: Bounds,
    progress: &ProgressBar,
    apply: F,
) -> LoadOutcome
where
    W: Send + 'static,
    I: Iterator<Item = W> + Send + 'static,
    F: Fn(W) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let n = agents.len().max(1);
    let per_agent = bounds.max_items.div_ceil(n as u64);
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = tokio::time::Instant::now();
    let deadline = start + bounds.duration;
    let mut tasks = Vec::with_capacity(n);
    for (a, mut items) in agents.into_iter().enumerate() {
        let apply = apply.clone();
        let progress = progress.clone();
        let first_error = first_error.clone();
        tasks.push(spawn_agent(async move {
            let mut latency = Recorder::default();
            let mut service = Recorder::default();
            let mut failures = 0u32;
            for k in 0..per_agent {
                let now = tokio::time::Instant::now();
                let due_at = match pace {
                    Pace::Closed if now >= deadline => break,
                    Pace::Closed => now,
                    Pace::Open { .. } => {
                        let d = start + due(pace, n, a, k);
                        if d >= deadline {
                            break;
                        }
                        if now >= deadline + bounds.duration {
                            // Hopelessly behind: what was due and not sent counts as
                            // failed, so the report shows it.
                            latency.error();
                            service.error();
                            note(
                                &first_error,
                                "behind schedule: items due were not sent".into(),
                            );
                            continue;
                        }
                        d
                    }
                };
                let Some(item) = items.next() else { break };
                // Only sleep for an item not yet due: tokio's timer rounds a deadline up
                // to its next millisecond tick, so sleeping until `now` (every closed-loop
                // item) would add up to a millisecond to each measured latency.
                if due_at > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due_at).await;
                }
                let sent = tokio::time::Instant::now();
                let res = tokio::time::timeout(bounds.item_timeout, apply(item)).await;
                let done = tokio::time::Instant::now();
                match res {
                    Ok(Ok(())) => {
                        failures = 0;
                        service.record(done - sent);
                        latency.record(done - due_at);
                    }
                    Ok(Err(e)) => {
                        failures += 1;
                        note(&first_error, format!("{e:#}"));
                        latency.error();
                        service.error();
                    }
                    Err(_) => {
                        failures += 1;
                        note(
                            &first_error,
                            format!("no answer within {:?}", bounds.item_timeout),
                        );
                        latency.error();
                        service.error();
                    }
                }
                progress.inc(1);
                if failures >= bounds.give_up_after.max(1) {
                    break;
                }
            }
            (latency, service)
        }));
    }
    let mut out = LoadOutcome::default();
    for t in tasks {
        match t.await {
            Ok((l, s)) => {
                out.latency.merge(&l);
                out.service.merge(&s);
            }
            Err(e) => note(&first_error, format!("agent task failed: {e}")),
        }
    }
    out.elapsed = start.elapsed();
    out.first_error = first_error.lock().take();
    out
}

fn note(slot: &Mutex<Option<String>>, e: String) {
    let mut g = slot.lock();
    if g.is_none() {
        *g = Some(e);
    }
}

/// Runs `op` over and over from one client, closed loop, within `bounds` (queries).
pub async fn repeat<F, Fut>(bounds: Bounds, progress: &ProgressBar, op: F) -> LoadOutcome
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let items = std::iter::repeat_n((), usize::try_from(bounds.max_items).unwrap_or(usize::MAX));
    drive(vec![items], Pace::Closed, bounds, progress, move |()| op()).await
}

/// Measures a blocking in-process call (`f`) in a tight loop on this thread, bounded
/// like [`repeat`]; `f` returns an error to count.
pub fn repeat_blocking(
    bounds: Bounds,
    progress: &ProgressBar,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> LoadOutcome {
    let mut out = LoadOutcome::default();
    let start = Instant::now();
    for _ in 0..bounds.max_items {
        if start.elapsed() >= bounds.duration {
            break;
        }
        let t = Instant::now();
        match f() {
            Ok(()) => {
                let d = t.elapsed();
                out.latency.record(d);
                out.service.record(d);
            }
            Err(e) => {
                out.latency.error();
                out.service.error();
                if out.first_error.is_none() {
                    out.first_error = Some(format!("{e:#}"));
                }
            }
        }
        progress.inc(1);
    }
    out.elapsed = start.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn bounds(ms: u64, max: u64) -> Bounds {
        Bounds {
            duration: Duration::from_millis(ms),
            max_items: max,
            item_timeout: Duration::from_secs(5),
            give_up_after: MAX_CONSECUTIVE_ERRORS,
        }
    }

    #[test]
    fn open_loop_slots_interleave_agents() {
        let p = Pace::Open { rate: 100.0 };
        assert_eq!(due(p, 4, 0, 0), Duration::ZERO);
        assert_eq!(due(p, 4, 1, 0), Duration::from_millis(10));
        assert_eq!(due(p, 4, 0, 1), Duration::from_millis(40));
        assert_eq!(due(p, 4, 3, 2), Duration::from_millis(110));
        assert_eq!(due(Pace::Closed, 4, 3, 2), Duration::ZERO);
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_item_bound() {
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let agents: Vec<_> = (0..3).map(|_| 0..u64::MAX).collect();
        let out = drive(
            agents,
            Pace::Closed,
            bounds(60_000, 30),
            &ProgressBar::hidden(),
            move |_| {
                let s = s.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    s.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(seen.load(Ordering::Relaxed), 30);
        assert_eq!(out.latency.count(), 30);
        assert!(out.first_error.is_none());
    }

    /// A closed loop sends the next item at once: an item that takes no time is
    /// measured in microseconds, not at the timer's millisecond tick.
    #[tokio::test]
    async fn closed_loop_adds_no_timer_tick() {
        let out = drive(
            (0..1).map(|_| 0..u64::MAX).collect(),
            Pace::Closed,
            bounds(60_000, 2_000),
            &ProgressBar::hidden(),
            |_| async { Ok(()) },
        )
        .await;
        let l = out.latency.summary(out.elapsed);
        assert_eq!(out.latency.count(), 2_000);
        assert!(l.p50_us < 200.0, "a no-op item measured at {l:?}");
    }

    #[tokio::test]
    async fn open_loop_keeps_its_rate_and_charges_queueing() {
        // 100/s for 0.6 s over 2 agents, but each item takes 30 ms: each agent's items
        // are due every 20 ms, so it falls behind and latency (from due time) grows
        // while service time stays at 30 ms.
        let agents: Vec<_> = (0..2).map(|_| 0..u64::MAX).collect();
        let out = drive(
            agents,
            Pace::Open { rate: 100.0 },
            bounds(600, 1_000),
            &ProgressBar::hidden(),
            |_| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(())
            },
        )
        .await;
        let s = out.service.summary(out.elapsed);
        let l = out.latency.summary(out.elapsed);
        assert!(s.p50_us >= 30_000.0 && s.p50_us < 45_000.0, "service {s:?}");
        assert!(l.max_us > 200_000.0, "queueing shows: {l:?}");
        // Items due before the deadline were all sent, late ones included.
        assert_eq!(out.latency.count(), 60);
    }

    #[tokio::test]
    async fn time_bound_errors_and_timeouts() {
        let agents: Vec<_> = (0..1).map(|_| 0..u64::MAX).collect();
        let out = drive(
            agents,
            Pace::Closed,
            Bounds {
                duration: Duration::from_millis(100),
                max_items: u64::MAX,
                item_timeout: Duration::from_millis(5),
                give_up_after: MAX_CONSECUTIVE_ERRORS,
            },
            &ProgressBar::hidden(),
            |i| async move {
                if i % 2 == 0 {
                    anyhow::bail!("even item {i}");
                }
                // Far beyond the 5 ms item timeout, so no odd item can finish first
                // even when a loaded machine fires both timers in the same tick.
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(out.latency.count(), 0);
        assert!(out.latency.errors() > 5);
        assert_eq!(out.first_error.as_deref(), Some("even item 0"));
        assert!(out.elapsed <= Duration::from_millis(1_000));
    }

    #[tokio::test]
    async fn an_agent_gives_up_after_consecutive_failures() {
        let out = drive(
            (0..1).map(|_| 0..u64::MAX).collect(),
            Pace::Closed,
            bounds(60_000, u64::MAX),
            &ProgressBar::hidden(),
            |_| async { anyhow::bail!("down") },
        )
        .await;
        assert_eq!(out.latency.errors(), u64::from(MAX_CONSECUTIVE_ERRORS));
    }

    #[test]
    fn blocking_repeat_counts() {
        let mut n = 0;
        let out = repeat_blocking(bounds(10_000, 7), &ProgressBar::hidden(), || {
            n += 1;
            Ok(())
        });
        assert_eq!(n, 7);
        assert_eq!(out.latency.count(), 7);
    }
}
