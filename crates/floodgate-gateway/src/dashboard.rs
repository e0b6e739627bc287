//! The live dashboard: one self-contained page (`dashboard.html`, no external assets) and the
//! event stream it reads, a [`Frame`](crate::timeline::Frame) a second, starting with the last
//! few minutes so a page opened mid-drop has history.
//!
//! A browser cannot put a bearer token on a page load or on an `EventSource`, so the admin
//! listener also takes the token from the `floodgate_admin` cookie on reads (GET and HEAD
//! only, `SameSite=Strict`, so another site can neither send it nor change anything with it).
//! A browser without it gets [`sign_in_page`], which sets the cookie from the address's
//! `#token=` fragment (never sent to the server, so never in a log) or from a form.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::Stream;

use crate::Gateway;
use crate::timeline::Frame;

/// The cookie a browser shows the admin listener its token with.
pub(crate) const ADMIN_COOKIE: &str = "floodgate_admin";

const PAGE: &str = include_str!("dashboard.html");
const SIGN_IN: &str = include_str!("sign_in.html");

/// `GET /admin/dashboard`.
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /admin/dashboard/events`: `history` once, then a `frame` each second.
pub(crate) async fn events(
    State(gateway): State<Arc<Gateway>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut frames = gateway.timeline.subscribe();
    // Frames made from here on are sent as they come; those before are in the history.
    frames.mark_unchanged();
    let history = gateway.timeline.history();
    let history: Vec<&Frame> = history.iter().map(|frame| &**frame).collect();
    let history = Event::default()
        .event("history")
        .json_data(history)
        .unwrap_or_default();
    let first = futures_util::stream::once(async move { Ok(history) });
    let rest = futures_util::stream::unfold(frames, |mut frames| async move {
        frames.changed().await.ok()?;
        let frame = frames.borrow_and_update().clone()?;
        let event = Event::default()
            .event("frame")
            .json_data(&*frame)
            .unwrap_or_default();
        Some((Ok(event), frames))
    });
    Sse::new(futures_util::StreamExt::chain(first, rest)).keep_alive(KeepAlive::default())
}

/// What a browser gets from the admin listener without a token: a `401` page that signs in.
pub(crate) fn sign_in_page() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CACHE_CONTROL, "no-store")],
        Html(SIGN_IN),
    )
        .into_response()
}

/// The token in the `floodgate_admin` cookie, percent-decoded as the sign-in page encoded it.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix(ADMIN_COOKIE)?.strip_prefix('='))?;
    percent_decode(value.as_bytes())
}

/// `%XX` escapes back to bytes; `None` for a broken escape.
fn percent_decode(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let high = (*bytes.next()? as char).to_digit(16)?;
            let low = (*bytes.next()? as char).to_digit(16)?;
            decoded.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            decoded.push(byte);
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_holds_the_token_percent_encoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; floodgate_admin=t%2Bk%3Dn; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some(&b"t+k=n"[..]));
        headers.insert(header::COOKIE, "floodgate_admin=%zz".parse().unwrap());
        assert_eq!(cookie_token(&headers), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }
}
