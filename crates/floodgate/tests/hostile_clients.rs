//! The edge as a hostile client tries it, through the real binary on loopback, against an
//! origin that records every byte it receives: what the client says must not poison the cache,
//! route around a route, knock out an upstream or hold the edge, and health checks keep their
//! promise meanwhile.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use floodgate_testkit::GatewayProcess;
use floodgate_testkit::origin::{OriginConfig, TestOrigin};
use floodgate_testkit::recorder::RecordingOrigin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_floodgate"))
}

fn start_gateway(server_keys: &str, config: &str) -> (GatewayProcess, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let gateway =
        GatewayProcess::spawn_with_server(binary(), data.path(), server_keys, config, &[]).unwrap();
    (gateway, data)
}

fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `to` from the loopback address `from` (any of 127.0.0.0/8 is this host).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `wire` on a new connection and reads the answer until the gateway closes it.
async fn exchange(to: SocketAddr, wire: &[u8]) -> String {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream.write_all(wire).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    match read.await {
        Ok(Ok(_)) | Ok(Err(_)) => String::from_utf8_lossy(&answer).into_owned(),
        Err(_) => panic!("the gateway kept the connection open: {answer:?}"),
    }
}

/// The status of an answer's first line.
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// The body of a whole answer.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// `GET path` with `headers`, closing after the answer.
fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

/// The p99 of `count` health checks, each on a new connection from `from`.
async fn health_p99(to: SocketAddr, from: &str, count: usize) -> Duration {
    let mut took = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let mut stream = connect_from(from, to).await;
        stream.write_all(&get("/healthz", "")).await.unwrap();
        let answer = read_to_close(&mut stream).await;
        assert_eq!(status(&answer), 200, "{answer}");
        took.push(started.elapsed());
    }
    took.sort();
    took[(count * 99 / 100).min(count - 1)]
}

/// Open file descriptors of the gateway `pid` at `to` once it has served a request and opened
/// what it opens lazily.
async fn settled_descriptors(to: SocketAddr, pid: u32) -> usize {
    health_p99(to, "127.0.0.1", 5).await;
    // Settled: the same count five readings in a row.
    let mut readings = vec![descriptors(pid)];
    until(
        "the descriptor count settles",
        Duration::from_secs(5),
        || {
            readings.push(descriptors(pid));
            let last = &readings[readings.len().saturating_sub(5)..];
            last.len() == 5 && last.iter().all(|&count| count == last[0])
        },
    )
    .await;
    readings[readings.len() - 1]
}

/// The CPU time process `pid` has used, in clock ticks (user and system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Open file descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Waits, within a deadline, for `condition` to hold.
async fn until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const HEALTHY_P99: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_can_fill_the_cache_for_another_site_or_speak_for_a_proxy() {
    let origin = RecordingOrigin::start().await.unwrap();
    let routes = format!(
        "[origin]\nurl = \"{}\"\n[[routes]]\npath = \"/shop/**\"\ncache = {{}}\n",
        origin.url()
    );
    let (gateway, _data) = start_gateway("", &routes);
    let to = address(&gateway.public_url);
    let poisoners = [
        "GET /shop/rods HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_owned(),
        String::from_utf8(get("/shop/rods", "X-Forwarded-Host: evil.example\r\n")).unwrap(),
        String::from_utf8(get("/shop/rods", "X-Forwarded-Proto: javascript\r\n")).unwrap(),
        String::from_utf8(get("/shop/rods", "Forwarded: host=evil.example\r\n")).unwrap(),
        String::from_utf8(get("/shop/rods", "X-Forwarded-For: 10.0.0.1\r\n")).unwrap(),
        String::from_utf8(get("/shop/rods", "X-Real-IP: 10.0.0.1\r\n")).unwrap(),
    ];
    for poison in &poisoners {
        assert_eq!(
            status(&exchange(to, poison.as_bytes()).await),
            200,
            "{poison}"
        );
    }
    let plain = exchange(to, &get("/shop/rods", "")).await;
    assert_eq!(body(&plain), "GET /shop/rods @shop.example", "{plain}");
    for request in origin.requests() {
        let host = request.header("host")[0];
        assert_eq!(request.header("x-forwarded-host"), [host], "{request:?}");
        assert_eq!(request.header("x-forwarded-proto"), ["http"], "{request:?}");
        assert_eq!(
            request.header("x-forwarded-for"),
            ["127.0.0.1"],
            "{request:?}"
        );
        assert!(request.header("forwarded").is_empty(), "{request:?}");
        assert!(request.header("x-real-ip").is_empty(), "{request:?}");
    }
    // A hit for the plain request is the plain request's own answer.
    let again = exchange(to, &get("/shop/rods", "")).await;
    assert!(again.contains("x-cache: HIT"), "{again}");
    assert_eq!(body(&again), "GET /shop/rods @shop.example");

    // Behind a trusted proxy, what it forwards is believed, and keyed on.
    let trusted = RecordingOrigin::start().await.unwrap();
    let routes = format!(
        "[origin]\nurl = \"{}\"\n[[routes]]\npath = \"/shop/**\"\ncache = {{}}\n",
        trusted.url()
    );
    let (behind, _data) = start_gateway("trusted_proxies = [\"127.0.0.0/8\"]", &routes);
    let to = address(&behind.public_url);
    let via_proxy = get(
        "/shop/rods",
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Proto: https\r\n",
    );
    assert_eq!(status(&exchange(to, &via_proxy).await), 200);
    let seen = &trusted.requests()[0];
    assert_eq!(seen.header("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), ["https"]);
    let plain = exchange(to, &get("/shop/rods", "")).await;
    assert!(
        plain.contains("x-cache: MISS"),
        "another scheme's answer is not served: {plain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_path_reaches_a_route_around_the_route_that_guards_it() {
    let (catalog, checkout) = (
        RecordingOrigin::start().await.unwrap(),
        RecordingOrigin::start().await.unwrap(),
    );
    let routes = format!(
        r#"
        [[pools]]
        name = "catalog"
        upstreams = ["{}"]
        [[pools]]
        name = "checkout"
        upstreams = ["{}"]
        [[routes]]
        path = "/shop/**"
        pool = "catalog"
        cache = {{}}
        [[routes]]
        path = "/checkout/**"
        pool = "checkout"
        class = "checkout"
        "#,
        catalog.url(),
        checkout.url()
    );
    let (gateway, _data) = start_gateway("", &routes);
    let to = address(&gateway.public_url);
    // Each either refused, or sent to the pool its normal form belongs to, as that form.
    let cases = [
        ("/shop/../checkout/pay", Some("/checkout/pay")),
        ("/shop/%2e%2e/checkout/pay", Some("/checkout/pay")),
        ("/shop/%2E%2E/%2e%2E/checkout/pay", Some("/checkout/pay")),
        ("/shop/.%2e/checkout/pay", Some("/checkout/pay")),
        ("//checkout/pay", Some("/checkout/pay")),
        ("/shop//..//checkout/pay", Some("/checkout/pay")),
        ("/shop/./../checkout/pay?x=1", Some("/checkout/pay?x=1")),
        ("/check%6Fut/pay", Some("/checkout/pay")),
        ("/checkout/../shop/x", Some("/shop/x")),
        ("/checkout/%2e%2e/shop/x", Some("/shop/x")),
        ("/shop/..;/checkout/pay", None),
        ("/shop/.;/checkout/pay", None),
        ("/shop/%2e%2e;x=1/checkout/pay", None),
        ("/shop%2f..%2fcheckout/pay", None),
        ("/shop/..%2Fcheckout/pay", None),
        ("/shop\\..\\checkout/pay", None),
        ("/shop/..%5ccheckout/pay", None),
        ("/shop/%00/x", None),
        ("/shop/%zz", None),
    ];
    for (asked, forwarded) in cases {
        let answer = exchange(to, &get(asked, "")).await;
        match forwarded {
            Some(path) => {
                assert_eq!(status(&answer), 200, "{asked}: {answer}");
                assert!(
                    body(&answer).starts_with(&format!("GET {path} ")),
                    "{asked}: {answer}"
                );
            }
            None => assert_eq!(status(&answer), 400, "{asked}: {answer}"),
        }
    }
    let targets = |origin: &RecordingOrigin| -> Vec<String> {
        origin
            .requests()
            .into_iter()
            .map(|request| request.target)
            .collect()
    };
    let (at_catalog, at_checkout) = (targets(&catalog), targets(&checkout));
    // The second `/shop/x` is the first one's cached answer: one key for both spellings.
    assert_eq!(at_catalog, ["/shop/x"]);
    assert!(
        at_checkout
            .iter()
            .all(|path| path.starts_with("/checkout/pay")),
        "{at_checkout:?}"
    );
    assert_eq!(at_checkout.len(), 8);
    for raw in [catalog.raw(), checkout.raw()] {
        let raw = String::from_utf8_lossy(&raw);
        assert!(
            !raw.contains(".."),
            "no dot segment reaches an origin: {raw}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_rfc_9112_refuses_never_reach_the_origin() {
    let origin = RecordingOrigin::start().await.unwrap();
    let (gateway, _data) = start_gateway("", &format!("[origin]\nurl = \"{}\"\n", origin.url()));
    let to = address(&gateway.public_url);
    for (wire, expected) in [
        (
            "GET http://evil.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
            400,
        ),
        (
            "GET https://shop.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
            400,
        ),
        ("GET /x HTTP/1.1\r\n\r\n", 400),
        (
            "GET /x HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\n\r\n",
            400,
        ),
        ("GET /x HTTP/1.1\r\nHost: a@shop.example\r\n\r\n", 400),
        (
            "CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n",
            405,
        ),
        ("TRACE /x HTTP/1.1\r\nHost: shop.example\r\n\r\n", 405),
        ("OPTIONS * HTTP/1.1\r\nHost: shop.example\r\n\r\n", 400),
    ] {
        assert_eq!(
            status(&exchange(to, wire.as_bytes()).await),
            expected,
            "{wire}"
        );
    }
    assert_eq!(origin.connections(), 0, "nothing reached the origin");
    let absolute = "GET http://shop.example/x/../y HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&exchange(to, absolute.as_bytes()).await), 200);
    assert_eq!(
        origin.requests()[0].target,
        "/y",
        "absolute form is sent in origin form"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_broken_body_is_its_own_400_and_never_ejects_an_upstream() {
    let origin = RecordingOrigin::start().await.unwrap();
    let (gateway, _data) = start_gateway("", &format!("[origin]\nurl = \"{}\"\n", origin.url()));
    let to = address(&gateway.public_url);
    let post =
        |rest: &str| format!("POST /upload HTTP/1.1\r\nHost: shop.example\r\n{rest}").into_bytes();
    let broken = [
        post("Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        post("Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        post("Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        post("Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"),
    ];
    // Ten of each class: twice what ejects an upstream that fails.
    for _ in 0..10 {
        for wire in &broken {
            let answer = exchange(to, wire).await;
            assert_eq!(status(&answer), 400, "{answer}");
        }
        // Cut short: the client closes its side before the body's end.
        let mut stream = TcpStream::connect(to).await.unwrap();
        stream
            .write_all(&post("Content-Length: 100\r\n\r\nonly part"))
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let answer = read_to_close(&mut stream).await;
        assert!(answer.is_empty() || status(&answer) == 400, "{answer}");
    }
    let served = exchange(to, &get("/after", "")).await;
    assert_eq!(status(&served), 200, "the upstream still serves: {served}");
    assert!(
        origin
            .requests()
            .iter()
            .all(|request| request.method == "GET")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_that_stalls_past_the_routes_timeout_is_the_clients_delay() {
    let origin = RecordingOrigin::start().await.unwrap();
    let (gateway, _data) = start_gateway(
        "",
        &format!("[origin]\nurl = \"{}\"\ntimeout_ms = 300\n", origin.url()),
    );
    let to = address(&gateway.public_url);
    // Larger than what is read before a slot is taken: it streams to the upstream, then stalls.
    let head = "POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 200000\r\n\r\n";
    for _ in 0..8 {
        let mut stream = TcpStream::connect(to).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'x'; 100_000]).await.unwrap();
        let answer = read_to_close(&mut stream).await;
        assert_eq!(status(&answer), 400, "{answer}");
    }
    let served = exchange(to, &get("/after", "")).await;
    assert_eq!(
        status(&served),
        200,
        "the upstream was not ejected: {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_hold_no_origin_slot_and_end_at_the_minimum_rate() {
    let origin = RecordingOrigin::start().await.unwrap();
    let (gateway, _data) = start_gateway(
        "body_grace_ms = 1000\nbody_min_rate_bytes_per_s = 200",
        &format!(
            "[origin]\nurl = \"{}\"\nmax_concurrency = 2\n",
            origin.url()
        ),
    );
    let to = address(&gateway.public_url);
    let pid = gateway.pid();
    let baseline = settled_descriptors(to, pid).await;
    let head = |length: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: shop.example\r\n{length}\r\n").into_bytes()
    };
    // Twenty-four shoppers trickle a byte every 100 ms, declared and chunked: 10 bytes a second.
    let mut tricklers = Vec::new();
    for index in 0..24 {
        let chunked = index % 2 == 0;
        tricklers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            let framing = if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                "Content-Length: 1000\r\n"
            };
            stream.write_all(&head(framing)).await.unwrap();
            let started = Instant::now();
            let piece: &[u8] = if chunked { b"1\r\nx\r\n" } else { b"x" };
            while started.elapsed() < Duration::from_secs(8) {
                if stream.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (read_to_close(&mut stream).await, started.elapsed())
        }));
    }
    until(
        "every trickler is connected",
        Duration::from_secs(5),
        || descriptors(pid) >= baseline + 24,
    )
    .await;
    for _ in 0..20 {
        let answer = exchange(to, &get("/shop/rods", "")).await;
        assert_eq!(status(&answer), 200, "other shoppers are served: {answer}");
    }
    for trickler in tricklers {
        let (answer, took) = trickler.await.unwrap();
        assert!(took < Duration::from_secs(6), "held for {took:?}");
        assert!(answer.is_empty() || status(&answer) == 400, "{answer}");
    }
    assert!(
        origin
            .requests()
            .iter()
            .all(|request| request.method == "GET")
    );
    assert_eq!(
        origin.raw().windows(4).filter(|w| w == b"POST").count(),
        0,
        "no trickle reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_body_over_the_limit_is_refused_before_it_is_sent() {
    let (gateway, _data) = start_gateway("", "");
    let to = address(&gateway.public_url);
    let mut stream = TcpStream::connect(to).await.unwrap();
    let head = "POST /api/drops/spring/orders HTTP/1.1\r\nHost: shop.example\r\n\
                Content-Length: 10000000\r\nExpect: 100-continue\r\nIdempotency-Key: k\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_order_body_ends_at_the_minimum_rate() {
    let (gateway, _data) =
        start_gateway("body_grace_ms = 500\nbody_min_rate_bytes_per_s = 100", "");
    let to = address(&gateway.public_url);
    for framing in ["Content-Length: 500", "Transfer-Encoding: chunked"] {
        let stream = TcpStream::connect(to).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST /api/drops/spring/orders HTTP/1.1\r\nHost: shop.example\r\n{framing}\r\n\
             Idempotency-Key: k\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let piece: &[u8] = if framing.starts_with("Content") {
            b"{"
        } else {
            b"1\r\n{\r\n"
        };
        // Ten bytes a second, for at most ten seconds, while the answer is awaited.
        let trickle = tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(10)
                && writer.write_all(piece).await.is_ok()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut answer = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut answer)).await;
        let answered_in = started.elapsed();
        let read = read.expect("an answer or a close").unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
        assert!(
            answered_in < Duration::from_secs(2),
            "{framing}: held {answered_in:?}"
        );
        assert!(answer.is_empty() || status(&answer) == 400, "{answer}");
        trickle.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_by_their_limits_while_health_checks_are_answered() {
    let origin = TestOrigin::start(OriginConfig::default()).await.unwrap();
    let (gateway, _data) = start_gateway(
        "header_read_timeout_ms = 1000\nidle_timeout_ms = 1500\nbody_grace_ms = 1000\n\
         body_min_rate_bytes_per_s = 500\nsend_timeout_ms = 1000",
        &format!("[origin]\nurl = \"{}\"\n", origin.url()),
    );
    let to = address(&gateway.public_url);
    let pid = gateway.pid();
    let baseline = settled_descriptors(to, pid).await;
    let keep_alive =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n\r\n").into_bytes();
    let mut attackers = Vec::new();
    // Slow readers: each asks for a large answer and reads none of it.
    for _ in 0..20 {
        let ask = keep_alive("/bytes/50000000");
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            stream.write_all(&ask).await.unwrap();
            stream
        }));
    }
    // Slowloris heads: a byte of a head every 200 ms.
    for _ in 0..20 {
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            for byte in b"GET /shop HTTP/1.1\r\nHost: shop.example\r\nX-Pad: aaaaaaaaaaaaaaaa" {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            stream
        }));
    }
    // Slow bodies, declared and chunked: a byte every 200 ms.
    for index in 0..20 {
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            let framing = if index % 2 == 0 {
                "Content-Length: 100"
            } else {
                "Transfer-Encoding: chunked"
            };
            let head = format!("POST /upload HTTP/1.1\r\nHost: shop.example\r\n{framing}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let piece: &[u8] = if index % 2 == 0 { b"x" } else { b"1\r\nx\r\n" };
            for _ in 0..60 {
                if stream.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            stream
        }));
    }
    // Idle connections that never speak, and kept-alive ones that spoke once.
    for index in 0..200 {
        let ask = keep_alive("/healthz");
        attackers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await.unwrap();
            if index % 2 == 0 {
                stream.write_all(&ask).await.unwrap();
            }
            stream
        }));
    }
    // Measured once the attack is in place: its connections open, the slow readers' answers
    // stalled (the gateway's CPU quiet), the trickles still trickling.
    until("the attack is in place", Duration::from_secs(5), || {
        descriptors(pid) >= baseline + 200
    })
    .await;
    let stalled_by = Instant::now() + Duration::from_secs(5);
    let mut used = cpu_ticks(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cpu_ticks(pid);
        // At most a fifth of a core over the last 100 ms.
        if now - used <= 2 {
            break;
        }
        assert!(
            Instant::now() < stalled_by,
            "the slow readers' answers never stalled"
        );
        used = now;
    }
    let p99 = health_p99(to, "127.0.0.2", 200).await;
    assert!(p99 < HEALTHY_P99, "health p99 {p99:?} under attack");
    let held: Vec<TcpStream> = futures_join(attackers).await;
    until(
        "every slow connection is closed",
        Duration::from_secs(15),
        || descriptors(pid) <= baseline + 5,
    )
    .await;
    drop(held);
    let metrics = admin_metrics(&gateway).await;
    for limit in ["head", "idle", "body", "send"] {
        let line = format!(
            "floodgate_connections_timed_out_total{{listener=\"public\",limit=\"{limit}\"}}"
        );
        let count = metric(&metrics, &line);
        assert!(count > 0.0, "{line} counted: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_cost_little_and_go_when_idle_too_long() {
    let (gateway, _data) = start_gateway(
        "header_read_timeout_ms = 15000\nidle_timeout_ms = 15000\nmax_connections = 12000\n\
         max_connections_per_ip = 12000",
        "",
    );
    let to = address(&gateway.public_url);
    let pid = gateway.pid();
    let baseline_fds = settled_descriptors(to, pid).await;
    let baseline_rss = resident_kib(pid);
    let mut idle = Vec::with_capacity(10_000);
    let started = Instant::now();
    for index in 0..10_000 {
        // Spread over loopback addresses, as a crowd of shoppers would come.
        let from = format!("127.0.{}.{}", 1 + index / 250, 1 + index % 250);
        let mut stream = connect_from(&from, to).await;
        if index % 2 == 0 {
            // Kept alive after one request: its buffers are given back while it idles.
            let ask = b"GET /healthz HTTP/1.1\r\nHost: shop.example\r\n\r\n";
            stream.write_all(ask).await.unwrap();
        }
        idle.push(stream);
    }
    until("all 10,000 are open", Duration::from_secs(20), || {
        descriptors(pid) >= baseline_fds + 10_000
    })
    .await;
    let opened_in = started.elapsed();
    // 100,000 such connections in well under 1 GB, once the last have waited past the moment
    // a connection gives its buffers back.
    let per_connection =
        || (resident_kib(pid).saturating_sub(baseline_rss)) as f64 * 1024.0 / 10_000.0;
    let settled = Instant::now() + Duration::from_secs(5);
    while per_connection() >= 6_000.0 && Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let per_connection = per_connection();
    assert!(
        per_connection < 6_000.0,
        "{per_connection:.0} bytes per idle connection"
    );
    let p99 = health_p99(to, "127.0.200.1", 200).await;
    assert!(
        p99 < HEALTHY_P99,
        "health p99 {p99:?} beside 10,000 idle connections"
    );
    until(
        "idle connections are closed",
        Duration::from_secs(20),
        || descriptors(pid) <= baseline_fds + 5,
    )
    .await;
    eprintln!(
        "idle connection: {per_connection:.0} bytes of resident memory; opened in {opened_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_both_caps_only_health_checks_are_answered() {
    let origin = RecordingOrigin::start().await.unwrap();
    let (gateway, _data) = start_gateway(
        "max_connections = 30\nmax_connections_per_ip = 10",
        &format!("[origin]\nurl = \"{}\"\n", origin.url()),
    );
    let to = address(&gateway.public_url);
    let pid = gateway.pid();
    let baseline = settled_descriptors(to, pid).await;
    // Ten from one address fill its cap; then twenty from two more fill the listener's.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from("127.0.0.2", to).await);
    }
    until("ten seated", Duration::from_secs(5), || {
        descriptors(pid) >= baseline + 10
    })
    .await;
    let beyond_address = health_p99(to, "127.0.0.2", 50).await;
    for from in ["127.0.0.3", "127.0.0.4"] {
        for _ in 0..10 {
            held.push(connect_from(from, to).await);
        }
    }
    until("thirty seated", Duration::from_secs(5), || {
        descriptors(pid) >= baseline + 30
    })
    .await;
    let beyond_listener = health_p99(to, "127.0.0.9", 50).await;
    assert!(
        beyond_address < HEALTHY_P99 && beyond_listener < HEALTHY_P99,
        "{beyond_address:?} {beyond_listener:?}"
    );
    let mut stream = connect_from("127.0.0.9", to).await;
    stream.write_all(&get("/shop/rods", "")).await.unwrap();
    let refused = read_to_close(&mut stream).await;
    assert_eq!(status(&refused), 503, "{refused}");
    assert!(refused.contains("retry-after:"), "{refused}");
    assert_eq!(origin.connections(), 0);
    let metrics = admin_metrics(&gateway).await;
    let by_address = "floodgate_connections_beyond_cap_total{listener=\"public\",cap=\"max_connections_per_ip\"}";
    let by_listener =
        "floodgate_connections_beyond_cap_total{listener=\"public\",cap=\"max_connections\"}";
    assert_eq!(metric(&metrics, by_address), 50.0, "{metrics}");
    assert_eq!(metric(&metrics, by_listener), 51.0, "{metrics}");
    drop(held);
    let started = Instant::now();
    loop {
        let served = exchange(to, &get("/shop/rods", "")).await;
        if status(&served) == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "seats come back: {served}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_authentications_are_limited_per_address() {
    let (gateway, _data) = start_gateway("", "");
    let to = address(&gateway.admin_url);
    let ask = |token: &str| {
        format!(
            "GET /admin/drops HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let started = Instant::now();
    let mut statuses = Vec::new();
    for guess in 0..40 {
        let mut stream = connect_from("127.0.0.2", to).await;
        stream
            .write_all(&ask(&format!("guess-{guess}")))
            .await
            .unwrap();
        statuses.push(status(&read_to_close(&mut stream).await));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tried = statuses.iter().filter(|&&code| code == 401).count() as f64;
    assert!(
        tried <= 10.0 + elapsed + 1.0,
        "{tried} guesses compared in {elapsed:.1} s: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // The right token from the locked-out address waits too; from another it is let in.
    let mut locked = connect_from("127.0.0.2", to).await;
    locked.write_all(&ask(&gateway.admin_token)).await.unwrap();
    let locked = read_to_close(&mut locked).await;
    assert_eq!(status(&locked), 429, "{locked}");
    assert!(locked.contains("retry-after:"), "{locked}");
    let mut other = connect_from("127.0.0.3", to).await;
    other.write_all(&ask(&gateway.admin_token)).await.unwrap();
    assert_eq!(status(&read_to_close(&mut other).await), 200);
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.unwrap());
    }
    done
}

/// The admin listener's `/metrics`.
async fn admin_metrics(gateway: &GatewayProcess) -> String {
    let to = address(&gateway.admin_url);
    let ask = format!(
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        gateway.admin_authorization()
    );
    body(&exchange(to, ask.as_bytes()).await).to_owned()
}

/// The value of the sample `line` names (its name and labels).
fn metric(metrics: &str, line: &str) -> f64 {
    metrics
        .lines()
        .find_map(|each| each.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line}"))
}

/// Resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
