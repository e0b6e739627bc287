//! A request's target and `Host` as every layer above the server sees them: one normal form of
//! the path (RFC 3986 §6.2.2), decided here once, so that the route a request matches, the key
//! it is cached under and the path the origin is sent are the same path. A target that two
//! readers could take for two different paths is refused instead.
//!
//! - Escapes of unreserved characters are decoded (`%2e` is `.`, `%41` is `A`), the others are
//!   written in upper case; an escaped `/` or `\`, or an escaped control byte, is refused (the
//!   origin might read it as a separator, or a string end).
//! - Empty segments are merged (`//checkout` is `/checkout`, as nginx's `merge_slashes`).
//! - Dot segments are removed (RFC 3986 §5.2.4), never above the root; a dot segment carrying a
//!   parameter (`..;`, which Tomcat reads as `..`) and a raw `\` are refused.
//! - An absolute-form target must name the `Host` the request carries, and becomes origin form.
//! - `CONNECT` and `TRACE` are not served (a gateway is no tunnel, and `TRACE` echoes cookies).
//! - An HTTP/1.1 request names exactly one `Host`, an authority with no user information.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri, Version, header};

/// Why a request head's target or `Host` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetRefusal {
    /// A `400`, with what is wrong.
    Malformed(&'static str),
    /// A method the gateway does not serve (`405`).
    MethodNotServed,
}

/// Checks `method`, `uri` and the `Host` lines of a request head and puts the target in its
/// normal form, in origin form (`/path?query`).
pub(super) fn normalise_target(
    method: &Method,
    version: Version,
    uri: &mut Uri,
    headers: &HeaderMap,
) -> Result<(), TargetRefusal> {
    if *method == Method::CONNECT || *method == Method::TRACE {
        return Err(TargetRefusal::MethodNotServed);
    }
    let host = the_host(version, headers)?;
    if let Some(named) = uri.authority() {
        let same = host.is_some_and(|host| host.eq_ignore_ascii_case(named.as_str().as_bytes()));
        if !same || uri.scheme_str().is_some_and(|scheme| scheme != "http") {
            return Err(TargetRefusal::Malformed(
                "an absolute-form target must name the request's Host",
            ));
        }
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(TargetRefusal::Malformed("the request target is not a path"));
    }
    let absolute = uri.scheme().is_some();
    let normal = normal_path(path).map_err(TargetRefusal::Malformed)?;
    if let (Cow::Borrowed(_), false) = (&normal, absolute) {
        return Ok(());
    }
    let rewritten = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal.into_owned(),
    };
    let path_and_query = PathAndQuery::try_from(rewritten)
        .map_err(|_| TargetRefusal::Malformed("the request target is malformed"))?;
    *uri = Uri::from(path_and_query);
    Ok(())
}

/// The request's one `Host`, if it has one; HTTP/1.1 requires it (RFC 9112 §3.2). It must be
/// a host and an optional port (RFC 3986 §3.2.2: a name, an IPv4 address or a bracketed IPv6
/// one), with no user information: checked byte by byte, as every request pays for it.
fn the_host(version: Version, headers: &HeaderMap) -> Result<Option<&[u8]>, TargetRefusal> {
    let mut lines = headers.get_all(header::HOST).iter();
    let Some(value) = lines.next() else {
        return match version {
            Version::HTTP_10 => Ok(None),
            _ => Err(TargetRefusal::Malformed(
                "an HTTP/1.1 request names its Host",
            )),
        };
    };
    if lines.next().is_some() {
        return Err(TargetRefusal::Malformed("a request names one Host"));
    }
    let host = value.as_bytes();
    let allowed = |byte: &u8| {
        matches!(byte, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            | b':' | b'[' | b']' | b'%')
    };
    if host.is_empty() || host[0] == b':' || !host.iter().all(allowed) {
        return Err(TargetRefusal::Malformed(
            "the Host is not a host name and port",
        ));
    }
    Ok(Some(host))
}

/// `path` in its normal form: borrowed when it already is (nearly always), else rewritten; or
/// why it is refused.
pub(super) fn normal_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if is_plainly_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let last = raw_segments.len() - 1;
    // Whether the path ends in a `/`: a last segment that is empty, `.` or `..`.
    let mut ends_in_slash = false;
    for (index, raw) in raw_segments.into_iter().enumerate() {
        let segment = decode_segment(raw)?;
        let dot_part = segment.split(';').next().unwrap_or_default();
        let is_dot = matches!(segment.as_str(), "." | "..");
        if !is_dot && matches!(dot_part, "." | "..") {
            return Err("a dot segment carries a parameter");
        }
        if index == last {
            ends_in_slash = segment.is_empty() || is_dot;
        }
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    let mut normal = String::with_capacity(path.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if ends_in_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether `path` has nothing to normalise: no escape, no `\`, no empty or dot segment.
fn is_plainly_normal(path: &[u8]) -> bool {
    let mut previous = 0;
    for &byte in path {
        match byte {
            b'%' | b'\\' => return false,
            b'/' if previous == b'/' => return false,
            b'.' if previous == b'/' => return false,
            _ => {}
        }
        previous = byte;
    }
    true
}

/// One segment with its escapes normalised: unreserved characters decoded, the rest in upper
/// case; or why it is refused.
fn decode_segment(raw: &str) -> Result<String, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'\\' {
            return Err("a path holds a backslash");
        }
        if byte != b'%' {
            out.push(char::from(byte));
            index += 1;
            continue;
        }
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| Some(hex_value(hex[0])? << 4 | hex_value(hex[1])?))
            .ok_or("a percent escape is malformed")?;
        match escaped {
            b'/' | b'\\' => return Err("a path holds an escaped slash"),
            0x00..=0x1f | 0x7f => return Err("a path holds an escaped control character"),
            _ if escaped.is_ascii_alphanumeric() || b"-._~".contains(&escaped) => {
                out.push(char::from(escaped));
            }
            _ => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(escaped >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(escaped & 0xf)]));
            }
        }
        index += 3;
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn paths_take_one_normal_form() {
        for (asked, normal) in [
            ("/shop/rods", "/shop/rods"),
            ("/", "/"),
            ("/shop/", "/shop/"),
            ("/shop/../checkout/pay", "/checkout/pay"),
            ("/shop/%2e%2e/checkout/pay", "/checkout/pay"),
            ("/shop/%2E%2e/checkout/pay", "/checkout/pay"),
            ("/shop/.%2e/checkout/pay", "/checkout/pay"),
            ("//checkout/pay", "/checkout/pay"),
            ("/shop//rods///x", "/shop/rods/x"),
            ("/checkout/../shop/x", "/shop/x"),
            ("/./shop/./x", "/shop/x"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/shop/..", "/"),
            ("/shop/rods/..", "/shop/"),
            ("/shop/rods/.", "/shop/rods/"),
            ("/check%6Fut/pay", "/checkout/pay"),
            ("/a%7eb%2D", "/a~b-"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/q%3fx", "/q%3Fx"),
            ("/.well-known/x", "/.well-known/x"),
            ("/shop/..rods", "/shop/..rods"),
            ("/a;b/c", "/a;b/c"),
        ] {
            assert_eq!(normal_path(asked).as_deref(), Ok(normal), "{asked}");
        }
    }

    #[test]
    fn paths_two_readers_could_split_differently_are_refused() {
        for asked in [
            "/shop/..;/checkout/pay",
            "/shop/.;/checkout",
            "/shop/..;jsessionid=1/checkout",
            "/shop/%2e%2e;/checkout",
            "/shop%2fcheckout",
            "/shop%2Fcheckout",
            "/shop%5ccheckout",
            "/shop\\..\\checkout",
            "/shop/%00",
            "/shop/%0a",
            "/shop/%7F",
            "/shop/%zz",
            "/shop/%2",
            "/shop/%",
        ] {
            assert!(normal_path(asked).is_err(), "{asked}");
        }
    }

    proptest! {
        /// Normal is a fixed point: no dot segment, no empty segment, no escape of an unreserved
        /// character is left, so a second pass changes nothing.
        #[test]
        fn a_normal_path_is_its_own_normal_form(
            segments in proptest::collection::vec("(\\.|\\.\\.|%2[eE]|%2[eE]%2[eE]|[a-z]{1,3}|%4[1-9]|%[cC]3|;x|)", 0..8),
        ) {
            let path = format!("/{}", segments.join("/"));
            if let Ok(normal) = normal_path(&path) {
                let again = normal_path(&normal);
                prop_assert_eq!(again.as_deref(), Ok(normal.as_ref()));
                prop_assert!(!normal.contains("//"));
                prop_assert!(!normal.split('/').any(|segment| segment == "." || segment == ".."));
            }
        }
    }

    fn check(
        method: Method,
        version: Version,
        target: &str,
        hosts: &[&str],
    ) -> Result<String, TargetRefusal> {
        let mut uri: Uri = target.parse().unwrap();
        let mut headers = HeaderMap::new();
        for host in hosts {
            headers.append(header::HOST, host.parse().unwrap());
        }
        normalise_target(&method, version, &mut uri, &headers).map(|()| uri.to_string())
    }

    #[test]
    fn heads_rfc_9112_refuses_are_refused() {
        let get =
            |target: &str, hosts: &[&str]| check(Method::GET, Version::HTTP_11, target, hosts);
        assert_eq!(get("/shop", &["shop.example"]), Ok("/shop".into()));
        assert_eq!(
            get("http://shop.example/a/../b?x=1", &["shop.example"]),
            Ok("/b?x=1".into()),
            "absolute form becomes origin form"
        );
        assert_eq!(
            get("http://SHOP.example:80/a", &["shop.example:80"]),
            Ok("/a".into())
        );
        let malformed = |result: Result<String, TargetRefusal>| {
            assert!(
                matches!(result, Err(TargetRefusal::Malformed(_))),
                "{result:?}"
            );
        };
        malformed(get("http://evil.example/a", &["shop.example"]));
        malformed(get("http://shop.example:8080/a", &["shop.example"]));
        malformed(get("https://shop.example/a", &["shop.example"]));
        malformed(get("/shop", &[]));
        malformed(get("/shop", &["shop.example", "evil.example"]));
        malformed(get("/shop", &["user@shop.example"]));
        malformed(get("/shop", &[""]));
        malformed(get("/shop", &["shop example"]));
        malformed(get("*", &["shop.example"]));
        malformed(get("shop.example:443", &["shop.example"]));
        assert_eq!(
            check(Method::GET, Version::HTTP_10, "/shop", &[]),
            Ok("/shop".into())
        );
        for method in [Method::CONNECT, Method::TRACE] {
            assert_eq!(
                check(method, Version::HTTP_11, "/", &["shop.example"]),
                Err(TargetRefusal::MethodNotServed)
            );
        }
    }
}
