//! `floodgate demo` in the suite, at the size the issue names: through floodgate nothing is
//! oversold or lost and the legacy shop never sees more than its 10 orders a second; straight at
//! the shop, the failures are whatever the shop really did, as measured.

use std::path::Path;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_the_same_drop_straight_and_through_floodgate() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(Path::new(env!("CARGO_BIN_EXE_floodgate")));
    command
        .args(["demo", "--shoppers", "2000", "--duration-s", "20", "--dir"])
        .arg(dir.path());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("through floodgate") && stdout.contains("units oversold"),
        "{stdout}"
    );

    let figures: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.json")).unwrap()).unwrap();
    let through = &figures["through_floodgate"];
    assert_eq!(through["oversold_units"], 0, "{stdout}");
    assert_eq!(through["orders_lost"], 0, "{stdout}");
    assert_eq!(through["health_checks_failed"], 0, "{stdout}");
    assert!(through["health_checks"].as_u64().unwrap() > 0);
    assert!(
        through["legacy_peak_requests_per_second"].as_u64().unwrap() <= 10,
        "{stdout}"
    );
    assert_eq!(
        through["orders_accepted"], 100,
        "the whole stock sells: {stdout}"
    );
    assert_eq!(
        through["orders_in_legacy_shop"], through["orders_accepted"],
        "{stdout}"
    );

    // Straight at the shop: ~95 orders a second meet a shop that takes 10.
    let straight = &figures["straight"];
    assert!(
        straight["legacy_peak_requests_per_second"]
            .as_u64()
            .unwrap()
            > 10,
        "{stdout}"
    );
    assert!(
        straight["order_errors_seen_by_shoppers"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    for column in [straight, through] {
        assert!(Path::new(column["report"].as_str().unwrap()).exists());
    }

    // The drop's own report, from floodgate's store, agrees with the shop.
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("drop-report.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["orders_by_state"]["confirmed"]["orders"], through["orders_in_legacy_shop"],
        "{report}"
    );
    assert_eq!(report["stock"]["available"], 0);
    assert!(dir.path().join("drop-report.html").exists());
}
