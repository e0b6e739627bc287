//! `floodgate loadtest`: a drop-shaped, open-model HTTP load tester.
//!
//! A black box: it speaks HTTP/1.1 to any target and imports no floodgate server crate, so it can
//! rehearse any shop and the gateway cannot cheat it. The map:
//!
//! - [`scenario`] (with [`arrivals`], [`template`], [`threshold`]): what a run does, from TOML;
//! - [`run`] schedules arrivals onto [`event_loops`] (the generator's threads), [`shopper`] walks
//!   journeys over [`client`]'s keep-alive pool, [`metrics`] records per thread and merges once
//!   a second;
//! - [`checks`] asks the target's public API about stock and orders after the run;
//! - [`record`] is the stored run, [`summary`] recomputes figures from it, [`compare`] and
//!   [`verdict`] judge it, [`report`] renders it, [`store`] keeps runs on disk.

pub mod arrivals;
pub mod checks;
pub mod client;
pub mod compare;
pub mod event_loops;
pub mod metrics;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shopper;
pub mod store;
pub mod summary;
pub mod template;
pub mod threshold;
pub mod verdict;

use std::path::PathBuf;

pub use record::RunRecord;
pub use scenario::Scenario;
pub use verdict::{Verdict, exit};

/// What to run and where to keep it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario's TOML text.
    pub scenario_text: String,
    /// `http://host:port[/base]`.
    pub target: String,
    /// Where runs are stored.
    pub runs_dir: PathBuf,
    /// `last` or a run id to compare with.
    pub baseline: Option<String>,
    /// Draw a live progress bar.
    pub progress: bool,
}

/// Why a run could not be made or judged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scenario does not validate.
    #[error("the scenario is invalid:\n  {}", .0.join("\n  "))]
    Scenario(Vec<String>),
    /// The target URL is unusable.
    #[error("{0}")]
    Target(String),
    /// The baseline is missing or not comparable.
    #[error("baseline: {0}")]
    Baseline(String),
    /// The async runtime or the generator's threads could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The run could not be stored.
    #[error("cannot store the run in {dir}: {source}")]
    Store {
        /// The runs directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    /// The record, as stored.
    pub record: RunRecord,
    /// The judgement.
    pub verdict: Verdict,
    /// The Markdown summary.
    pub summary: String,
    /// The run's directory.
    pub dir: PathBuf,
}

/// Runs [`loadtest`] on a runtime of its own; the shoppers run on the scenario's event loops.
pub fn loadtest_blocking(options: Options) -> Result<Finished, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(loadtest(options))
}

/// Runs the scenario, stores the run with its reports, and judges it.
///
/// A baseline is looked up and checked for comparability before the run, so a refused
/// comparison costs no run.
pub async fn loadtest(options: Options) -> Result<Finished, Error> {
    let scenario = Scenario::from_toml(&options.scenario_text).map_err(Error::Scenario)?;
    let target = client::Target::resolve(&options.target)
        .await
        .map_err(Error::Target)?;
    let runs = store::RunStore::new(&options.runs_dir);
    let baseline = match &options.baseline {
        Some(which) => {
            let baseline = runs
                .baseline(which, &scenario.name)
                .map_err(Error::Baseline)?;
            if baseline.scenario_hash != scenario.hash {
                return Err(Error::Baseline(format!(
                    "run {} used a different version of scenario {:?}: runs of different scenarios are not compared",
                    baseline.run_id, baseline.scenario
                )));
            }
            Some(baseline)
        }
        None => None,
    };
    let compare_bands = scenario.compare;
    let thresholds = scenario.thresholds.clone();
    let scenario_text = scenario.text.clone();
    let record = run::execute(scenario, target, run::new_run_id(), options.progress)
        .await
        .map_err(Error::Runtime)?;
    let comparison = match &baseline {
        Some(baseline) => {
            Some(compare::compare(&record, baseline, &compare_bands).map_err(Error::Baseline)?)
        }
        None => None,
    };
    let verdict = Verdict::of(&record, &thresholds, comparison);
    let summary = report::markdown(&record, &verdict);
    let html = report::html(&record, &verdict);
    let junit = report::junit(&record, &verdict);
    let reports = [
        ("summary.md", summary.as_str()),
        ("report.html", html.as_str()),
        ("junit.xml", junit.as_str()),
    ];
    let dir = runs
        .save(&record, &scenario_text, &reports)
        .map_err(|source| Error::Store {
            dir: options.runs_dir.clone(),
            source,
        })?;
    Ok(Finished {
        record,
        verdict,
        summary,
        dir,
    })
}
