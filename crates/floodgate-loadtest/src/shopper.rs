//! One shopper: an async task that walks a journey and records every step from its intended start.
//!
//! A step's intended start is the shopper's arrival for the first step, and the end of the
//! previous step plus the think time after that. Anything that delays a step — a late generator,
//! a busy connection pool, a slow answer before it — is counted in the step's response time.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::{Exchange, Failure, Pool, Response, Target};
use crate::metrics::{Metrics, Milestone, Outcome};
use crate::scenario::{Action, Journey, Method, OrderAction, QueueWait, Scenario, Step};
use crate::template::{Template, Values};

/// Longest wait a `Retry-After` can impose between attempts.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// First retry backoff; doubles per attempt, with full jitter.
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Poll interval when the waiting room does not say.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// What every shopper of a run shares.
#[derive(Debug)]
pub struct RunContext {
    /// The scenario.
    pub scenario: Scenario,
    /// The run's id, for `{run}`.
    pub run_id: String,
    /// Live metrics.
    pub metrics: Metrics,
    /// Index of each journey's first step among all steps.
    pub step_base: Vec<usize>,
    /// By step index, the request of each step with nothing templated, encoded once.
    fixed_requests: Vec<Option<Vec<u8>>>,
    /// Orders and admissions, for the checks after the run.
    pub ledger: Ledger,
    /// Set when the drain time ran out: shoppers leave at their next step or poll.
    pub stopped: AtomicBool,
    /// Notified when the last shopper alive leaves.
    pub all_left: Notify,
}

/// What the business checks need from the run; touched once per order or admission.
#[derive(Debug, Default)]
pub struct Ledger {
    /// `(order_id, sku, quantity)` of every `202`.
    pub accepted: Mutex<Vec<(String, String, u32)>>,
    /// `(arrival index, microseconds from the run's start)` of every admission.
    pub admissions: Mutex<Vec<(u64, u64)>>,
    /// Orders sent again with the same key.
    pub replays: AtomicU64,
    /// Replays answered with another order id or an error.
    pub replay_mismatches: AtomicU64,
}

impl RunContext {
    /// The context for `scenario`'s run against `target`.
    pub fn new(scenario: Scenario, target: &Target, run_id: String, metrics: Metrics) -> Self {
        let mut step_base = Vec::with_capacity(scenario.journeys.len());
        let mut next = 0;
        for journey in &scenario.journeys {
            step_base.push(next);
            next += journey.steps.len();
        }
        let fixed_requests = scenario
            .steps()
            .map(|step| fixed_request(&step.action, target))
            .collect();
        Self {
            scenario,
            run_id,
            metrics,
            step_base,
            fixed_requests,
            ledger: Ledger::default(),
            stopped: AtomicBool::new(false),
            all_left: Notify::new(),
        }
    }

    /// Counts a shopper alive unless `max_shoppers` already are; call before spawning [`run`].
    pub fn admit(&self) -> bool {
        let limit = self.scenario.generator.max_shoppers as u64;
        self.metrics
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Waits until every shopper has left, or stops them all after `drain`; returns how many
    /// were still in a journey then (each leaves at its next step or poll).
    pub async fn drain(&self, drain: Duration) -> u64 {
        let all_left = async {
            loop {
                let notified = self.all_left.notified();
                if self.metrics.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(drain, all_left).await.is_ok() {
            return 0;
        }
        self.stopped.store(true, Ordering::Release);
        self.metrics.in_flight.load(Ordering::Acquire)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn pick_journey(&self, rng: &mut fastrand::Rng) -> (usize, &Journey) {
        let total: u64 = self
            .scenario
            .journeys
            .iter()
            .map(|j| u64::from(j.weight))
            .sum();
        let mut draw = rng.u64(0..total);
        for (i, journey) in self.scenario.journeys.iter().enumerate() {
            if draw < u64::from(journey.weight) {
                return (i, journey);
            }
            draw -= u64::from(journey.weight);
        }
        unreachable!("the draw is below the sum of the weights")
    }
}

/// The request of a step whose path, body and headers name no value.
fn fixed_request(action: &Action, target: &Target) -> Option<Vec<u8>> {
    let Action::Request {
        method,
        path,
        body,
        headers,
    } = action
    else {
        return None;
    };
    let body = match body {
        Some(body) => Some(body.fixed()?),
        None => None,
    };
    let headers = headers
        .iter()
        .map(|(name, value)| Some((name.as_str(), value.fixed()?)))
        .collect::<Option<Vec<_>>>()?;
    Some(target.request(*method, path.fixed()?, &headers, body.map(str::as_bytes)))
}

/// Decrements a gauge when dropped, so cancelled shoppers are not counted forever.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A shopper counted alive by [`RunContext::admit`]; leaving wakes the drain when it is the last.
struct Alive<'a>(&'a RunContext);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if self.0.metrics.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_left.notify_one();
        }
    }
}

/// What a journey carries from step to step.
#[derive(Debug, Default)]
struct Carried {
    pass: Option<String>,
    order_id: Option<String>,
}

/// How a step ended and what it measured.
struct Ended {
    outcome: Outcome,
    at: Instant,
    service: Option<Duration>,
}

impl Ended {
    /// Ended just now.
    fn now(outcome: Outcome, service: Option<Duration>) -> Self {
        Self {
            outcome,
            at: Instant::now(),
            service,
        }
    }
}

/// Runs shopper number `index`, due to arrive at `due`, counted alive by [`RunContext::admit`],
/// over `pool` (its event loop's).
pub async fn run(context: Arc<RunContext>, pool: Arc<Pool>, index: u64, due: Instant) {
    let _alive = Alive(&context);
    let metrics = &context.metrics;
    let arrived = Instant::now();
    let lag = arrived.saturating_duration_since(due);
    metrics.arrival(
        arrived,
        micros(lag),
        lag > context.scenario.generator.max_lag,
    );

    let scenario = &context.scenario;
    let mut rng =
        fastrand::Rng::with_seed(scenario.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (journey_index, journey) = context.pick_journey(&mut rng);
    let sku = if scenario.values.skus.is_empty() {
        ""
    } else {
        &scenario.values.skus[rng.usize(..scenario.values.skus.len())]
    };
    let mut values = Values {
        run: &context.run_id,
        shopper: index,
        customer: "",
        sku,
        drop: &scenario.values.drop,
    };
    let customer = scenario.values.customer.render(&values);
    values.customer = &customer;

    let shopper = Shopper {
        context: &context,
        pool: &pool,
        index,
        due,
        values,
    };
    let mut carried = Carried::default();
    let mut intended = due;
    for (i, step) in journey.steps.iter().enumerate() {
        let key = context.step_base[journey_index] + i;
        let think = think_time(step, &mut rng);
        if !think.is_zero() {
            intended += think;
            tokio::time::sleep_until(intended).await;
        }
        if context.stopped() {
            return;
        }
        if step.abandon > 0.0 && rng.f64() < step.abandon {
            metrics.step(Instant::now(), key, Outcome::Abandoned, 0, None);
            return;
        }
        let ended = shopper.step(step, key, i, &mut carried, &mut rng).await;
        let response = ended.at.saturating_duration_since(intended);
        metrics.step(
            ended.at,
            key,
            ended.outcome,
            micros(response),
            ended.service.map(micros),
        );
        if ended.outcome != Outcome::Ok {
            return;
        }
        intended = ended.at;
    }
}

fn think_time(step: &Step, rng: &mut fastrand::Rng) -> Duration {
    let (low, high) = step.think;
    if high <= low {
        return low;
    }
    low + Duration::from_micros(rng.u64(0..=micros(high - low)))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Deserialize)]
struct QueueAnswer {
    state: String,
    pass: Option<String>,
    ticket: Option<String>,
    poll_after_ms: Option<u64>,
}

#[derive(Deserialize)]
struct OrderAnswer {
    order_id: String,
}

#[derive(Deserialize)]
struct OrderState {
    state: String,
}

/// How one answer counts for the step that asked.
enum Verdict {
    Done,
    Refused,
    Retry,
    Error,
}

struct Shopper<'a> {
    context: &'a RunContext,
    pool: &'a Pool,
    index: u64,
    due: Instant,
    values: Values<'a>,
}

impl Shopper<'_> {
    async fn step(
        &self,
        step: &Step,
        key: usize,
        position: usize,
        carried: &mut Carried,
        rng: &mut fastrand::Rng,
    ) -> Ended {
        match &step.action {
            Action::Request {
                method,
                path,
                body,
                headers,
            } => {
                let rendered;
                let request = match &self.context.fixed_requests[key] {
                    Some(fixed) => fixed.as_slice(),
                    None => {
                        rendered = self.render_request(*method, path, body.as_ref(), headers);
                        rendered.as_slice()
                    }
                };
                let (_, ended) = self
                    .send(request, step.retries, rng, |response| {
                        match response.status {
                            200..=399 => Verdict::Done,
                            429 | 500..=599 => Verdict::Retry,
                            _ => Verdict::Error,
                        }
                    })
                    .await;
                ended
            }
            Action::Queue {
                wait,
                give_up_after,
            } => {
                self.queue(*wait, *give_up_after, step.retries, carried, rng)
                    .await
            }
            Action::Order(order) => {
                self.order(order, step.retries, position, carried, rng)
                    .await
            }
            Action::AwaitOrder {
                give_up_after,
                poll_every,
            } => {
                self.await_order(
                    carried.order_id.as_deref().unwrap_or(""),
                    *give_up_after,
                    *poll_every,
                )
                .await
            }
        }
    }

    /// Encodes a request step with this shopper's values.
    fn render_request(
        &self,
        method: Method,
        path: &Template,
        body: Option<&Template>,
        headers: &[(String, Template)],
    ) -> Vec<u8> {
        let path = path.render(&self.values);
        let body = body.map(|b| b.render(&self.values));
        let rendered: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.render(&self.values)))
            .collect();
        let header_refs: Vec<(&str, &str)> =
            rendered.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.pool.target().request(
            method,
            &path,
            &header_refs,
            body.as_deref().map(str::as_bytes),
        )
    }

    /// Sends `request`, again after a retryable answer or failure, at most `retries` more times.
    async fn send(
        &self,
        request: &[u8],
        retries: u32,
        rng: &mut fastrand::Rng,
        judge: impl Fn(&Response) -> Verdict,
    ) -> (Option<Response>, Ended) {
        let mut attempt = 0;
        loop {
            let Exchange { result, sent_at } = self.pool.send(request).await;
            let at = Instant::now();
            let service = Some(at.saturating_duration_since(sent_at));
            // An `Err` outcome may be retried; an `Ok` one is final.
            let (outcome, response, retry_after) = match result {
                Ok(response) => {
                    self.context.metrics.status(at, response.status);
                    let outcome = match judge(&response) {
                        Verdict::Done => Ok(Outcome::Ok),
                        Verdict::Refused => Ok(Outcome::Refused),
                        Verdict::Retry => Err(Outcome::HttpError),
                        Verdict::Error => Ok(Outcome::HttpError),
                    };
                    let retry_after = response.retry_after;
                    (outcome, Some(response), retry_after)
                }
                Err(Failure::Timeout) => (Err(Outcome::Timeout), None, None),
                Err(Failure::Connect(_) | Failure::Broken(_)) => {
                    (Err(Outcome::ConnectionError), None, None)
                }
            };
            let retryable = outcome.is_err();
            if !retryable || attempt >= retries {
                let outcome = outcome.unwrap_or_else(|outcome| outcome);
                return (
                    response,
                    Ended {
                        outcome,
                        at,
                        service,
                    },
                );
            }
            attempt += 1;
            let backoff = retry_after.map_or_else(
                || {
                    let ceiling = RETRY_BASE.saturating_mul(1 << attempt.min(6));
                    Duration::from_micros(rng.u64(0..=micros(ceiling)))
                },
                |after| after.min(MAX_RETRY_AFTER),
            );
            tokio::time::sleep(backoff).await;
        }
    }

    async fn queue(
        &self,
        wait: QueueWait,
        give_up_after: Duration,
        retries: u32,
        carried: &mut Carried,
        rng: &mut fastrand::Rng,
    ) -> Ended {
        let target = self.pool.target();
        let path = format!("/api/drops/{}/queue", self.values.drop);
        let body = serde_json::json!({ "customer": self.values.customer }).to_string();
        let join = target.request(Method::Post, &path, &[], Some(body.as_bytes()));
        let (answer, ended) = self.send(&join, retries, rng, judge_queue).await;
        let Some(mut answer) = answer
            .filter(|_| ended.outcome == Outcome::Ok)
            .and_then(|r| parse::<QueueAnswer>(&r))
        else {
            return ended;
        };
        let mut service = ended.service;
        let _waiting = Gauge::enter(&self.context.metrics.waiting);
        let deadline = ended.at + give_up_after;
        loop {
            if self.context.stopped() {
                return Ended::now(Outcome::GaveUp, service);
            }
            if answer.state == "admitted" {
                let at = Instant::now();
                carried.pass = answer.pass;
                self.admitted(at);
                return Ended {
                    outcome: Outcome::Ok,
                    at,
                    service,
                };
            }
            let Some(ticket) = answer.ticket.clone() else {
                return Ended::now(Outcome::HttpError, service);
            };
            let next = match wait {
                QueueWait::Poll => {
                    let pause = answer
                        .poll_after_ms
                        .map_or(DEFAULT_POLL, Duration::from_millis);
                    if Instant::now() + pause >= deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Ended::now(Outcome::GaveUp, service);
                    }
                    tokio::time::sleep(pause).await;
                    let poll =
                        target.request(Method::Get, &format!("/api/queue/{ticket}"), &[], None);
                    // Boxed: a request's state is needed only while it runs, not while the
                    // shopper waits between polls, which is most of a waiting room's memory.
                    let (response, ended) =
                        Box::pin(self.send(&poll, retries, rng, judge_queue)).await;
                    service = ended.service;
                    if ended.outcome != Outcome::Ok {
                        return ended;
                    }
                    response.and_then(|r| parse::<QueueAnswer>(&r))
                }
                QueueWait::Sse => {
                    match tokio::time::timeout_at(deadline, Box::pin(self.listen(&ticket))).await {
                        Ok(Ok(answer)) => Some(answer),
                        Ok(Err(outcome)) => {
                            return Ended::now(outcome, service);
                        }
                        Err(_) => {
                            return Ended::now(Outcome::GaveUp, service);
                        }
                    }
                }
            };
            match next {
                Some(next) if next.state == "sold_out" => {
                    return Ended::now(Outcome::Refused, service);
                }
                Some(next) => answer = next,
                None => {
                    return Ended::now(Outcome::HttpError, service);
                }
            }
        }
    }

    /// Listens on the ticket's event stream until an event says admitted or sold out.
    async fn listen(&self, ticket: &str) -> Result<QueueAnswer, Outcome> {
        let target = self.pool.target();
        let request = target.request(
            Method::Get,
            &format!("/api/queue/{ticket}/events"),
            &[("Accept", "text/event-stream")],
            None,
        );
        let (status, mut events) =
            self.pool
                .stream(&request)
                .await
                .map_err(|failure| match failure {
                    Failure::Timeout => Outcome::Timeout,
                    _ => Outcome::ConnectionError,
                })?;
        self.context.metrics.status(Instant::now(), status);
        if status != 200 {
            return Err(if status == 410 {
                Outcome::Refused
            } else {
                Outcome::HttpError
            });
        }
        loop {
            match events.next_data().await {
                Ok(Some(data)) => {
                    if let Ok(answer) = serde_json::from_str::<QueueAnswer>(&data)
                        && matches!(answer.state.as_str(), "admitted" | "sold_out")
                    {
                        return Ok(answer);
                    }
                }
                Ok(None) | Err(_) => return Err(Outcome::ConnectionError),
            }
        }
    }

    fn admitted(&self, at: Instant) {
        let metrics = &self.context.metrics;
        metrics.milestone(
            at,
            Milestone::Admitted,
            micros(at.saturating_duration_since(self.due)),
        );
        let admission = (self.index, micros(metrics.run_clock(at)));
        self.context
            .ledger
            .admissions
            .lock()
            .expect("ledger lock")
            .push(admission);
    }

    async fn order(
        &self,
        order: &OrderAction,
        retries: u32,
        position: usize,
        carried: &mut Carried,
        rng: &mut fastrand::Rng,
    ) -> Ended {
        let (sku, quantity) = (order.sku.render(&self.values), order.quantity);
        let target = self.pool.target();
        let path = format!("/api/drops/{}/orders", self.values.drop);
        let key = format!("{}-{}-{position}", self.values.run, self.index);
        let mut headers = vec![("Idempotency-Key", key.as_str())];
        if let Some(pass) = &carried.pass {
            headers.push(("Floodgate-Pass", pass.as_str()));
        }
        let body = serde_json::json!({ "customer": self.values.customer, "sku": sku, "quantity": quantity }).to_string();
        let request = target.request(Method::Post, &path, &headers, Some(body.as_bytes()));
        let (answer, ended) = self.send(&request, retries, rng, judge_order).await;
        if ended.outcome != Outcome::Ok {
            return ended;
        }
        let Some(order_id) = answer
            .and_then(|r| parse::<OrderAnswer>(&r))
            .map(|a| a.order_id)
        else {
            return Ended {
                outcome: Outcome::HttpError,
                ..ended
            };
        };
        let metrics = &self.context.metrics;
        metrics.milestone(
            ended.at,
            Milestone::Accepted,
            micros(ended.at.saturating_duration_since(self.due)),
        );
        let ledger = &self.context.ledger;
        ledger
            .accepted
            .lock()
            .expect("ledger lock")
            .push((order_id.clone(), sku, quantity));
        if order.replay > 0.0 && rng.f64() < order.replay {
            ledger.replays.fetch_add(1, Ordering::Relaxed);
            let (again, _) = self.send(&request, retries, rng, judge_order).await;
            let same = again
                .and_then(|r| parse::<OrderAnswer>(&r))
                .is_some_and(|a| a.order_id == order_id);
            if !same {
                ledger.replay_mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
        carried.order_id = Some(order_id);
        ended
    }

    async fn await_order(
        &self,
        order_id: &str,
        give_up_after: Duration,
        poll_every: Duration,
    ) -> Ended {
        let request =
            self.pool
                .target()
                .request(Method::Get, &format!("/api/orders/{order_id}"), &[], None);
        let deadline = Instant::now() + give_up_after;
        let mut service = None;
        loop {
            if self.context.stopped() {
                return Ended::now(Outcome::GaveUp, service);
            }
            let Exchange { result, sent_at } = Box::pin(self.pool.send(&request)).await;
            let at = Instant::now();
            service = Some(at.saturating_duration_since(sent_at)).or(service);
            if let Ok(response) = &result {
                self.context.metrics.status(at, response.status);
                let state = (response.status == 200)
                    .then(|| parse::<OrderState>(response))
                    .flatten();
                match state.as_ref().map(|s| s.state.as_str()) {
                    Some("confirmed") => {
                        let since = micros(at.saturating_duration_since(self.due));
                        self.context
                            .metrics
                            .milestone(at, Milestone::Confirmed, since);
                        return Ended {
                            outcome: Outcome::Ok,
                            at,
                            service,
                        };
                    }
                    Some("rejected" | "failed" | "released") => {
                        return Ended {
                            outcome: Outcome::Refused,
                            at,
                            service,
                        };
                    }
                    _ => {}
                }
            }
            if at + poll_every >= deadline {
                return Ended {
                    outcome: Outcome::GaveUp,
                    at,
                    service,
                };
            }
            tokio::time::sleep(poll_every).await;
        }
    }
}

fn judge_queue(response: &Response) -> Verdict {
    match response.status {
        200 | 202 => Verdict::Done,
        409 | 410 => Verdict::Refused,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Error,
    }
}

/// 409 is a refusal (limit reached, not live) except `request_in_progress`: the same key's first
/// request is still running, and asking again returns its answer.
fn judge_order(response: &Response) -> Verdict {
    match response.status {
        200..=299 => Verdict::Done,
        409 if response
            .body
            .windows(19)
            .any(|w| w == b"request_in_progress") =>
        {
            Verdict::Retry
        }
        409 | 410 => Verdict::Refused,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Error,
    }
}

fn parse<T: for<'de> Deserialize<'de>>(response: &Response) -> Option<T> {
    serde_json::from_slice(&response.body).ok()
}
