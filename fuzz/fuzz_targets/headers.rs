//! Whatever headers a client sends, the head forwarded to the upstream parses as one request,
//! keeps no hop-by-hop header and none that `Connection` names, carries each header floodgate
//! adds exactly once, and `Cache-Control` parsing never panics.
#![no_main]

use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use floodgate_core::CacheControl;
use floodgate_front_door::encode_forwarded_head;
use floodgate_http::ClientAddr;
use floodgate_http::wire::RequestFraming;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|lines: Vec<(&str, &[u8])>| {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    for value in headers.get_all("cache-control") {
        if let Ok(text) = value.to_str() {
            let _ = CacheControl::parse(text).freshness();
        }
    }
    // The front door refuses a request naming two hosts before anything is forwarded.
    if headers.get_all("host").iter().count() > 1 {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all("connection")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let client = ClientAddr::new("192.0.2.1".parse().expect("address"));
    let authority = Authority::from_static("origin.internal:8080");
    let mut head = Vec::new();
    let framing = RequestFraming::Length(3);
    encode_forwarded_head(&Method::POST, "/cart", &headers, &client, &authority, framing, &mut head);

    let mut slots = vec![httparse::EMPTY_HEADER; headers.len() + 8];
    let mut request = httparse::Request::new(&mut slots);
    let length = match request.parse(&head) {
        Ok(httparse::Status::Complete(length)) => length,
        other => panic!("the forwarded head does not parse: {other:?}"),
    };
    assert_eq!(length, head.len(), "one head, nothing after it");
    let count = |name: &str| {
        (request.headers.iter())
            .filter(|line| line.name.eq_ignore_ascii_case(name))
            .count()
    };
    for gone in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "trailer"] {
        assert_eq!(count(gone), 0, "{gone} was forwarded");
    }
    for name in named.iter().filter(|name| !is_added(name)) {
        assert_eq!(count(name.as_str()), 0, "{name} was named by Connection yet forwarded");
    }
    for added in ["x-forwarded-for", "via", "host", "content-length"] {
        assert_eq!(count(added), 1, "{added} is not there exactly once");
    }
});

/// Headers the gateway itself writes, whatever the client's were.
fn is_added(name: &HeaderName) -> bool {
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "host"].contains(&name.as_str())
}
