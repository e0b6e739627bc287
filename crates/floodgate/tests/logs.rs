//! Request ids and JSON logs on the real binary: every public answer carries `X-Request-Id`
//! (the caller's, when well-formed), and with `--log-format json` a request's log lines are JSON
//! objects naming that id.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use floodgate_testkit::{HttpClient, Method, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_has_an_id_in_its_answer_and_its_json_log_lines() {
    let data = tempfile::tempdir().unwrap();
    // An origin nobody listens on: every proxied request fails and logs a warning.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = data.path().join("floodgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [store]\npath = {:?}\n[origin]\nurl = \"http://{closed}\"\n",
            data.path().join("store").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(Path::new(env!("CARGO_BIN_EXE_floodgate")))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&config)
        .env("FLOODGATE_ADMIN_TOKEN", "logs")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut announcements = BufReader::new(child.stdout.take().unwrap()).lines();
    let public = announcements
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("floodgate public ").map(str::to_owned))
        .expect("the gateway announces its public listener");

    let client = HttpClient::new(Duration::from_secs(10));
    let page = format!("{public}/shop/rod");
    let (status, headers, _) = client
        .send_bytes(
            Method::GET,
            &page,
            &[("x-request-id", "lb-42")],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-request-id"], "lb-42", "a well-formed id is kept");
    let (_, headers, _) = client
        .send_bytes(
            Method::GET,
            &format!("{public}/healthz"),
            &[("x-request-id", "bad id")],
            Bytes::new(),
        )
        .await
        .unwrap();
    let made = headers["x-request-id"].to_str().unwrap();
    assert!(
        made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );

    child.kill().unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let _ = child.wait();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).expect(line))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "origin failed"
                && line["span"]["request_id"] == "lb-42"),
        "no JSON line for the failed request with its id:\n{logs}"
    );
}
