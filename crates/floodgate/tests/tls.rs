//! Both listeners over TLS, with certificates each test makes (rcgen): TLS 1.2 and 1.3 with
//! ALPN, `X-Forwarded-Proto: https` to the origin, client certificates on the admin listener,
//! a stalled handshake held to the head's deadline, bad TLS files refused by key path, and
//! certificates renewed on SIGHUP.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use floodgate_testkit::tls::{TestPki, TlsClient, TlsStream};
use floodgate_testkit::{GatewayProcess, HttpClient, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

/// A gateway in front of `origin` with TLS on both listeners, the admin one asking for a
/// client certificate from `pki`'s authority; heads are due within `head_timeout_ms`.
fn tls_gateway(
    pki: &TestPki,
    origin: &TestOrigin,
    head_timeout_ms: u64,
    data: &Path,
) -> GatewayProcess {
    let client_ca = format!(", client_ca = {:?}", pki.ca.display().to_string());
    let server = format!(
        "tls = {}\nadmin_tls = {}\nheader_read_timeout_ms = {head_timeout_ms}\n",
        pki.server_table(""),
        pki.server_table(&client_ca)
    );
    let origin = format!("[origin]\nurl = \"{}\"\n", origin.url());
    GatewayProcess::spawn_with_server(binary(), data, &server, &origin, &[]).unwrap()
}

const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_speaks_tls_and_tells_the_origin_so() {
    let pki = TestPki::generate();
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateway = tls_gateway(&pki, &origin, 5_000, data.path());
    assert!(
        gateway.public_url.starts_with("https://"),
        "{}",
        gateway.public_url
    );

    let client = pki.client(&[b"http/1.1"], false);
    let health = client.exchange(&gateway.public_url, HEALTH).await.unwrap();
    assert!(
        health.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        health.text
    );
    assert_eq!(health.alpn.as_deref(), Some(b"http/1.1".as_slice()));

    let headers = "GET /headers HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: gopher\r\n\
                   Connection: close\r\n\r\n";
    let proxied = client.exchange(&gateway.public_url, headers).await.unwrap();
    assert!(
        proxied.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        proxied.text
    );
    assert!(
        proxied.text.contains(r#""x-forwarded-proto":"https""#),
        "the origin is told the shopper came over TLS, whatever the client claims: {}",
        proxied.text
    );

    // TLS 1.2 too, and a client that offers no ALPN.
    let old = pki.client_of(&[&rustls::version::TLS12], &[], false);
    let answer = old.exchange(&gateway.public_url, HEALTH).await.unwrap();
    assert!(
        answer.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        answer.text
    );
    assert_eq!(answer.alpn, None);

    // Plain HTTP to the TLS port gets no answer in the clear.
    let address = gateway.public_url.strip_prefix("https://").unwrap();
    let mut plain = TcpStream::connect(address).await.unwrap();
    plain.write_all(HEALTH.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_wants_a_certificate_from_the_shops_authority() {
    let pki = TestPki::generate();
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateway = tls_gateway(&pki, &origin, 5_000, data.path());
    let drops = format!(
        "GET /admin/drops HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
         Connection: close\r\n\r\n",
        gateway.admin_authorization()
    );

    let operator = pki.client(&[b"http/1.1"], true);
    let listed = operator.exchange(&gateway.admin_url, &drops).await.unwrap();
    assert!(
        listed.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        listed.text
    );

    // No certificate: TLS 1.3 finishes the client's side of the handshake, and the server's
    // refusal arrives instead of an answer.
    let stranger = pki.client(&[b"http/1.1"], false);
    match stranger.exchange(&gateway.admin_url, &drops).await {
        Ok(answer) => assert!(answer.text.is_empty(), "{}", answer.text),
        Err(error) => assert!(
            error.to_string().to_lowercase().contains("certificate"),
            "refused for its missing certificate: {error}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_finishes_is_closed_at_the_heads_deadline() {
    let pki = TestPki::generate();
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let gateway = tls_gateway(&pki, &origin, 500, data.path());
    let address = gateway.public_url.strip_prefix("https://").unwrap();

    let mut silent = TcpStream::connect(address).await.unwrap();
    let opened = tokio::time::Instant::now();
    let mut byte = [0; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed: {closed:?}"
    );
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(2),
        "closed after {after:?}"
    );

    // Meanwhile health checks over TLS are answered.
    let client = pki.client(&[b"http/1.1"], false);
    let health = client.exchange(&gateway.public_url, HEALTH).await.unwrap();
    assert!(health.text.starts_with("HTTP/1.1 200 OK\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_slow_head_and_an_idle_connection_meet_their_limits() {
    let pki = TestPki::generate();
    let data = tempfile::tempdir().unwrap();
    let server = format!(
        "tls = {}\nheader_read_timeout_ms = 500\nidle_timeout_ms = 700\n",
        pki.server_table("")
    );
    let gateway =
        GatewayProcess::spawn_with_server(binary(), data.path(), &server, "", &[]).unwrap();
    let client = pki.client(&[b"http/1.1"], false);
    // How long the server takes to close `stream`, counted from now.
    let closes_after = |mut stream: TlsStream<TcpStream>| async move {
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still open after 5 s");
        (
            started.elapsed(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    };

    // Half a head, then nothing: closed at the head's deadline.
    let mut slow = client.connect(&gateway.public_url).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let (after, _) = closes_after(slow).await;
    assert!(
        after >= Duration::from_millis(300) && after < Duration::from_millis(1_500),
        "slow head closed after {after:?}"
    );

    // One answer, then silence: closed at the idle timeout, the answer whole before it.
    let mut idle = client.connect(&gateway.public_url).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (after, answer) = closes_after(idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_millis(2_500),
        "idle connection closed after {after:?}"
    );
}

#[test]
fn bad_tls_files_are_refused_with_their_key_path() {
    let pki = TestPki::generate();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("floodgate.toml");
    let missing = data.path().join("missing.pem");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls = {{ cert = {:?}, key = {:?} }}\nadmin_tls = {{ cert = {:?} }}\n",
            missing.display().to_string(),
            pki.server_key.display().to_string(),
            pki.server_cert.display().to_string(),
        ),
    )
    .unwrap();
    let checked = std::process::Command::new(binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stderr).into_owned()
        + &String::from_utf8_lossy(&checked.stdout);
    assert!(!checked.status.success(), "{said}");
    assert!(said.contains("server.tls"), "{said}");
    assert!(said.contains("missing.pem"), "{said}");
    assert!(said.contains("server.admin_tls.key"), "{said}");
}

/// `floodgate_config_reloads_total{outcome="<outcome>"}` on `gateway`'s plain admin listener.
async fn reloads(gateway: &GatewayProcess, outcome: &str) -> u64 {
    let client = HttpClient::new(Duration::from_secs(5));
    let authorization = gateway.admin_authorization();
    let (_, _, page) = client
        .send_bytes(
            Method::GET,
            &format!("{}/metrics", gateway.admin_url),
            &[("authorization", &authorization)],
            Bytes::new(),
        )
        .await
        .unwrap();
    let sample = format!("floodgate_config_reloads_total{{outcome=\"{outcome}\"}} ");
    String::from_utf8_lossy(&page)
        .lines()
        .find_map(|line| line.strip_prefix(&sample)?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample}"))
}

/// Whether `client` gets `200` from `/healthz` at `url`.
async fn answers_health(client: &TlsClient, url: &str) -> bool {
    client
        .exchange(url, HEALTH)
        .await
        .is_ok_and(|answer| answer.text.starts_with("HTTP/1.1 200 OK\r\n"))
}

/// Sends SIGHUP and waits until the reload of `outcome` has been counted `count` times.
async fn hang_up(gateway: &GatewayProcess, outcome: &str, count: u64) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads(gateway, outcome).await < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {outcome} reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_new_certificate_in_force_and_refuses_what_needs_a_restart() {
    let (first, second) = (TestPki::generate(), TestPki::generate());
    let data = tempfile::tempdir().unwrap();
    let (cert, key) = (data.path().join("cert.pem"), data.path().join("key.pem"));
    std::fs::copy(&first.server_cert, &cert).unwrap();
    std::fs::copy(&first.server_key, &key).unwrap();
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let gateway = GatewayProcess::spawn_with_server(binary(), data.path(), &tls, "", &[]).unwrap();
    let trusts_first = first.client(&[b"http/1.1"], false);
    let trusts_second = second.client(&[b"http/1.1"], false);
    assert!(answers_health(&trusts_first, &gateway.public_url).await);
    assert!(!answers_health(&trusts_second, &gateway.public_url).await);

    // The certificate is renewed in place: new connections get it.
    std::fs::copy(&second.server_cert, &cert).unwrap();
    std::fs::copy(&second.server_key, &key).unwrap();
    hang_up(&gateway, "applied", 1).await;
    assert!(answers_health(&trusts_second, &gateway.public_url).await);
    assert!(!answers_health(&trusts_first, &gateway.public_url).await);

    // A broken file keeps the certificate in force.
    std::fs::write(&key, "not a key").unwrap();
    hang_up(&gateway, "invalid", 1).await;
    assert!(answers_health(&trusts_second, &gateway.public_url).await);
    std::fs::copy(&second.server_key, &key).unwrap();

    // A new listen address needs a restart: refused, and the listener stays where it is.
    let config = data.path().join("floodgate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let moved: Vec<&str> = text
        .lines()
        .map(|line| {
            if line.starts_with("listen = ") {
                "listen = \"127.0.0.1:1\""
            } else {
                line
            }
        })
        .collect();
    std::fs::write(&config, moved.join("\n")).unwrap();
    hang_up(&gateway, "refused", 1).await;
    assert!(answers_health(&trusts_second, &gateway.public_url).await);
    assert_eq!(reloads(&gateway, "applied").await, 1);
}
