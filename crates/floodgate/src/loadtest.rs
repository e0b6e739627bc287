//! `floodgate loadtest SCENARIO.toml --target URL`: runs, stores, compares, exits with the verdict.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use floodgate_loadtest::{Error, Options, loadtest_blocking};

/// Exit code when the run cannot be made: bad scenario, target or baseline (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code when the runtime cannot start (EX_SOFTWARE).
const EXIT_SOFTWARE: u8 = 70;
/// Exit code when the run could not be stored (EX_IOERR).
const EXIT_STORE: u8 = 74;

/// Arguments of `floodgate loadtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// Where the load goes: http://host:port, optionally with a path prefix.
    #[arg(long)]
    target: String,
    /// The runs directory: each run is stored in a subdirectory named by its run id.
    #[arg(long, default_value = "floodgate-runs")]
    runs_dir: PathBuf,
    /// Compare with `last` (the newest run of the same scenario) or a run id.
    #[arg(long)]
    baseline: Option<String>,
    /// No live progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

/// Runs the load test; the exit code is the verdict's (0 ok, 1 threshold, 2 regression, 3 invalid).
pub(crate) fn run(args: Args) -> ExitCode {
    let scenario_text = match std::fs::read_to_string(&args.scenario) {
        Ok(text) => text,
        Err(error) => {
            eprintln!(
                "floodgate loadtest: cannot read {}: {error}",
                args.scenario.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let options = Options {
        scenario_text,
        target: args.target,
        runs_dir: args.runs_dir,
        baseline: args.baseline,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    // Shoppers are short-lived allocations by the hundred thousand. When the target stalls they
    // pile up, and with transparent huge pages every fresh region is zeroed 2 MiB at a time;
    // that cost made the generator fall further behind until runs near its limit collapsed
    // (up to 2 GiB resident and most of its time zeroing pages), where 4 KiB pages recover.
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("floodgate loadtest: cannot turn off transparent huge pages ({error}); going on");
    }
    match loadtest_blocking(options) {
        Ok(finished) => {
            let _ = writeln!(std::io::stdout().lock(), "{}", finished.summary);
            eprintln!("run stored in {}", finished.dir.display());
            ExitCode::from(finished.verdict.exit_code())
        }
        Err(error) => {
            eprintln!("floodgate loadtest: {error}");
            ExitCode::from(match error {
                Error::Store { .. } => EXIT_STORE,
                Error::Runtime(_) => EXIT_SOFTWARE,
                Error::Scenario(_) | Error::Target(_) | Error::Baseline(_) => EXIT_USAGE,
            })
        }
    }
}
