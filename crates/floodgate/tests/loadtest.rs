//! `floodgate loadtest` as a shop would run it: the real binary against the real gateway, with a
//! drop behind a waiting room, shoppers who poll and shoppers who listen on the event stream.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use floodgate_testkit::{GatewayProcess, HttpClient, drops};
use serde_json::Value;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// Runs `floodgate loadtest` with `scenario` against `target`, storing runs in `runs`.
async fn loadtest(scenario: &str, target: &str, runs: &Path) -> Output {
    let file = runs.join("scenario.toml");
    std::fs::create_dir_all(runs).unwrap();
    std::fs::write(&file, scenario).unwrap();
    let mut command = std::process::Command::new(binary());
    command
        .arg("loadtest")
        .arg(&file)
        .args(["--target", target, "--runs-dir"])
        .arg(runs);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn run_dir(output: &Output) -> PathBuf {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("run stored in "))
        .unwrap_or_else(|| panic!("{stderr}"));
    PathBuf::from(line)
}

const DROP_SCENARIO: &str = include_str!("scenarios/spring-drop.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_rehearsal_against_the_gateway_sells_the_stock_once_and_exits_by_verdict() {
    let data = tempfile::tempdir().unwrap();
    let config = "[waiting_room]\nsecret = \"loadtest\"\n";
    let gateway = GatewayProcess::spawn(binary(), data.path(), config).unwrap();
    let client = HttpClient::new(Duration::from_secs(10));
    let drop = drops::open_with_room("Spring", 40, 10);
    gateway.put_drop(&client, "spring", &drop).await.unwrap();
    let runs = data.path().join("runs");

    let output = loadtest(DROP_SCENARIO, &gateway.public_url, &runs).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Verdict: **ok**"), "{stdout}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(run_dir(&output).join("run.json")).unwrap()).unwrap();
    let checks = &record["checks"];
    assert!(
        checks["failures"].as_array().unwrap().is_empty(),
        "{checks}"
    );
    let accepted = checks["accepted_orders"].as_u64().unwrap();
    assert!((1..=40).contains(&accepted), "{checks}");
    assert!(checks["units_held"]["rod"].as_u64().unwrap() <= 40);
    assert_eq!(checks["replay_mismatches"], 0);
    // Both ways of waiting got shoppers in.
    for step in ["poller/queue", "listener/queue"] {
        let admitted: u64 = record["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["steps"][step]["outcomes"]["ok"].as_u64())
            .sum();
        assert!(admitted > 0, "nobody was admitted in {step}: {stdout}");
    }

    // A threshold no gateway can meet: exit code 1, and the report says which.
    let strict = format!("{DROP_SCENARIO}\n[[thresholds]]\nexpect = [\"p99 < 1us\"]\n");
    let output = loadtest(&strict, &gateway.public_url, &runs).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("BREACHED"));
}

#[tokio::test]
async fn a_broken_scenario_is_refused_with_every_problem_and_exit_code_64() {
    let runs = tempfile::tempdir().unwrap();
    let scenario = "name = \"broken\"\njourneys = []\n[arrivals]\nshape = \"constant\"\nrate = -1\nduration_s = 0\n";
    let output = loadtest(scenario, "http://127.0.0.1:9", runs.path()).await;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("arrivals: rate") && stderr.contains("arrivals: duration_s"),
        "{stderr}"
    );
}
