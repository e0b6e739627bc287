//! A client's request head (RFC 9112), taken off the front of the connection's read buffer as
//! an `http` request, with how its body follows; or the error it is answered with instead.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use super::request_target::{TargetRefusal, normalise_target};
use crate::ProtocolError;
use crate::wire::{FramingRefusal, LineFacts, RequestFraming};

/// The longest request head accepted (nginx's `large_client_header_buffers` allow 32 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines in a request head (hyper's default).
const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The request, its body still to be read.
    pub request: Request<()>,
    /// How its body follows the head.
    pub framing: RequestFraming,
    /// Whether the client may send another request on the connection afterwards.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// Takes the request head off the front of `buffer`; `None` while it is incomplete. A head that
/// is refused is answered with the error, and the connection closed: what follows it cannot be
/// trusted to start a request.
pub fn parse_request_head(buffer: &mut BytesMut) -> Result<Option<RequestHead>, ProtocolError> {
    if buffer.is_empty() {
        return Ok(None);
    }
    // Left unset for the parser to fill, as the upstream side does (`wire`).
    let mut lines = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buffer,
        &mut lines,
    ) {
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
        Ok(httparse::Status::Partial) if buffer.len() <= MAX_HEAD_BYTES => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::HeadTooLarge),
        Err(_) => return Err(ProtocolError::Malformed("the request head is malformed")),
    };
    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| ProtocolError::Malformed("the request method is malformed"))?;
    let minor_version = parsed.version.unwrap_or_default();
    let facts = LineFacts::of(parsed.headers);
    let framing = facts
        .request_framing(minor_version)
        .map_err(|refusal| match refusal {
            FramingRefusal::Ambiguous => {
                ProtocolError::Malformed("the request body's length is ambiguous")
            }
            FramingRefusal::UnknownCoding => ProtocolError::UnsupportedTransferCoding,
        })?;
    let keep_alive = !facts.close && (minor_version == 1 || facts.keep_alive);
    let expects_continue = facts.expects_continue && minor_version == 1;
    // Where each value and the target lie in the head, so they can share it once it is split
    // off the buffer, rather than be copied.
    let base = buffer.as_ptr() as usize;
    let span = |text: &[u8]| {
        let start = text.as_ptr() as usize - base;
        start..start + text.len()
    };
    let target = span(parsed.path.unwrap_or_default().as_bytes());
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for line in &*parsed.headers {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| ProtocolError::Malformed("a header name is malformed"))?;
        let value = if line.value.is_empty() {
            0..0
        } else {
            span(line.value)
        };
        headers.push((name, value));
    }
    let head = buffer.split_to(length).freeze();
    let mut uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| ProtocolError::Malformed("the request target is malformed"))?;
    // Room for the request id the gateway adds: growing a full map rehashes it.
    let mut header_map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| ProtocolError::Malformed("a header value is malformed"))?;
        header_map.append(name, value);
    }
    let version = if minor_version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    normalise_target(&method, version, &mut uri, &header_map).map_err(|refusal| match refusal {
        TargetRefusal::Malformed(why) => ProtocolError::Malformed(why),
        TargetRefusal::MethodNotServed => ProtocolError::MethodNotServed,
    })?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = header_map;
    Ok(Some(RequestHead {
        request,
        framing,
        keep_alive,
        expects_continue,
    }))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn parse(wire: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        parse_request_head(&mut BytesMut::from(wire))
    }

    fn framing(wire: &str) -> Result<RequestFraming, StatusCode> {
        let head = parse(wire.as_bytes()).map_err(ProtocolError::status)?;
        Ok(head.expect("a whole head").framing)
    }

    #[test]
    fn a_head_becomes_a_request_and_what_follows_stays_in_the_buffer() {
        let mut buffer = BytesMut::from(
            &b"GET /shop/rods?page=2 HTTP/1.1\r\nHost: shop\r\nX-Tag: a\r\nx-tag: b\r\n\r\nGET /next"[..],
        );
        let head = parse_request_head(&mut buffer).unwrap().unwrap();
        let request = &head.request;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/shop/rods?page=2");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "shop");
        let tags: Vec<_> = request.headers().get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);
        assert_eq!(head.framing, RequestFraming::Empty);
        assert!(head.keep_alive && !head.expects_continue);
        assert_eq!(&buffer[..], b"GET /next");
        assert!(
            parse_request_head(&mut buffer).unwrap().is_none(),
            "incomplete"
        );
        assert_eq!(&buffer[..], b"GET /next", "left for the next read");
    }

    #[test]
    fn the_body_framing_is_refused_wherever_two_readers_could_disagree() {
        let head =
            |headers: &str| framing(&format!("POST /o HTTP/1.1\r\nHost: shop\r\n{headers}\r\n"));
        assert_eq!(
            head("Content-Length: 12\r\n"),
            Ok(RequestFraming::Length(12))
        );
        assert_eq!(head("Content-Length: 0\r\n"), Ok(RequestFraming::Empty));
        assert_eq!(
            head("Content-Length: 5, 5\r\n"),
            Ok(RequestFraming::Length(5))
        );
        assert_eq!(
            head("Transfer-Encoding: chunked\r\n"),
            Ok(RequestFraming::Chunked)
        );
        let bad = Err(StatusCode::BAD_REQUEST);
        assert_eq!(head("Content-Length: 5, 6\r\n"), bad);
        assert_eq!(head("Content-Length: 5\r\nContent-Length: 6\r\n"), bad);
        assert_eq!(head("Content-Length: -1\r\n"), bad);
        assert_eq!(head("Content-Length: 1e3\r\n"), bad);
        assert_eq!(
            head("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            bad
        );
        assert_eq!(head("Transfer-Encoding: chunked, gzip\r\n"), bad);
        assert_eq!(
            head("Transfer-Encoding: gzip, chunked\r\n"),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        let http_1_0 = framing("POST /o HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(http_1_0, bad);
    }

    #[test]
    fn keep_alive_and_continue_follow_the_version_and_connection() {
        let head = |wire: &str| parse(wire.as_bytes()).unwrap().unwrap();
        assert!(!head("GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let waiting = head(
            "POST / HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(waiting.expects_continue);
        let old = head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!old.expects_continue, "HTTP/1.0 knows no 100");
    }

    #[test]
    fn oversized_and_malformed_heads_are_refused() {
        let long = format!(
            "GET / HTTP/1.1\r\nX-Big: {}\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let status = |wire: &[u8]| parse(wire).map(|_| ()).unwrap_err().status();
        assert_eq!(
            status(long.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            status(many.as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(b"GET /a b HTTP/1.1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            StatusCode::BAD_REQUEST
        );
    }
}
