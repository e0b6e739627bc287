//! The generator against a fake shop on loopback: coordinated omission, the schedule, timeouts,
//! abandonment, retries, business checks, comparison, exit codes and the HTML report.

mod support;

use std::time::Duration;

use floodgate_loadtest::record::Phase;
use floodgate_loadtest::summary::StepStats;
use floodgate_loadtest::{Error, Finished, Options, exit, loadtest};
use support::FakeShop;
use tokio::time::Instant;

async fn run(
    scenario: &str,
    shop: &FakeShop,
    runs: &tempfile::TempDir,
    baseline: Option<&str>,
) -> Result<Finished, Error> {
    loadtest(Options {
        scenario_text: scenario.to_owned(),
        target: shop.url(),
        runs_dir: runs.path().to_owned(),
        baseline: baseline.map(str::to_owned),
        progress: false,
    })
    .await
}

fn stats(finished: &Finished, step: &str) -> StepStats {
    let all = Phase {
        name: "all".into(),
        from_s: 0,
        to_s: u32::MAX,
    };
    StepStats::of(&finished.record, step, &all)
}

fn constant(name: &str, rate: u32, seconds: u32, extra: &str) -> String {
    format!(
        r#"
        name = "{name}"
        [arrivals]
        shape = "constant"
        rate = {rate}
        duration_s = {seconds}
        {extra}
        [[journeys]]
        name = "j"
        [[journeys.steps]]
        name = "page"
        get = "/page"
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pause_shows_in_the_intended_start_latency_and_not_in_the_as_sent_latency() {
    let shop = FakeShop::start(0).await;
    let runs = tempfile::tempdir().unwrap();
    // Two connections at 100 arrivals/s: while the shop pauses for 1 s, about 100 arrivals queue
    // for a connection. Measured from their intended start they waited; "as sent", they did not.
    let scenario = constant("pause", 100, 5, "[http]\nmax_connections = 2");
    // The 200th request, two seconds in, pauses the shop for a second.
    shop.pause_at_request(200, Duration::from_secs(1));
    let finished = run(&scenario, &shop, &runs, None).await.unwrap();
    let page = stats(&finished, "j/page");
    assert_eq!(page.ended, 500);
    assert!(
        page.response.p99 >= 600_000.0,
        "intended-start p99 {} µs hides the pause",
        page.response.p99
    );
    assert!(
        page.service.p99 < 150_000.0,
        "as-sent p99 {} µs should not show the pause",
        page.service.p99
    );
    assert!(page.response.max >= 900_000.0);
    assert!(
        finished.verdict.invalid.is_empty(),
        "{:?}",
        finished.verdict.invalid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_follow_the_schedule_whatever_the_answers() {
    let shop = FakeShop::start(0).await;
    shop.set_delay(Duration::from_millis(300));
    let runs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let finished = run(&constant("schedule", 200, 3, ""), &shop, &runs, None)
        .await
        .unwrap();
    let arrivals = shop.arrivals();
    assert_eq!(arrivals.len(), 600);
    // Even spacing: 100 per half second, whatever the 300 ms answers.
    let mut per_half_second = [0u32; 7];
    for at in arrivals {
        per_half_second[((at - started).as_millis() / 500).min(6) as usize] += 1;
    }
    for (i, &n) in per_half_second[..6].iter().enumerate() {
        assert!(
            (85..=115).contains(&n),
            "half-second {i}: {n} arrivals ({per_half_second:?})"
        );
    }
    assert_eq!(finished.record.generator.started, 600);
    assert_eq!(finished.record.generator.late, 0);
    let page = stats(&finished, "j/page");
    assert!(
        page.response.p50 >= 300_000.0 && page.response.p50 < 400_000.0,
        "{}",
        page.response.p50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_count_in_the_percentiles_at_their_elapsed_time() {
    let shop = FakeShop::start(0).await;
    shop.set_delay(Duration::from_secs(2));
    let runs = tempfile::tempdir().unwrap();
    let finished = run(
        &constant("timeouts", 20, 1, "[http]\ntimeout_ms = 200"),
        &shop,
        &runs,
        None,
    )
    .await
    .unwrap();
    let page = stats(&finished, "j/page");
    assert_eq!(page.outcomes.get("timeout"), Some(&20));
    assert_eq!(page.error_rate, 1.0);
    assert!(page.response.p50 >= 200_000.0, "{}", page.response.p50);
}

const SHOPPING: &str = include_str!("scenarios/shopping.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandonment_retries_and_replays_behave_as_configured() {
    let shop = FakeShop::start(1_000).await;
    shop.fail_first_attempts();
    let runs = tempfile::tempdir().unwrap();
    let finished = run(&SHOPPING.replace("RETRIES", "2"), &shop, &runs, None)
        .await
        .unwrap();

    let order = stats(&finished, "buyer/order");
    let abandoned = order.outcomes.get("abandoned").copied().unwrap_or(0);
    assert!(
        (150..=250).contains(&abandoned),
        "{abandoned} of 400 abandoned at p = 0.5"
    );
    let placed = order.outcomes.get("ok").copied().unwrap_or(0);
    assert_eq!(placed + abandoned, 400, "{:?}", order.outcomes);
    // Every first attempt got a 503; the retry used the same key, and replays reused it again.
    let attempts = shop.attempts();
    assert_eq!(attempts.len() as u64, placed);
    assert!(attempts.values().all(|&n| n >= 2), "a key was not retried");
    let checks = &finished.record.checks;
    assert_eq!(checks.accepted_orders, placed);
    assert!(
        checks.replays > 0 && checks.replay_mismatches == 0,
        "{checks:?}"
    );
    assert_eq!(checks.final_states.get("confirmed"), Some(&placed));
    assert!(checks.failures.is_empty(), "{:?}", checks.failures);
    assert_eq!(
        stats(&finished, "buyer/queue").outcomes.get("ok"),
        Some(&400)
    );
    let fairness = finished.record.fairness.as_ref().unwrap();
    assert_eq!(fairness.admitted, 400);
    assert_eq!(finished.verdict.exit_code(), exit::OK);

    // Without retries the first 503 ends the journey as an error.
    let shop = FakeShop::start(1_000).await;
    shop.fail_first_attempts();
    let finished = run(&SHOPPING.replace("RETRIES", "0"), &shop, &runs, None)
        .await
        .unwrap();
    let order = stats(&finished, "buyer/order");
    assert_eq!(order.outcomes.get("ok"), None);
    assert!(
        order.outcomes.get("http_error").copied().unwrap_or(0) >= 150,
        "{:?}",
        order.outcomes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversold_drop_and_lost_orders_fail_the_business_checks() {
    let runs = tempfile::tempdir().unwrap();
    let scenario = SHOPPING
        .replace("RETRIES", "0")
        .replace("abandon = 0.5", "abandon = 0.0");

    let honest = FakeShop::start(50).await;
    let finished = run(&scenario, &honest, &runs, None).await.unwrap();
    let checks = &finished.record.checks;
    assert_eq!(
        (checks.accepted_orders, checks.units_held.get("s1")),
        (50, Some(&50))
    );
    assert!(checks.failures.is_empty(), "{:?}", checks.failures);

    // Sells 50 while saying 20 were available: oversold.
    let overselling = FakeShop::start(50).await;
    overselling.claim_stock(20);
    let finished = run(&scenario, &overselling, &runs, None).await.unwrap();
    let failures = &finished.record.checks.failures;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("oversold s1: accepted orders hold 50 units, 20 were available")),
        "{failures:?}"
    );
    assert_eq!(finished.verdict.exit_code(), exit::THRESHOLD);

    // Answers 202 and then does not know the order: lost.
    let forgetful = FakeShop::start(50).await;
    forgetful.forget_orders();
    let scenario = scenario.replace("await_order = true", "get = \"/thanks\"");
    let finished = run(&scenario, &forgetful, &runs, None).await.unwrap();
    let failures = &finished.record.checks.failures;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("50 orders answered 202 are unknown")),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_compare_with_their_baseline_and_exit_with_distinct_codes() {
    let shop = FakeShop::start(0).await;
    let runs = tempfile::tempdir().unwrap();
    let scenario = constant(
        "compare",
        100,
        2,
        // p99 of 200 answers moves by a few ms when the box is busy (CI saw 3.2 → 9.3 ms);
        // the regression below adds 60 ms.
        "[compare]\nmin_samples = 50\nmin_delta_ms = 20",
    );

    let first = run(&scenario, &shop, &runs, None).await.unwrap();
    assert_eq!(first.verdict.exit_code(), exit::OK);
    assert!(first.dir.join("run.json").exists() && first.dir.join("junit.xml").exists());

    // The same target again: differences are noise.
    let second = run(&scenario, &shop, &runs, Some("last")).await.unwrap();
    let comparison = second.verdict.comparison.as_ref().unwrap();
    assert_eq!(comparison.baseline, first.record.run_id);
    assert!(
        comparison.regressions().next().is_none(),
        "{:?}",
        comparison.findings
    );
    assert_eq!(second.verdict.exit_code(), exit::OK);

    // 60 ms slower per answer: a regression, against a named run.
    shop.set_delay(Duration::from_millis(60));
    let slower = run(&scenario, &shop, &runs, Some(&first.record.run_id))
        .await
        .unwrap();
    let comparison = slower.verdict.comparison.as_ref().unwrap();
    assert!(
        comparison
            .regressions()
            .any(|f| f.metric == "p99" && f.step == "j/page"),
        "{:?}",
        comparison.findings
    );
    assert_eq!(slower.verdict.exit_code(), exit::REGRESSION);

    // A threshold breach outranks the regression.
    let strict =
        format!("{scenario}\n[[thresholds]]\nstep = \"j/page\"\nexpect = [\"p99 < 10ms\"]\n");
    let breached = run(&strict, &shop, &runs, None).await.unwrap();
    assert_eq!(breached.verdict.exit_code(), exit::THRESHOLD);

    // The edited scenario is not compared with the runs of the old one.
    let refused = run(&strict, &shop, &runs, Some(&first.record.run_id))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Baseline(ref why) if why.contains("different version")),
        "{refused}"
    );
    let unknown = run(&scenario, &shop, &runs, Some("20990101-000000-000000"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, Error::Baseline(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_generator_marks_the_run_invalid() {
    let shop = FakeShop::start(0).await;
    shop.set_delay(Duration::from_millis(500));
    let runs = tempfile::tempdir().unwrap();
    let scenario = include_str!("scenarios/capped.toml");
    let finished = run(scenario, &shop, &runs, None).await.unwrap();
    assert_eq!(finished.record.generator.not_started, 40);
    assert_eq!(finished.verdict.exit_code(), exit::INVALID);
    assert!(
        finished
            .summary
            .contains("INVALID: 40 arrivals were not started"),
        "{}",
        finished.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_well_formed_and_self_contained() {
    let shop = FakeShop::start(100).await;
    let runs = tempfile::tempdir().unwrap();
    let finished = run(&SHOPPING.replace("RETRIES", "1"), &shop, &runs, None)
        .await
        .unwrap();
    let html = std::fs::read_to_string(finished.dir.join("report.html")).unwrap();
    let document = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the report parses as XML");
    let charts = document
        .descendants()
        .filter(|n| n.has_tag_name("svg"))
        .count();
    assert_eq!(charts, 4);
    for node in document.descendants() {
        for attribute in ["src", "href"] {
            assert!(
                node.attribute(attribute).is_none(),
                "external reference in <{}>",
                node.tag_name().name()
            );
        }
    }
    assert!(!html.contains("<script") && !html.contains("<link"));
    let junit = std::fs::read_to_string(finished.dir.join("junit.xml")).unwrap();
    let suite = roxmltree::Document::parse(&junit).unwrap();
    assert_eq!(suite.root_element().tag_name().name(), "testsuite");
    let run_json = std::fs::read(finished.dir.join("run.json")).unwrap();
    let record: floodgate_loadtest::RunRecord = serde_json::from_slice(&run_json).unwrap();
    assert_eq!(record.run_id, finished.record.run_id);
}
