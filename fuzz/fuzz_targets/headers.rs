//! Whatever headers a client sends, the forwarded set keeps no hop-by-hop header and none that
//! `Connection` names, and `Cache-Control` parsing never panics.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use floodgate_core::CacheControl;
use floodgate_gateway::front_door::{ClientAddr, prepare_request_headers};
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
    let named: Vec<HeaderName> = headers
        .get_all("connection")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let client = ClientAddr::new("192.0.2.1".parse().expect("address"));
    prepare_request_headers(&mut headers, &client);
    for gone in ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "trailer"] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
    for name in named.iter().filter(|name| !is_added(name)) {
        assert!(!headers.contains_key(name), "{name} was named by Connection yet forwarded");
    }
});

/// Headers the gateway itself adds after removing the client's.
fn is_added(name: &HeaderName) -> bool {
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"].contains(&name.as_str())
}
