//! The waiting room's public endpoints: join, poll (JSON for API clients, a small page for
//! browsers), server-sent events, and the pre-queue's fairness record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use floodgate_core::ledger::Refusal;
use floodgate_core::{DropId, DropState, Identity, hex};
use futures_util::Stream;
use serde_json::{Value, json};

use crate::Gateway;
use crate::body::{parse_json, read_request};
use crate::error::ApiError;
use crate::waiting_room::{Answer, RoomDrop};
use floodgate_http::wants_html;

/// How often an event stream looks for a change in the shopper's standing.
const EVENT_TICK: Duration = Duration::from_secs(1);

/// The waiting room's routes.
pub(crate) fn routes() -> axum::Router<Arc<Gateway>> {
    axum::Router::new()
        .route("/api/drops/{drop}/queue", post(join_queue))
        .route("/api/drops/{drop}/fairness", get(fairness))
        .route("/api/queue/{ticket}", get(queue_view))
        .route("/api/queue/{ticket}/events", get(queue_events))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRequest {
    /// Absent in cookie mode, where the visitor cookie names the customer.
    #[serde(default)]
    customer: String,
}

async fn join_queue(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, body) = read_request(request, gateway.max_body_bytes).await?;
    let JoinRequest { customer } = parse_json(&body)?;
    let customer = gateway.resolve_customer(&headers, customer, true)?;
    if customer.name.is_empty() || customer.name.len() > 255 {
        return Err(ApiError::InvalidBody(
            "customer must be 1 to 255 characters".into(),
        ));
    }
    let now = gateway.clock.now();
    gateway.rooms.observe_intake(&gateway.intake, now);
    let (drop, state) = room_drop(&gateway, &drop, now)?;
    let sold_out = match state {
        DropState::Prequeue | DropState::Live => false,
        DropState::SoldOut => true,
        other => return Err(ApiError::NotOpen(other)),
    };
    let answer = gateway
        .rooms
        .join(&drop, &Identity::of(&customer.name), sold_out, now)
        .await?;
    let mut response = queue_response(answer)?;
    if let Some(cookie) = customer.new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The drop named `drop`, if it has a waiting room, and its state now.
fn room_drop(
    gateway: &Gateway,
    drop: &str,
    now: floodgate_core::Timestamp,
) -> Result<(RoomDrop, DropState), ApiError> {
    let id = DropId::parse(drop).map_err(|_| ApiError::UnknownDrop)?;
    let (room, starts_at, ends_at, state) = gateway
        .intake
        .with_drop(&id, |ledger| {
            let spec = ledger.spec();
            let room = spec.waiting_room.clone();
            (room, spec.starts_at, spec.ends_at, ledger.state_at(now))
        })
        .ok_or(ApiError::UnknownDrop)?;
    if !room.enabled {
        return Err(ApiError::NoWaitingRoom);
    }
    let drop = RoomDrop {
        id,
        room,
        starts_at,
        ends_at,
    };
    Ok((drop, state))
}

/// The pre-queue's draw: its commitment before the start, its seed after, and how to check.
async fn fairness(
    State(gateway): State<Arc<Gateway>>,
    Path(drop): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = gateway.clock.now();
    let (drop, state) = room_drop(&gateway, &drop, now)?;
    let fairness = gateway
        .rooms
        .fairness(&drop, state == DropState::SoldOut, now)
        .await?;
    Ok(Json(json!({
        "drop": drop.id,
        "draw_at": drop.starts_at,
        "state": if fairness.seed.is_some() { "drawn" } else { "committed" },
        "commitment_sha256": hex::encode(&fairness.commitment),
        "seed": fairness.seed.map(|seed| hex::encode(&seed)),
        "entrants": fairness.entrants,
        "how_to_verify": "identity key = the first 8 bytes (big-endian) of SHA-256(customer); \
            draw key = the first 8 bytes (big-endian) of HMAC-SHA256(seed, identity key as 8 \
            big-endian bytes); the pre-queue is placed in ascending order of (draw key, identity \
            key). SHA-256(seed) equals the commitment published before the start.",
    })))
}

async fn queue_view(
    State(gateway): State<Arc<Gateway>>,
    Path(ticket): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let holder = gateway.token_holder(request.headers())?;
    let answer = poll(&gateway, &ticket, holder).await?;
    if wants_html(request.headers()) {
        return Ok(page(&gateway, &ticket, &answer).into_response());
    }
    queue_response(answer)
}

/// Where the holder of `ticket` stands now (a poll: it keeps the place); a ticket of another
/// `holder` than the request proves is refused.
async fn poll(
    gateway: &Gateway,
    ticket: &str,
    holder: Option<Identity>,
) -> Result<Answer, ApiError> {
    let now = gateway.clock.now();
    gateway.rooms.observe_intake(&gateway.intake, now);
    gateway
        .rooms
        .poll(ticket, holder, now, |drop_id| {
            let (drop, state) = room_drop(gateway, drop_id.as_str(), now).ok()?;
            Some((drop, state == DropState::SoldOut))
        })
        .await
}

/// Pushes the shopper's standing whenever it changes, until they are admitted or the drop sells
/// out; while the stream is open it counts as polling.
async fn queue_events(
    State(gateway): State<Arc<Gateway>>,
    Path(ticket): Path<String>,
    request: Request,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let holder = gateway.token_holder(request.headers())?;
    let first = poll(&gateway, &ticket, holder).await?;
    let stream = futures_util::stream::unfold(
        (gateway, ticket, Some(first), None::<Value>, false),
        move |(gateway, ticket, mut next, mut last, done)| async move {
            if done {
                return None;
            }
            loop {
                let answer = match next.take() {
                    Some(answer) => Ok(answer),
                    None => {
                        tokio::time::sleep(EVENT_TICK).await;
                        poll(&gateway, &ticket, holder).await
                    }
                };
                let (view, last_one) = match answer {
                    Ok(answer) => {
                        let last_one = matches!(answer, Answer::Admitted { .. } | Answer::SoldOut);
                        (answer_json(&answer), last_one)
                    }
                    Err(error) => (
                        json!({ "state": "invalid", "message": error.to_string() }),
                        true,
                    ),
                };
                if last.as_ref() != Some(&view) || last_one {
                    let event = Event::default().data(view.to_string());
                    last = Some(view);
                    return Some((Ok(event), (gateway, ticket, None, last, last_one)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The standing as the JSON API and the event stream show it.
fn answer_json(answer: &Answer) -> Value {
    match answer {
        Answer::Admitted { pass, expires_at } => {
            json!({ "state": "admitted", "pass": pass, "expires_at": expires_at })
        }
        Answer::Waiting {
            ticket,
            position,
            ahead,
            eta_seconds,
            poll_after_ms,
        } => json!({
            "state": "waiting", "ticket": ticket, "position": position, "ahead": ahead,
            "eta_seconds": eta_seconds, "poll_after_ms": poll_after_ms,
        }),
        Answer::Prequeue { ticket, starts_at } => {
            json!({ "state": "prequeue", "ticket": ticket, "starts_at": starts_at })
        }
        Answer::SoldOut => json!({ "state": "sold_out" }),
    }
}

/// The waiting-room page: no external assets; without JavaScript it refreshes itself, with it
/// the event stream keeps it live.
fn page(gateway: &Gateway, ticket: &str, answer: &Answer) -> Html<String> {
    let (headline, detail, progress, refresh_s) = match answer {
        Answer::Admitted { .. } => (
            "It's your turn".to_owned(),
            "You may go to checkout now.".to_owned(),
            100,
            None,
        ),
        Answer::Waiting {
            position,
            ahead,
            eta_seconds,
            poll_after_ms,
            ..
        } => (
            format!("You are number {} in line", ahead + 1),
            eta_seconds.map_or_else(
                || "Your estimated wait will appear shortly.".to_owned(),
                |eta| format!("Estimated wait: about {}.", human_duration(eta)),
            ),
            (100 - ahead * 100 / position.max(&1)).min(99),
            Some(poll_after_ms.div_ceil(1_000)),
        ),
        Answer::Prequeue { starts_at, .. } => (
            "You are in the pre-queue".to_owned(),
            format!(
                "At {} everyone here gets a place in a fair random draw.",
                starts_at.to_rfc3339()
            ),
            0,
            Some(5),
        ),
        Answer::SoldOut => (
            "Sold out".to_owned(),
            "Everything has been sold. Thank you for waiting.".to_owned(),
            100,
            None,
        ),
    };
    let refresh = refresh_s
        .map(|seconds| format!(r#"<meta http-equiv="refresh" content="{seconds}">"#))
        .unwrap_or_default();
    let colour = &gateway.room_colour;
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>Waiting room</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; padding: 2rem 1rem; color: #222; background: #fafafa; }}
main {{ max-width: 32rem; margin: 0 auto; text-align: center; }}
h1 {{ font-size: 1.6rem; }}
.bar {{ height: 0.8rem; background: #ddd; border-radius: 0.4rem; overflow: hidden; }}
.fill {{ height: 100%; width: {progress}%; background: {colour}; transition: width 0.5s; }}
</style></head>
<body><main>
<h1 id="headline">{headline}</h1>
<div class="bar"><div class="fill" id="fill"></div></div>
<p id="detail">{detail}</p>
<p><small>Keep this page open: it updates by itself.</small></p>
</main>
<script>
(function () {{
  if (!window.EventSource) return;
  var source = new EventSource("/api/queue/{ticket}/events");
  source.onmessage = function (message) {{
    var view = JSON.parse(message.data);
    var headline = document.getElementById("headline"), detail = document.getElementById("detail");
    var fill = document.getElementById("fill");
    if (view.state === "waiting") {{
      headline.textContent = "You are number " + (view.ahead + 1) + " in line";
      detail.textContent = view.eta_seconds == null ? "Your estimated wait will appear shortly."
        : "Estimated wait: about " + Math.max(1, Math.round(view.eta_seconds / 60)) + " min.";
      fill.style.width = Math.min(99, 100 - Math.floor(view.ahead * 100 / Math.max(1, view.position))) + "%";
    }} else if (view.state === "admitted") {{
      headline.textContent = "It's your turn"; detail.textContent = "You may go to checkout now.";
      fill.style.width = "100%"; source.close();
    }} else if (view.state === "sold_out") {{
      headline.textContent = "Sold out"; detail.textContent = "Everything has been sold. Thank you for waiting.";
      source.close();
    }}
  }};
}})();
</script>
</body></html>"#
    ))
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        0..=89 => "a minute".to_owned(),
        _ => format!("{} min", seconds.div_ceil(60)),
    }
}

fn queue_response(answer: Answer) -> Result<Response, ApiError> {
    let status = match answer {
        Answer::SoldOut => return Err(ApiError::Refused(Refusal::SoldOut)),
        Answer::Admitted { .. } => StatusCode::OK,
        Answer::Waiting { .. } | Answer::Prequeue { .. } => StatusCode::ACCEPTED,
    };
    Ok((status, Json(answer_json(&answer))).into_response())
}
