//! One run: the open-model schedule, the drain, the checks, and the record.
//!
//! Arrivals are started on schedule whatever the target answers: the scheduler never waits for
//! a shopper. An arrival that starts late is started anyway, with its lateness counted in every
//! figure and in the generator's report, which marks the run invalid when lateness is common.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::checks;
use crate::client::{Pool, Target};
use crate::event_loops::EventLoops;
use crate::metrics::Metrics;
use crate::record::{GeneratorReport, Machine, RunRecord, SCHEMA, SecondRecord, histogram};
use crate::scenario::Scenario;
use crate::shopper::{self, RunContext};
use crate::summary;

/// Runs `scenario` against `target`; `progress` draws a live bar on the terminal. Fails only
/// when the generator's threads cannot start.
pub async fn execute(
    scenario: Scenario,
    target: Target,
    run_id: String,
    progress: bool,
) -> std::io::Result<RunRecord> {
    let started_at = now_rfc3339();
    let loops = EventLoops::start(
        scenario.generator.threads,
        &target,
        scenario.http.max_connections,
        scenario.http.timeout,
    )?;
    // The checks before and after the run have connections of their own, on this runtime.
    let checks_pool = Arc::new(Pool::new(
        target.clone(),
        scenario.http.max_connections,
        scenario.http.timeout,
    ));
    let stock_before = match &scenario.checked_drop {
        Some(drop) => Some(checks::stock(&checks_pool, drop).await),
        None => None,
    };
    let step_keys: Vec<String> = scenario.steps().map(|s| s.key.clone()).collect();
    let start = Instant::now();
    let metrics = Metrics::new(start, step_keys.clone());
    let context = Arc::new(RunContext::new(scenario, &target, run_id, metrics));
    let scenario = &context.scenario;

    let bar = progress_bar(progress, scenario.arrivals.planned());
    let merger = tokio::spawn(merge_every_second(Arc::clone(&context), bar.clone()));
    loops.spawn_on_each(|| probe_runtime_lag(Arc::clone(&context)));

    let mut generator = GeneratorReport {
        planned: scenario.arrivals.planned(),
        max_lag_us: scenario.generator.max_lag.as_micros() as u64,
        ..GeneratorReport::default()
    };
    let loops = Arc::new(loops);
    let arrivals = {
        let (context, loops) = (Arc::clone(&context), Arc::clone(&loops));
        tokio::task::spawn_blocking(move || start_arrivals(&context, &loops, start))
    };
    (generator.started, generator.not_started) = arrivals.await.expect("the arrival thread");
    generator.unfinished = context.drain(scenario.generator.drain).await;
    // The last reference: the loops stop, and shoppers still in a journey are cancelled. Joining
    // their threads blocks, so it is done off this runtime.
    tokio::task::spawn_blocking(move || drop(loops))
        .await
        .expect("stopping the event loops");
    merger.abort();
    bar.finish_and_clear();

    let timeline = context.metrics.finish(Instant::now());
    generator.late = timeline.iter().map(|s| s.late).sum();
    let mut runtime_lag = histogram();
    for second in &timeline {
        second.runtime_lag.add_to(&mut runtime_lag);
    }
    generator.runtime_lag_p99_us = runtime_lag.value_at_quantile(0.99);
    generator.peak_rss_bytes = peak_rss_bytes();
    generator.invalid = invalid_reasons(&generator, scenario, &timeline);
    let run_seconds = timeline.len() as u32;
    let checks = match (&scenario.checked_drop, stock_before) {
        (Some(drop), Some(stock_before)) => {
            checks::audit(checks_pool, drop.clone(), stock_before, &context.ledger).await
        }
        _ => Default::default(),
    };
    let admissions = std::mem::take(&mut *context.ledger.admissions.lock().expect("ledger lock"));
    Ok(RunRecord {
        schema: SCHEMA,
        run_id: context.run_id.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        target: target.url,
        scenario: scenario.name.clone(),
        scenario_hash: scenario.hash.clone(),
        machine: machine(),
        steps: step_keys,
        phases: summary::phases(&scenario.arrivals, run_seconds),
        generator,
        timeline,
        checks,
        fairness: summary::fairness(admissions),
    })
}

/// The shortest sleep between batches of arrivals: waking the runtime for every arrival of a
/// fast schedule would cost more than the arrivals themselves (tokio's own timer ticks in ms).
const ARRIVAL_TICK: Duration = Duration::from_millis(1);

/// Starts every arrival of the schedule on time, the loops taking turns; returns how many
/// started and how many were refused for `max_shoppers`.
///
/// It runs on a thread of its own and sleeps on the OS clock: tokio's timers are driven by the
/// runtime's threads, so a sleep on them wakes late exactly when those are busy, and arrivals
/// would then start late and in bursts. Started this way, an arrival that still runs late
/// waited for its loop, and its lag says so.
fn start_arrivals(context: &Arc<RunContext>, loops: &EventLoops, start: Instant) -> (u64, u64) {
    let scenario = &context.scenario;
    let (mut started, mut not_started) = (0, 0);
    for (index, offset) in scenario.arrivals.schedule(scenario.seed).enumerate() {
        let due = start + Duration::from_secs_f64(offset);
        let early = due.saturating_duration_since(Instant::now());
        if !early.is_zero() {
            std::thread::sleep(early.max(ARRIVAL_TICK));
        }
        if !context.admit() {
            not_started += 1;
            continue;
        }
        let index = index as u64;
        loops.spawn(index, |pool| {
            shopper::run(Arc::clone(context), pool, index, due)
        });
        started += 1;
    }
    (started, not_started)
}

/// Sleeps 10 ms at a time on an event loop and records how late it woke: the time a shopper's
/// next step waits for its loop when the loop is busy.
async fn probe_runtime_lag(context: Arc<RunContext>) {
    const PERIOD: Duration = Duration::from_millis(10);
    let mut due = Instant::now() + PERIOD;
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        context
            .metrics
            .runtime_lag(now, now.saturating_duration_since(due).as_micros() as u64);
        due = now + PERIOD;
    }
}

/// Merges the shards once a second and shows the last whole second on the bar.
async fn merge_every_second(context: Arc<RunContext>, bar: ProgressBar) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut started = 0;
    loop {
        ticks.tick().await;
        let Some(second) = context.metrics.merge(Instant::now()) else {
            continue;
        };
        started += second.arrivals;
        bar.set_position(started);
        let answers: u64 = second.statuses.values().sum();
        let errors: u64 = second
            .steps
            .values()
            .flat_map(|s| &s.outcomes)
            .filter(|(name, _)| crate::metrics::Outcome::is_error(name))
            .map(|(_, n)| n)
            .sum();
        let mut latency = histogram();
        for step in second.steps.values() {
            step.response.add_to(&mut latency);
        }
        let p99_ms = latency.value_at_quantile(0.99) as f64 / 1e3;
        bar.set_message(format!(
            "{answers} answers/s · {errors} errors · p99 {p99_ms:.1} ms · {} waiting · {} in journeys",
            second.waiting, second.in_flight
        ));
    }
}

fn progress_bar(shown: bool, planned: u64) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(planned);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} shoppers · {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

fn invalid_reasons(
    generator: &GeneratorReport,
    scenario: &Scenario,
    timeline: &[SecondRecord],
) -> Vec<String> {
    let mut reasons = Vec::new();
    let limits = &scenario.generator;
    if generator.runtime_lag_p99_us as u128 > limits.max_lag.as_micros() {
        reasons.push(format!(
            "the generator's runtime woke {:.1} ms late (p99), over the {} ms allowed: it was too busy to send on time",
            generator.runtime_lag_p99_us as f64 / 1e3,
            limits.max_lag.as_millis(),
        ));
    }
    if generator.started > 0
        && generator.late as f64 > limits.max_late_share * generator.started as f64
    {
        let mut lag = histogram();
        for second in timeline {
            second.lag.add_to(&mut lag);
        }
        reasons.push(format!(
            "{} of {} arrivals ({:.2} %) started more than {} ms late (p99 lag {:.1} ms): the generator was saturated",
            generator.late,
            generator.started,
            100.0 * generator.late as f64 / generator.started as f64,
            limits.max_lag.as_millis(),
            lag.value_at_quantile(0.99) as f64 / 1e3,
        ));
    }
    if generator.not_started > 0 {
        reasons.push(format!(
            "{} arrivals were not started: {} shoppers were alive (generator.max_shoppers)",
            generator.not_started, limits.max_shoppers
        ));
    }
    reasons
}

/// `YYYYmmdd-HHMMSS-xxxxxx`: sorts by time, unique enough for one runs directory.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{:06x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        fastrand::u32(..0x100_0000)
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        os: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        host,
    }
}

/// The process's peak resident set (`VmHWM`), where the platform tells.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib = line
                    .strip_prefix("VmHWM:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim();
                kib.parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}
