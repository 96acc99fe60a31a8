//! The loop every scenario is measured with, and its one row format: closed-loop clients for a
//! fixed time, successes, sheds and errors counted apart, so that rows of any scenario compare.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The outcome of one scenario.
pub(super) struct Report {
    pub(super) name: String,
    pub(super) concurrency: usize,
    pub(super) ok: u64,
    pub(super) shed: u64,
    pub(super) errors: u64,
    pub(super) elapsed: Duration,
    pub(super) latency: Histogram<u64>,
}

impl Report {
    pub(super) fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub(super) fn print(&self) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<26} {:>4} {:>9} {:>7} {:>6} {:>11.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            self.name,
            self.concurrency,
            self.ok,
            self.shed,
            self.errors,
            self.rps(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.latency.max() as f64 / 1000.0
        );
    }
}

pub(super) fn print_header() {
    println!(
        "{:<26} {:>4} {:>9} {:>7} {:>6} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "conc", "ok", "shed", "errors", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
}

pub(super) fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant figures.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// What a shed client does before it resends.
#[derive(Clone, Copy)]
pub(super) enum Backoff {
    /// Honours the server's RetryInfo, as a well-behaved client does.
    RetryInfo,
    /// Retries after 10 ms, as a flood does.
    Hostile,
    /// Resends at once, as ghz and most naive clients do.
    Immediate,
}

/// Runs `call` from `concurrency` tasks until `duration` has passed. `call(task, n)` returns
/// Ok, or the status it failed with; RESOURCE_EXHAUSTED counts as shed, not as an error, and
/// the shed client honours RetryInfo (see [`run_with`] for the others).
pub(super) async fn run<F, Fut>(name: &str, concurrency: usize, duration: Duration, call: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    run_with(name, concurrency, duration, Backoff::RetryInfo, call).await
}

/// As [`run`], a shed client doing as `backoff` says.
pub(super) async fn run_with<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    backoff: Backoff,
    call: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    run_until(name, concurrency, duration, None, backoff, call).await
}

/// As [`run_with`], ending early once `finished` is set.
pub(super) async fn run_until<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    finished: Option<Arc<AtomicBool>>,
    backoff: Backoff,
    call: F,
) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let call = Arc::clone(&call);
            let finished = finished.clone();
            tokio::spawn(async move {
                let (mut latency, mut ok, mut shed, mut errors) = (histogram(), 0u64, 0u64, 0u64);
                let mut n = 0u64;
                while Instant::now() < deadline
                    && !finished.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
                {
                    let begun = Instant::now();
                    match call(task, n).await {
                        Ok(()) => {
                            ok += 1;
                            latency.saturating_record(begun.elapsed().as_micros() as u64);
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            shed += 1;
                            let retry_info =
                                status.get_error_details().retry_info().and_then(|info| info.retry_delay);
                            let pause = match backoff {
                                Backoff::RetryInfo => retry_info.unwrap_or(Duration::from_millis(100)),
                                Backoff::Hostile => Duration::from_millis(10),
                                Backoff::Immediate => Duration::ZERO,
                            };
                            if !pause.is_zero() {
                                let left = deadline.saturating_duration_since(Instant::now());
                                tokio::time::sleep(pause.min(left)).await;
                            }
                        }
                        Err(status) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("{}: {:?}: {}", task, status.code(), status.message());
                            }
                        }
                    }
                    n += 1;
                }
                (latency, ok, shed, errors)
            })
        })
        .collect();
    let mut report = Report {
        name: name.into(),
        concurrency,
        ok: 0,
        shed: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let (latency, ok, shed, errors) = task.await.expect("load task");
        report.latency.add(latency).expect("same histogram bounds");
        report.ok += ok;
        report.shed += shed;
        report.errors += errors;
    }
    report.elapsed = started.elapsed();
    report
}

pub(super) type BoxedCall = std::pin::Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

pub(super) fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}
