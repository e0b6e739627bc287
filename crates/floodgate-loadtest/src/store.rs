//! The run store: one directory per run under the runs directory, named by its run id.
//!
//! Each run directory holds `run.json` (the record), `scenario.toml` (as run), `summary.md`,
//! `report.html` and `junit.xml`. Run ids sort by time, so "the last run" is the greatest id.

use std::path::{Path, PathBuf};

use crate::record::RunRecord;

/// The runs directory.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// A store in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Saves a run with its scenario text and reports; returns the run's directory.
    pub fn save(
        &self,
        record: &RunRecord,
        scenario_text: &str,
        reports: &[(&str, &str)],
    ) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(&record.run_id);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        write_atomically(&dir.join("run.json"), &json)?;
        std::fs::write(dir.join("scenario.toml"), scenario_text)?;
        for (name, text) in reports {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(dir)
    }

    /// Loads the run `id`.
    pub fn load(&self, id: &str) -> Result<RunRecord, String> {
        let path = self.dir.join(id).join("run.json");
        let bytes = std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|error| format!("{}: not a run record: {error}", path.display()))
    }

    /// The baseline named by `which`: a run id, or `last` for the newest run of `scenario`.
    pub fn baseline(&self, which: &str, scenario: &str) -> Result<RunRecord, String> {
        if which != "last" {
            return self.load(which);
        }
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|error| format!("{}: {error}", self.dir.display()))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.iter()
            .filter_map(|id| self.load(id).ok())
            .find(|record| record.scenario == scenario)
            .ok_or_else(|| {
                format!(
                    "no earlier run of scenario {scenario:?} in {}",
                    self.dir.display()
                )
            })
    }
}

/// A half-written record would be read as a broken baseline later; rename makes it all or nothing.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(partial, path)
}
