//! Whatever a client sends, its request head parses to a request or a refusal, never a panic;
//! the result does not depend on how the bytes were split across reads; a request never
//! carries both framings (the smuggling shape); and a body with a length is never longer than
//! it.
#![no_main]

use bytes::BytesMut;
use floodgate_http::ProtocolError;
use floodgate_http::server::parse_request_head;
use floodgate_http::wire::{BodyDecoder, Decoded, RequestFraming, WireError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u8)| {
    let (wire, split) = input;
    let whole = read(wire, wire.len().max(1));
    let split = read(wire, usize::from(split).max(1));
    assert_eq!(whole, split, "the request depends on how it was read");
    if let Ok(Some((RequestFraming::Length(length), Ok(body)))) = &whole {
        assert!(body.len() as u64 <= *length);
    }
});

/// The framing of `wire`'s head, and its body or why it broke, delivered
/// `piece` bytes at a time; `None` for an incomplete head.
#[allow(clippy::type_complexity)]
fn read(
    wire: &[u8],
    piece: usize,
) -> Result<Option<(RequestFraming, Result<Vec<u8>, WireError>)>, ProtocolError> {
    let mut pieces = wire.chunks(piece);
    let mut buffer = BytesMut::new();
    let head = loop {
        if let Some(head) = parse_request_head(&mut buffer)? {
            break head;
        }
        match pieces.next() {
            Some(more) => buffer.extend_from_slice(more),
            None => return Ok(None),
        }
    };
    let headers = head.request.headers();
    let both = headers.contains_key("content-length") && headers.contains_key("transfer-encoding");
    assert!(!both, "both framings passed: {headers:?}");
    if headers.contains_key("transfer-encoding") {
        assert_eq!(head.framing, RequestFraming::Chunked);
    }
    let mut decoder = BodyDecoder::for_request(head.framing);
    let mut body = Vec::new();
    let body = loop {
        match decoder.decode(&mut buffer) {
            Ok(Decoded::Data(data)) => body.extend_from_slice(&data),
            Ok(Decoded::Done) => break Ok(body),
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(more) => buffer.extend_from_slice(more),
                None => break decoder.finish_at_close().map(|()| body),
            },
            Err(error) => break Err(error),
        }
    };
    Ok(Some((head.framing, body)))
}
