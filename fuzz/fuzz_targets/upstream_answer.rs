//! Whatever an upstream sends, its answer parses and its body decodes to a result or an error,
//! never a panic; the result does not depend on how the bytes were split across reads; and a
//! body with a length is never longer than it.
#![no_main]

use axum::http::{HeaderName, Method};
use bytes::BytesMut;
use floodgate_http::wire::{
    BodyDecoder, Decoded, ResponseFraming, WireError, parse_response_head,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u8, bool)| {
    let (wire, split, to_head) = input;
    let method = if to_head { Method::HEAD } else { Method::GET };
    let whole = read(wire, wire.len().max(1), &method);
    let split = read(wire, usize::from(split).max(1), &method);
    assert_eq!(whole, split, "the answer depends on how it was read");
    if let Ok(Some((ResponseFraming::Length(length), body))) = &whole {
        assert!(body.len() as u64 <= *length);
    }
});

/// A header the proxy replaces with its own, left out as read.
static REPLACED: HeaderName = HeaderName::from_static("x-request-id");

/// The framing and body of `wire`, delivered `piece` bytes at a time; `None` for an incomplete
/// head.
fn read(
    wire: &[u8],
    piece: usize,
    method: &Method,
) -> Result<Option<(ResponseFraming, Vec<u8>)>, WireError> {
    let mut pieces = wire.chunks(piece);
    let mut buffer = BytesMut::new();
    let head = loop {
        if let Some(head) = parse_response_head(&mut buffer, method, &REPLACED)? {
            break head;
        }
        match pieces.next() {
            Some(more) => buffer.extend_from_slice(more),
            None => return Ok(None),
        }
    };
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buffer)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Done => return Ok(Some((head.framing, body))),
            Decoded::NeedMore => match pieces.next() {
                Some(more) => buffer.extend_from_slice(more),
                None => {
                    decoder.finish_at_close()?;
                    return Ok(Some((head.framing, body)));
                }
            },
        }
    }
}
