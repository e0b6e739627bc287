//! Scenarios: who arrives when, what each shopper does, and what the run must show.
//!
//! A scenario is TOML (see `scenarios/drop.toml` in the repository). It is parsed into raw
//! serde structs and then validated as a whole, so one run reports every problem with its path.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::arrivals::{Arrivals, ArrivalsSpec};
use crate::template::{Template, Var};
use crate::threshold::Condition;

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name; runs are compared only with runs of the same name.
    pub name: String,
    /// Seeds the arrival spacing and every shopper's random choices, so reruns are alike.
    pub seed: u64,
    /// When shoppers arrive.
    pub arrivals: Arrivals,
    /// Connection settings.
    pub http: HttpSettings,
    /// What makes a run invalid because the generator itself fell behind.
    pub generator: GeneratorSettings,
    /// Values templates draw from.
    pub values: ValueSettings,
    /// The journeys, at least one, drawn by weight.
    pub journeys: Vec<Journey>,
    /// Conditions checked after the run.
    pub thresholds: Vec<Threshold>,
    /// Noise bands for comparisons with a baseline.
    pub compare: CompareSettings,
    /// The drop whose stock the business checks read before and after the run.
    pub checked_drop: Option<String>,
    /// SHA-256 of the scenario text: runs are comparable only when it is equal.
    pub hash: String,
    /// The scenario text, stored with each run.
    pub text: String,
}

/// HTTP client settings.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Whole-request limit; a timed-out request counts with its elapsed time.
    pub timeout: Duration,
    /// Most open connections at once; requests beyond wait for one (the wait counts in latency).
    pub max_connections: usize,
}

/// Limits on the generator's own lag.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorSettings {
    /// An arrival started later than this after its intended time counts as late.
    pub max_lag: Duration,
    /// The run is invalid when more than this share of arrivals were late.
    pub max_late_share: f64,
    /// Most shoppers alive at once; arrivals beyond are counted as not started.
    pub max_shoppers: usize,
    /// How long to wait for shoppers still in a journey after the last arrival.
    pub drain: Duration,
    /// The generator's threads, each an event loop with its share of the connections; 0 for one
    /// per CPU. On a machine shared with the target, fewer threads than CPUs leave it room.
    pub threads: usize,
}

/// Compare settings: differences inside these bands are noise.
#[derive(Debug, Clone, Copy)]
pub struct CompareSettings {
    /// Relative band for latency and throughput, e.g. 0.2 for ±20 %.
    pub noise: f64,
    /// Latency differences smaller than this are noise whatever their ratio.
    pub min_delta: Duration,
    /// Error-rate increases up to this many percentage points are noise.
    pub error_rate_points: f64,
    /// A step or phase with fewer samples than this is not compared.
    pub min_samples: u64,
}

/// Values templates draw from.
#[derive(Debug, Clone)]
pub struct ValueSettings {
    /// `{drop}`.
    pub drop: String,
    /// `{customer}`, rendered per shopper.
    pub customer: Template,
    /// `{sku}` is drawn uniformly from these.
    pub skus: Vec<String>,
}

/// A sequence of steps one shopper walks through.
#[derive(Debug, Clone)]
pub struct Journey {
    /// Its name.
    pub name: String,
    /// Relative weight among journeys.
    pub weight: u32,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// One step of a journey.
#[derive(Debug, Clone)]
pub struct Step {
    /// `"journey/step"`: the key of its figures.
    pub key: String,
    /// A pause before the step, drawn uniformly from this range.
    pub think: (Duration, Duration),
    /// Probability the shopper leaves before the step.
    pub abandon: f64,
    /// Extra attempts after a retryable failure (429, 5xx, timeout, connection error),
    /// each with the same idempotency key.
    pub retries: u32,
    /// What the step does.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// One HTTP request; 2xx and 3xx are success.
    Request {
        /// GET or POST.
        method: Method,
        /// The path and query.
        path: Template,
        /// The body, for POST.
        body: Option<Template>,
        /// Extra headers.
        headers: Vec<(String, Template)>,
    },
    /// Joins `{drop}`'s waiting room and waits until admitted.
    Queue {
        /// Poll the ticket or listen on its event stream.
        wait: QueueWait,
        /// The shopper gives up after waiting this long.
        give_up_after: Duration,
    },
    /// Places an order with an idempotency key and the pass from an earlier queue step.
    Order(OrderAction),
    /// Polls the order from the journey's order step until it is final.
    AwaitOrder {
        /// The shopper stops looking after this long.
        give_up_after: Duration,
        /// Between polls.
        poll_every: Duration,
    },
}

/// What an order step orders.
#[derive(Debug, Clone)]
pub struct OrderAction {
    /// `{sku}` unless said otherwise.
    pub sku: Template,
    /// Units.
    pub quantity: u32,
    /// Probability of sending the same order again after its 202, to check the replay.
    pub replay: f64,
}

/// The two request methods a step can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
}

/// How a queue step learns it was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueWait {
    /// `GET /api/queue/{ticket}` every `poll_after_ms`.
    Poll,
    /// `GET /api/queue/{ticket}/events`.
    Sse,
}

/// A threshold on one step (or `*`: every step) in one phase.
#[derive(Debug, Clone)]
pub struct Threshold {
    /// A step key or `*`.
    pub step: String,
    /// A phase name: `all`, `ramp`, `peak`, `first_60s`.
    pub phase: String,
    /// The condition.
    pub condition: Condition,
}

/// Phase names the report and thresholds know.
pub const PHASES: [&str; 4] = ["all", "ramp", "peak", "first_60s"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    seed: u64,
    arrivals: ArrivalsSpec,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    generator: RawGenerator,
    #[serde(default)]
    values: RawValues,
    journeys: Vec<RawJourney>,
    #[serde(default)]
    thresholds: Vec<RawThreshold>,
    #[serde(default)]
    compare: RawCompare,
    #[serde(default)]
    checks: RawChecks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    timeout_ms: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerator {
    max_lag_ms: Option<f64>,
    max_late_share: Option<f64>,
    max_shoppers: Option<usize>,
    drain_s: Option<f64>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValues {
    drop: Option<String>,
    customer: Option<String>,
    #[serde(default)]
    skus: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJourney {
    name: String,
    #[serde(default = "one")]
    weight: u32,
    steps: Vec<RawStep>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    get: Option<String>,
    post: Option<String>,
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    queue: Option<QueueWait>,
    order: Option<RawOrder>,
    #[serde(default)]
    await_order: bool,
    think_ms: Option<RawThink>,
    abandon: Option<f64>,
    retries: Option<u32>,
    give_up_after_s: Option<f64>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawThink {
    Fixed(u64),
    Range([u64; 2]),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrder {
    sku: Option<String>,
    quantity: Option<u32>,
    replay: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    #[serde(default = "every_step")]
    step: String,
    #[serde(default = "whole_run")]
    phase: String,
    expect: Vec<String>,
}

fn every_step() -> String {
    "*".to_owned()
}

fn whole_run() -> String {
    "all".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    noise: Option<f64>,
    min_delta_ms: Option<f64>,
    error_rate_points: Option<f64>,
    min_samples: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    drop: Option<String>,
}

impl Scenario {
    /// Parses and validates a scenario; every problem comes back with its key path.
    pub fn from_toml(text: &str) -> Result<Self, Vec<String>> {
        let raw: RawScenario = toml::from_str(text).map_err(|error| vec![error.to_string()])?;
        let mut problems = Vec::new();
        let arrivals = raw.arrivals.build("arrivals", &mut problems);
        let http = raw.http.validate(&mut problems);
        let generator = raw.generator.validate(&mut problems);
        let compare = raw.compare.validate(&mut problems);
        let values = raw.values.validate(&mut problems);
        let mut journeys = Vec::with_capacity(raw.journeys.len());
        if raw.journeys.is_empty() {
            problems.push("journeys: list at least one journey".to_owned());
        }
        for (j, journey) in raw.journeys.into_iter().enumerate() {
            journeys.push(journey.validate(&format!("journeys[{j}]"), &values, &mut problems));
        }
        let mut seen = std::collections::HashSet::new();
        for step in journeys.iter().flat_map(|j| &j.steps) {
            if !seen.insert(step.key.as_str()) {
                problems.push(format!(
                    "journeys: step {:?} appears twice; step names must be unique within a journey",
                    step.key
                ));
            }
        }
        if journeys.iter().map(|j| u64::from(j.weight)).sum::<u64>() == 0 {
            problems.push("journeys: at least one journey needs a weight above 0".to_owned());
        }
        let mut thresholds = Vec::new();
        for (t, raw_threshold) in raw.thresholds.into_iter().enumerate() {
            let path = format!("thresholds[{t}]");
            if raw_threshold.step != "*" && !seen.contains(raw_threshold.step.as_str()) {
                problems.push(format!(
                    "{path}.step: no step {:?} (steps are named \"journey/step\")",
                    raw_threshold.step
                ));
            }
            if !PHASES.contains(&raw_threshold.phase.as_str()) {
                problems.push(format!(
                    "{path}.phase: {:?} is not one of {PHASES:?}",
                    raw_threshold.phase
                ));
            }
            for (e, text) in raw_threshold.expect.iter().enumerate() {
                match Condition::parse(text) {
                    Ok(condition) => thresholds.push(Threshold {
                        step: raw_threshold.step.clone(),
                        phase: raw_threshold.phase.clone(),
                        condition,
                    }),
                    Err(problem) => problems.push(format!("{path}.expect[{e}]: {problem}")),
                }
            }
        }
        let checked_drop = raw.checks.drop.or_else(|| {
            let orders = journeys
                .iter()
                .flat_map(|j| &j.steps)
                .any(|s| matches!(s.action, Action::Order(_)));
            (orders && !values.drop.is_empty()).then(|| values.drop.clone())
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            name: raw.name,
            seed: raw.seed,
            arrivals,
            http,
            generator,
            values,
            journeys,
            thresholds,
            compare,
            checked_drop,
            hash: hex(&Sha256::digest(text.as_bytes())),
            text: text.to_owned(),
        })
    }

    /// Every step, in journey order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.journeys.iter().flat_map(|journey| &journey.steps)
    }
}

impl RawHttp {
    fn validate(self, problems: &mut Vec<String>) -> HttpSettings {
        let timeout_ms = self.timeout_ms.unwrap_or(10_000);
        let max_connections = self.max_connections.unwrap_or(512);
        if timeout_ms == 0 {
            problems.push("http.timeout_ms: must be at least 1".to_owned());
        }
        if max_connections == 0 {
            problems.push("http.max_connections: must be at least 1".to_owned());
        }
        HttpSettings {
            timeout: Duration::from_millis(timeout_ms),
            max_connections,
        }
    }
}

impl RawGenerator {
    fn validate(self, problems: &mut Vec<String>) -> GeneratorSettings {
        let max_lag_ms = self.max_lag_ms.unwrap_or(50.0);
        let max_late_share = self.max_late_share.unwrap_or(0.01);
        let drain_s = self.drain_s.unwrap_or(120.0);
        if !(max_lag_ms.is_finite() && max_lag_ms >= 0.0) {
            problems.push("generator.max_lag_ms: must be ≥ 0".to_owned());
        }
        if !(0.0..=1.0).contains(&max_late_share) {
            problems.push("generator.max_late_share: must be between 0 and 1".to_owned());
        }
        if !(drain_s.is_finite() && drain_s >= 0.0) {
            problems.push("generator.drain_s: must be ≥ 0".to_owned());
        }
        GeneratorSettings {
            max_lag: Duration::from_secs_f64(max_lag_ms.max(0.0) / 1e3),
            max_late_share,
            max_shoppers: self.max_shoppers.unwrap_or(1_000_000),
            drain: Duration::from_secs_f64(drain_s.clamp(0.0, 86_400.0)),
            threads: self.threads.unwrap_or(0),
        }
    }
}

impl RawCompare {
    fn validate(self, problems: &mut Vec<String>) -> CompareSettings {
        let noise = self.noise.unwrap_or(0.2);
        let min_delta_ms = self.min_delta_ms.unwrap_or(2.0);
        let error_rate_points = self.error_rate_points.unwrap_or(0.5);
        if !(0.0..10.0).contains(&noise) {
            problems.push("compare.noise: must be a fraction like 0.2".to_owned());
        }
        if !(min_delta_ms.is_finite() && min_delta_ms >= 0.0) {
            problems.push("compare.min_delta_ms: must be ≥ 0".to_owned());
        }
        if !(0.0..=100.0).contains(&error_rate_points) {
            problems.push("compare.error_rate_points: must be between 0 and 100".to_owned());
        }
        CompareSettings {
            noise,
            min_delta: Duration::from_secs_f64(min_delta_ms.max(0.0) / 1e3),
            error_rate_points,
            min_samples: self.min_samples.unwrap_or(50),
        }
    }
}

impl RawValues {
    fn validate(self, problems: &mut Vec<String>) -> ValueSettings {
        let customer = Template::parse(self.customer.as_deref().unwrap_or("c-{run}-{shopper}"))
            .unwrap_or_else(|problem| {
                problems.push(format!("values.customer: {problem}"));
                Template::default()
            });
        if customer.uses(Var::Customer) {
            problems.push("values.customer: cannot name itself".to_owned());
        }
        if self.skus.iter().any(String::is_empty) {
            problems.push("values.skus: SKUs must not be empty strings".to_owned());
        }
        ValueSettings {
            drop: self.drop.unwrap_or_default(),
            customer,
            skus: self.skus,
        }
    }
}

impl RawJourney {
    fn validate(self, path: &str, values: &ValueSettings, problems: &mut Vec<String>) -> Journey {
        if self.steps.is_empty() {
            problems.push(format!("{path}.steps: list at least one step"));
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (s, raw) in self.steps.into_iter().enumerate() {
            let step_path = format!("{path}.steps[{s}]");
            let key = format!("{}/{}", self.name, raw.name);
            if let Some(step) = raw.validate(key, &step_path, values, problems) {
                steps.push(step);
            }
        }
        let order_at = steps
            .iter()
            .position(|s| matches!(s.action, Action::Order(_)));
        for (s, step) in steps.iter().enumerate() {
            if matches!(step.action, Action::AwaitOrder { .. }) && order_at.is_none_or(|o| o > s) {
                problems.push(format!(
                    "{path}.steps[{s}]: await_order needs an order step before it"
                ));
            }
        }
        Journey {
            name: self.name,
            weight: self.weight,
            steps,
        }
    }
}

impl RawStep {
    fn validate(
        self,
        key: String,
        path: &str,
        values: &ValueSettings,
        problems: &mut Vec<String>,
    ) -> Option<Step> {
        let template = |field: &str, text: &str, problems: &mut Vec<String>| {
            step_template(&format!("{path}.{field}"), text, values, problems)
        };
        let chosen = [
            self.get.is_some(),
            self.post.is_some(),
            self.queue.is_some(),
            self.order.is_some(),
            self.await_order,
        ];
        if chosen.iter().filter(|&&c| c).count() != 1 {
            problems.push(format!(
                "{path}: give exactly one of get, post, queue, order, await_order"
            ));
            return None;
        }
        let give_up_after =
            Duration::from_secs_f64(self.give_up_after_s.unwrap_or(300.0).clamp(0.0, 86_400.0));
        let action = if let Some(path_text) = self.get.as_deref().or(self.post.as_deref()) {
            let method = if self.get.is_some() {
                Method::Get
            } else {
                Method::Post
            };
            let mut headers = Vec::new();
            for (name, value) in &self.headers {
                headers.push((
                    name.clone(),
                    template(&format!("headers.{name}"), value, problems),
                ));
            }
            if !path_text.starts_with('/') {
                problems.push(format!("{path}: the path must start with '/'"));
            }
            Action::Request {
                method,
                path: template("path", path_text, problems),
                body: self
                    .body
                    .as_deref()
                    .map(|body| template("body", body, problems)),
                headers,
            }
        } else if let Some(wait) = self.queue {
            if values.drop.is_empty() {
                problems.push(format!("{path}.queue: set values.drop to name the drop"));
            }
            Action::Queue {
                wait,
                give_up_after,
            }
        } else if let Some(order) = self.order {
            if values.drop.is_empty() {
                problems.push(format!("{path}.order: set values.drop to name the drop"));
            }
            let replay = order.replay.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&replay) {
                problems.push(format!(
                    "{path}.order.replay: must be a probability between 0 and 1"
                ));
            }
            let quantity = order.quantity.unwrap_or(1);
            if quantity == 0 {
                problems.push(format!("{path}.order.quantity: must be at least 1"));
            }
            Action::Order(OrderAction {
                sku: template(
                    "order.sku",
                    order.sku.as_deref().unwrap_or("{sku}"),
                    problems,
                ),
                quantity,
                replay,
            })
        } else {
            Action::AwaitOrder {
                give_up_after,
                poll_every: Duration::from_millis(self.poll_ms.unwrap_or(500).max(1)),
            }
        };
        if self.body.is_some() && self.post.is_none() {
            problems.push(format!("{path}.body: only a post step has a body"));
        }
        let abandon = self.abandon.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&abandon) {
            problems.push(format!(
                "{path}.abandon: must be a probability between 0 and 1"
            ));
        }
        let think = match self.think_ms {
            None => (0, 0),
            Some(RawThink::Fixed(ms)) => (ms, ms),
            Some(RawThink::Range([low, high])) => {
                if low > high {
                    problems.push(format!("{path}.think_ms: [low, high] with low ≤ high"));
                }
                (low, high.max(low))
            }
        };
        Some(Step {
            key,
            think: (
                Duration::from_millis(think.0),
                Duration::from_millis(think.1),
            ),
            abandon,
            retries: self.retries.unwrap_or(0),
            action,
        })
    }
}

/// Parses a step's template and checks the values it names are set.
fn step_template(
    path: &str,
    text: &str,
    values: &ValueSettings,
    problems: &mut Vec<String>,
) -> Template {
    match Template::parse(text) {
        Ok(template) => {
            if template.uses(Var::Sku) && values.skus.is_empty() {
                problems.push(format!("{path}: names {{sku}} but values.skus is empty"));
            }
            if template.uses(Var::Drop) && values.drop.is_empty() {
                problems.push(format!("{path}: names {{drop}} but values.drop is not set"));
            }
            template
        }
        Err(problem) => {
            problems.push(format!("{path}: {problem}"));
            Template::default()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROP: &str = include_str!("../../../scenarios/drop.toml");

    #[test]
    fn the_shipped_drop_scenario_validates() {
        let scenario = Scenario::from_toml(DROP).unwrap();
        assert!(
            scenario
                .steps()
                .any(|s| matches!(s.action, Action::Queue { .. }))
        );
        assert!(scenario.checked_drop.is_some());
        assert_eq!(scenario.hash.len(), 64);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = Scenario::from_toml(
            r#"
            name = "broken"
            [arrivals]
            shape = "constant"
            rate = 0
            duration_s = 1
            [http]
            max_connections = 0
            [[journeys]]
            name = "j"
            [[journeys.steps]]
            name = "a"
            get = "/{sku}"
            [[journeys.steps]]
            name = "b"
            await_order = true
            [[journeys.steps]]
            name = "c"
            get = "/x"
            post = "/y"
            [[thresholds]]
            step = "j/nope"
            phase = "lunch"
            expect = ["p99 > 1ms"]
            "#,
        )
        .unwrap_err();
        let expected = [
            "arrivals: rate",
            "http.max_connections",
            "journeys[0].steps[0].path: names {sku}",
            "journeys[0].steps[2]: give exactly one",
            "journeys[0].steps[1]: await_order needs an order step",
            "thresholds[0].step: no step \"j/nope\"",
            "thresholds[0].phase",
            "thresholds[0].expect[0]",
        ];
        for fragment in expected {
            assert!(
                problems.iter().any(|p| p.contains(fragment)),
                "missing {fragment:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let problems = Scenario::from_toml("name = \"x\"\nspeed = 3\n").unwrap_err();
        assert!(problems[0].contains("speed"), "{problems:?}");
    }
}
