//! Live recording: per-thread shards of histograms, merged into the timeline once a second.
//!
//! A shopper records into the shard of the thread it runs on (an uncontended lock), never into a
//! channel: a message per request to one metrics task is what makes other generators fall over
//! first. The merger takes each shard's seconds once a second and closes the seconds that can
//! no longer change.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::record::{SecondRecord, Sparse, StepSecond, histogram, record};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was for (2xx/3xx; admitted; order accepted; order final).
    Ok,
    /// The shop said no for a business reason: sold out, limit reached, not live.
    Refused,
    /// The shopper left before the step, as the scenario's `abandon` asked.
    Abandoned,
    /// The shopper stopped waiting after `give_up_after_s`.
    GaveUp,
    /// An answer that is an error (4xx other than refusals, 5xx), after any retries.
    HttpError,
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be opened or broke.
    ConnectionError,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 7] = [
        Self::Ok,
        Self::Refused,
        Self::Abandoned,
        Self::GaveUp,
        Self::HttpError,
        Self::Timeout,
        Self::ConnectionError,
    ];

    /// The name used in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Abandoned => "abandoned",
            Self::GaveUp => "gave_up",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
        }
    }

    /// Whether it counts against the error rate.
    pub fn is_error(name: &str) -> bool {
        matches!(name, "http_error" | "timeout" | "connection_error")
    }
}

/// Moments of a journey measured from the shopper's arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// Got a pass from the waiting room.
    Admitted,
    /// Got a `202` for an order.
    Accepted,
    /// The order became `confirmed`.
    Confirmed,
}

impl Milestone {
    /// The name used in records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Accepted => "accepted",
            Self::Confirmed => "confirmed",
        }
    }
}

#[derive(Debug)]
struct StepLive {
    outcomes: [u64; Outcome::ALL.len()],
    response: Histogram<u64>,
    service: Histogram<u64>,
}

/// One second's figures while the run is on.
#[derive(Debug)]
struct SecondLive {
    arrivals: u64,
    late: u64,
    lag: Histogram<u64>,
    runtime_lag: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    steps: Vec<Option<StepLive>>,
    milestones: [Option<Histogram<u64>>; 3],
}

impl SecondLive {
    fn new(steps: usize) -> Self {
        Self {
            arrivals: 0,
            late: 0,
            lag: histogram(),
            runtime_lag: histogram(),
            statuses: BTreeMap::new(),
            steps: (0..steps).map(|_| None).collect(),
            milestones: [None, None, None],
        }
    }

    fn step(&mut self, step: usize) -> &mut StepLive {
        self.steps[step].get_or_insert_with(|| StepLive {
            outcomes: [0; Outcome::ALL.len()],
            response: histogram(),
            service: histogram(),
        })
    }

    fn absorb(&mut self, other: SecondLive) {
        self.arrivals += other.arrivals;
        self.late += other.late;
        let _ = self.lag.add(&other.lag);
        let _ = self.runtime_lag.add(&other.runtime_lag);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (i, step) in other.steps.into_iter().enumerate() {
            if let Some(step) = step {
                let mine = self.step(i);
                for (total, n) in mine.outcomes.iter_mut().zip(step.outcomes) {
                    *total += n;
                }
                let _ = mine.response.add(&step.response);
                let _ = mine.service.add(&step.service);
            }
        }
        for (mine, theirs) in self.milestones.iter_mut().zip(other.milestones) {
            if let Some(theirs) = theirs {
                let _ = mine.get_or_insert_with(histogram).add(&theirs);
            }
        }
    }

    fn close(self, second: u32, step_keys: &[String], gauges: (u64, u64)) -> SecondRecord {
        let steps = self
            .steps
            .into_iter()
            .zip(step_keys)
            .filter_map(|(step, key)| {
                let step = step?;
                let outcomes = Outcome::ALL
                    .iter()
                    .zip(step.outcomes)
                    .filter(|&(_, n)| n > 0)
                    .map(|(outcome, n)| (outcome.name().to_owned(), n))
                    .collect();
                Some((
                    key.clone(),
                    StepSecond {
                        outcomes,
                        response: Sparse::of(&step.response),
                        service: Sparse::of(&step.service),
                    },
                ))
            })
            .collect();
        let milestones = [
            Milestone::Admitted,
            Milestone::Accepted,
            Milestone::Confirmed,
        ]
        .iter()
        .zip(self.milestones)
        .filter_map(|(m, h)| Some((m.name().to_owned(), Sparse::of(&h?))))
        .collect();
        SecondRecord {
            second,
            arrivals: self.arrivals,
            late: self.late,
            lag: Sparse::of(&self.lag),
            runtime_lag: Sparse::of(&self.runtime_lag),
            waiting: gauges.0,
            in_flight: gauges.1,
            statuses: self.statuses,
            steps,
            milestones,
        }
    }
}

/// A shard: the seconds recorded on one thread since the last merge (usually one or two).
#[derive(Debug, Default)]
struct Shard {
    seconds: Vec<(u32, SecondLive)>,
}

impl Shard {
    fn second(&mut self, second: u32, steps: usize) -> &mut SecondLive {
        let at = match self.seconds.iter().position(|(s, _)| *s == second) {
            Some(at) => at,
            None => {
                self.seconds.push((second, SecondLive::new(steps)));
                self.seconds.len() - 1
            }
        };
        &mut self.seconds[at].1
    }
}

/// The live metrics of a run.
#[derive(Debug)]
pub struct Metrics {
    start: Instant,
    step_keys: Vec<String>,
    shards: Vec<Mutex<Shard>>,
    /// Shoppers inside a queue step.
    pub waiting: AtomicU64,
    /// Shoppers inside a journey.
    pub in_flight: AtomicU64,
    merged: Mutex<Merged>,
}

#[derive(Debug, Default)]
struct Merged {
    open: BTreeMap<u32, SecondLive>,
    closed: Vec<SecondRecord>,
    gauges: BTreeMap<u32, (u64, u64)>,
}

thread_local! {
    /// This thread's shard number, handed out round-robin.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

impl Metrics {
    /// Metrics for a run that started at `start`, with one shard per expected thread (twice the
    /// CPUs, so a thread rarely shares its shard).
    pub fn new(start: Instant, step_keys: Vec<String>) -> Self {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        Self {
            start,
            step_keys,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            waiting: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            merged: Mutex::default(),
        }
    }

    /// Time since the run's start.
    pub fn run_clock(&self, at: Instant) -> std::time::Duration {
        at.saturating_duration_since(self.start)
    }

    /// The second of the run clock `at` falls in.
    pub fn second_of(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.start).as_secs()).unwrap_or(u32::MAX)
    }

    fn with_second(&self, at: Instant, record: impl FnOnce(&mut SecondLive)) {
        let shard = SHARD.with(|cell| {
            cell.get().unwrap_or_else(|| {
                let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                cell.set(Some(n));
                n
            })
        }) % self.shards.len();
        let mut shard = self.shards[shard].lock().expect("metrics shard lock");
        record(shard.second(self.second_of(at), self.step_keys.len()));
    }

    /// An arrival started `lag_us` after it was due.
    pub fn arrival(&self, at: Instant, lag_us: u64, late: bool) {
        self.with_second(at, |s| {
            s.arrivals += 1;
            s.late += u64::from(late);
            record(&mut s.lag, lag_us, 1);
        });
    }

    /// The runtime probe woke `lag_us` after it was due.
    pub fn runtime_lag(&self, at: Instant, lag_us: u64) {
        self.with_second(at, |s| record(&mut s.runtime_lag, lag_us, 1));
    }

    /// An answer's status code.
    pub fn status(&self, at: Instant, status: u16) {
        self.with_second(at, |s| *s.statuses.entry(status).or_default() += 1);
    }

    /// A step ended at `at` with `outcome`, `response_us` after its intended start; `service_us`
    /// is the last request's as-sent time, when a request was sent.
    pub fn step(
        &self,
        at: Instant,
        step: usize,
        outcome: Outcome,
        response_us: u64,
        service_us: Option<u64>,
    ) {
        self.with_second(at, |s| {
            let step = s.step(step);
            step.outcomes[outcome as usize] += 1;
            if !matches!(outcome, Outcome::Abandoned) {
                record(&mut step.response, response_us, 1);
            }
            if let Some(service) = service_us {
                record(&mut step.service, service, 1);
            }
        });
    }

    /// A journey reached `milestone`, `since_arrival_us` after the shopper arrived.
    pub fn milestone(&self, at: Instant, milestone: Milestone, since_arrival_us: u64) {
        self.with_second(at, |s| {
            let histogram = s.milestones[milestone as usize].get_or_insert_with(histogram);
            record(histogram, since_arrival_us, 1);
        });
    }

    /// Takes every shard's seconds into the merged timeline; seconds before `now`'s previous
    /// second are closed. Returns the newest closed second's record for live display.
    pub fn merge(&self, now: Instant) -> Option<SecondRecord> {
        let current = self.second_of(now);
        let mut merged = self.merged.lock().expect("merged lock");
        let gauges = (
            self.waiting.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
        );
        merged.gauges.insert(current, gauges);
        for shard in &self.shards {
            let seconds = std::mem::take(&mut shard.lock().expect("metrics shard lock").seconds);
            for (second, live) in seconds {
                let steps = self.step_keys.len();
                merged
                    .open
                    .entry(second)
                    .or_insert_with(|| SecondLive::new(steps))
                    .absorb(live);
            }
        }
        let mut newest = None;
        while let Some(entry) = merged.open.first_entry() {
            if *entry.key() + 1 >= current {
                break;
            }
            let (second, live) = entry.remove_entry();
            let gauge = merged.gauges.get(&second).copied().unwrap_or_default();
            let record = live.close(second, &self.step_keys, gauge);
            newest = Some(record.clone());
            merged.closed.push(record);
        }
        newest
    }

    /// Closes every second and returns the whole timeline, one record per second from 0.
    pub fn finish(&self, now: Instant) -> Vec<SecondRecord> {
        self.merge(now);
        let mut merged = self.merged.lock().expect("merged lock");
        let open = std::mem::take(&mut merged.open);
        for (second, live) in open {
            let gauge = merged.gauges.get(&second).copied().unwrap_or_default();
            merged
                .closed
                .push(live.close(second, &self.step_keys, gauge));
        }
        let mut by_second: BTreeMap<u32, SecondRecord> = std::mem::take(&mut merged.closed)
            .into_iter()
            .map(|r| (r.second, r))
            .collect();
        let last = by_second
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.second_of(now));
        (0..=last)
            .map(|second| {
                by_second.remove(&second).unwrap_or_else(|| {
                    let gauge = merged.gauges.get(&second).copied().unwrap_or_default();
                    SecondRecord {
                        second,
                        waiting: gauge.0,
                        in_flight: gauge.1,
                        ..SecondRecord::default()
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn records_from_many_threads_land_in_their_seconds() {
        let start = Instant::now();
        let metrics = std::sync::Arc::new(Metrics::new(start, vec!["j/a".into(), "j/b".into()]));
        std::thread::scope(|scope| {
            for t in 0..4 {
                let metrics = &metrics;
                scope.spawn(move || {
                    for i in 0..1000u64 {
                        let at = start + Duration::from_millis(i % 3 * 1000);
                        metrics.step(at, (t % 2) as usize, Outcome::Ok, 1000 + i, Some(10));
                        metrics.status(at, 200);
                    }
                });
            }
        });
        metrics.merge(start + Duration::from_millis(1500));
        let timeline = metrics.finish(start + Duration::from_secs(5));
        assert_eq!(timeline.len(), 6);
        let total: u64 = timeline.iter().flat_map(|s| s.statuses.values()).sum();
        assert_eq!(total, 4000);
        let second_0 = &timeline[0].steps["j/a"];
        assert_eq!(second_0.outcomes["ok"], 2 * 334);
        assert!(timeline[5].steps.is_empty());
    }
}
