//! The `floodgate` command: parses the command line, then hands over to the library crates.

mod demo;
mod loadtest;
mod reload;
mod serve;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use floodgate_config::Config;

// A request allocates a few dozen small, short-lived objects across the runtime's threads;
// mimalloc's per-thread free lists serve them without every thread contending for one heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration that does not validate (EX_USAGE in sysexits.h).
const EXIT_INVALID_CONFIG: u8 = 64;

/// A self-hosted surge gateway for online shops.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults without --config; store in ./floodgate-data).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log lines as text for people or as JSON objects for a log pipeline.
        #[arg(long, value_enum, default_value = "text")]
        log_format: serve::LogFormat,
    },
    /// Validate a configuration file and print every problem with its key path.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// The same drop twice against a simulated legacy shop, straight and through floodgate.
    Demo(demo::Args),
    /// Run a drop-shaped load test against a target, store it, compare it with earlier runs.
    Loadtest(loadtest::Args),
    /// Simulators for demos, tests and rehearsals.
    #[command(subcommand)]
    Sim(sim::Simulator),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, log_format } => match load_config(config.as_deref()) {
            Ok(loaded) => report(serve::serve(loaded, config, log_format)),
            Err(problems) => invalid_config(problems),
        },
        Command::CheckConfig { file } => match load_config(Some(&file)) {
            Ok(_) => {
                eprintln!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(problems) => invalid_config(problems),
        },
        Command::Demo(args) => report(demo::run(args)),
        Command::Loadtest(args) => loadtest::run(args),
        Command::Sim(simulator) => report(sim::run(simulator)),
    }
}

fn invalid_config(problems: Vec<String>) -> ExitCode {
    for problem in problems {
        eprintln!("{problem}");
    }
    ExitCode::from(EXIT_INVALID_CONFIG)
}

fn report(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floodgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads, validates and applies the environment to the configuration.
fn load_config(file: Option<&std::path::Path>) -> Result<Config, Vec<String>> {
    let mut config = match file {
        None => Config::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| vec![format!("{}: cannot read: {error}", path.display())])?;
            Config::from_toml(&text).map_err(|problems| {
                problems
                    .iter()
                    .map(|problem| format!("{}: {problem}", path.display()))
                    .collect::<Vec<_>>()
            })?
        }
    };
    config.apply_env(|name| std::env::var(name).ok());
    Ok(config)
}
