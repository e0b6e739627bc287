//! The listener's HTTP/1.1 as a client sees it on the socket.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Path;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// An axum router as the handler, answering each request with a clone of itself as axum
/// serves one, and refusals with their status alone.
#[derive(Clone)]
struct Routed(axum::Router);

impl Handler for Routed {
    fn handle(&self, request: Request<Body>) -> impl Future<Output = Response<Body>> + Send {
        use tower::ServiceExt;
        let router = self.0.clone();
        async move {
            let Ok(response) = router.oneshot(request).await;
            response
        }
    }

    fn refusal(&self, error: ProtocolError) -> Response<Body> {
        let mut response = Response::new(Body::from(error.to_string()));
        *response.status_mut() = error.status();
        response
    }
}

const READ_TIMEOUT: Duration = Duration::from_millis(300);

/// A listener on loopback with a few routes; its address, and the switch that shuts it down.
async fn listener() -> (String, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let router = axum::Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(echo))
        .route(
            "/held/{name}",
            post(|Path(name): Path<String>, body: Body| async move {
                note_start(name);
                echo(body).await
            }),
        )
        .route("/ignore", post(|| async { "not read" }))
        .route(
            "/slow",
            get(|| async {
                note_start("slow".into());
                let _noted = NotedOnDrop;
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let pieces =
                    ["one ", "two"].map(|piece| Ok::<_, std::io::Error>(Bytes::from(piece)));
                Body::from_stream(futures_util::stream::iter(pieces))
            }),
        );
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let loops = Arc::new(
        ConnectionLoops::start(NonZeroUsize::new(1).unwrap(), "test-loop", || {}).unwrap(),
    );
    let (stop, stopped) = watch::channel(false);
    let limits = ConnectionLimits {
        header_read_timeout: READ_TIMEOUT,
        idle_timeout: READ_TIMEOUT,
        shutdown_grace: Duration::from_secs(5),
        ..ConnectionLimits::default()
    };
    let served = tokio::spawn(serve(
        Listener::plain(socket),
        move |_| Routed(router.clone()),
        limits,
        loops,
        stopped,
        // 2026-11-22T10:00:00Z: the tests read no wall clock.
        Arc::new(|| 1_795_341_600_000),
        Arc::default(),
    ));
    (address, stop, served)
}

/// How many bytes of its body the handler read.
async fn echo(body: Body) -> String {
    let read = body.collect().await.map(|body| body.to_bytes().len());
    read.map_or_else(
        |error| format!("broken: {error}"),
        |bytes| format!("{bytes} bytes"),
    )
}

/// Handlers begun, by the name in their path: a test waits for its own to start.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note_start(name: String) {
    STARTED.lock().unwrap().push(name);
}

fn has_started(name: &str) -> bool {
    STARTED
        .lock()
        .unwrap()
        .iter()
        .any(|started| started == name)
}

/// Waits, within a deadline, for `condition` to hold.
async fn until(condition: impl Fn() -> bool, what: &str) {
    let holds = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), holds)
        .await
        .unwrap_or_else(|_| panic!("{what}"));
}

/// Slow handlers dropped before they answered.
static SLOW_DROPPED: AtomicUsize = AtomicUsize::new(0);

struct NotedOnDrop;

impl Drop for NotedOnDrop {
    fn drop(&mut self) {
        SLOW_DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sends `wire` on a new connection and reads until the listener closes it.
async fn exchange(address: &str, wire: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(wire).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the listener closes the connection")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (address, _stop, _served) = listener().await;
    let answer = exchange(
        &address,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
          GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{answer}");
    assert!(answers[0].starts_with("200 OK\r\n") && answers[0].ends_with("\r\n\r\nhello"));
    assert!(answers[0].contains("content-length: 5\r\n"), "{answer}");
    assert!(answers[0].contains("date: "), "{answer}");
    assert!(answers[1].ends_with("\r\n\r\n3 bytes"), "{answer}");
    assert!(answers[2].contains("connection: close\r\n"), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_streams_to_the_handler_and_the_connection_goes_on() {
    let (address, _stop, _served) = listener().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            b"POST /held/chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
    // The rest arrives once the handler is reading, in pieces.
    until(|| has_started("chunked"), "the handler starts").await;
    stream
        .write_all(b"3;ext=1\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(
        answer.contains("\r\n\r\n8 bytesHTTP/1.1 200 OK"),
        "{answer}"
    );
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn a_client_that_expects_continue_is_told_to_send_its_body() {
    let (address, _stop, _served) = listener().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"body").await.unwrap();
    assert!(
        read_to_close(&mut stream)
            .await
            .ends_with("\r\n\r\n4 bytes")
    );
}

#[tokio::test]
async fn a_client_whose_body_is_not_wanted_is_not_asked_for_it() {
    let (address, _stop, _served) = listener().await;
    let answer = exchange(
        &address,
        b"POST /ignore HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
}

#[tokio::test]
async fn a_body_the_handler_left_unread_ends_the_connection() {
    let (address, _stop, _served) = listener().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    // Its length is said, but it has not all arrived: what follows cannot be told from it.
    stream
        .write_all(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\npart")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("not read"), "{answer}");
}

#[tokio::test]
async fn answers_of_unknown_length_are_chunked_for_http_1_1_and_run_to_the_close_for_1_0() {
    let (address, _stop, _served) = listener().await;
    let chunked = exchange(
        &address,
        b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        chunked.contains("transfer-encoding: chunked\r\n"),
        "{chunked}"
    );
    assert!(
        chunked.ends_with("\r\n\r\n4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n"),
        "{chunked}"
    );
    let old = exchange(&address, b"GET /stream HTTP/1.0\r\n\r\n").await;
    assert!(!old.contains("transfer-encoding"), "{old}");
    assert!(
        old.contains("connection: close\r\n") && old.ends_with("\r\n\r\none two"),
        "{old}"
    );
}

#[tokio::test]
async fn an_http_1_0_client_that_asks_keeps_its_connection() {
    let (address, _stop, _served) = listener().await;
    let answer = exchange(
        &address,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("200 OK").count(), 2, "{answer}");
    assert!(answer.contains("connection: keep-alive\r\n"), "{answer}");
}

#[tokio::test]
async fn a_head_answer_has_the_length_but_no_body() {
    let (address, _stop, _served) = listener().await;
    let answer = exchange(
        &address,
        b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("content-length: 5\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
}

#[tokio::test]
async fn a_refused_head_is_answered_and_the_connection_closed() {
    let (address, _stop, _served) = listener().await;
    let smuggled = exchange(
        &address,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    )
    .await;
    assert!(
        smuggled.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{smuggled}"
    );
    assert_eq!(smuggled.matches("HTTP/1.1").count(), 1, "{smuggled}");
    assert!(
        smuggled.ends_with("the request body's length is ambiguous"),
        "rendered by the handler: {smuggled}"
    );
    let oversized = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let oversized = exchange(&address, oversized.as_bytes()).await;
    assert!(oversized.starts_with("HTTP/1.1 431 "), "{oversized}");
    assert!(
        oversized.ends_with(&ProtocolError::HeadTooLarge.to_string()),
        "{oversized}"
    );
}

#[tokio::test]
async fn a_silent_or_slow_client_is_closed_after_the_read_timeout() {
    let (address, _stop, _served) = listener().await;
    let mut idle = TcpStream::connect(&address).await.unwrap();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(read_to_close(&mut idle).await, "");
    assert_eq!(read_to_close(&mut slow).await, "");
    assert!(started.elapsed() >= READ_TIMEOUT - Duration::from_millis(50));
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_a_request_in_flight_finish() {
    let (address, stop, served) = listener().await;
    let mut idle = TcpStream::connect(&address).await.unwrap();
    let mut busy = TcpStream::connect(&address).await.unwrap();
    busy.write_all(b"POST /held/busy HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    until(|| has_started("busy"), "the busy request is in flight").await;
    stop.send(true).unwrap();
    assert_eq!(read_to_close(&mut idle).await, "");
    busy.write_all(b"cd").await.unwrap();
    let answer = read_to_close(&mut busy).await;
    assert!(
        answer.contains("connection: close\r\n") && answer.ends_with("4 bytes"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_that_hangs_up_has_its_request_dropped() {
    let (address, _stop, _served) = listener().await;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    until(|| has_started("slow"), "the slow handler starts").await;
    assert_eq!(SLOW_DROPPED.load(Ordering::SeqCst), 0, "still working");
    drop(stream);
    until(
        || SLOW_DROPPED.load(Ordering::SeqCst) > 0,
        "the handler is dropped, not left to run its 30 s",
    )
    .await;
}
