//! How a log line is written, as text or as one JSON object: the event's time, level, request
//! (the thread's current [`RequestLabel`](crate::RequestLabel), if it is serving one), target
//! and fields.
//!
//! The text is tracing-subscriber's full format, unstyled but for the level at a terminal,
//! with the request where that format puts spans: `request{request_id=… line=GET /x}:`. The
//! JSON is its JSON format with the request as the current span: `span.request_id`,
//! `span.line`. floodgate opens no spans, so these formatters write none.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::request_id::with_current_request;

/// One line of text per event.
pub struct TextLines;

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        writer.write_char(' ')?;
        write_level(&mut writer, *event.metadata().level())?;
        with_current_request(|request| match request {
            Some(request) => write!(
                writer,
                " request{{request_id={} line={}}}:",
                request.id(),
                request.line()
            ),
            None => Ok(()),
        })?;
        write!(writer, " {}: ", event.metadata().target())?;
        context.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The level padded to five characters, coloured as tracing-subscriber colours it when the
/// writer takes escapes.
fn write_level(writer: &mut Writer<'_>, level: Level) -> fmt::Result {
    let (text, colour) = match level {
        Level::TRACE => ("TRACE", "35"),
        Level::DEBUG => ("DEBUG", "34"),
        Level::INFO => (" INFO", "32"),
        Level::WARN => (" WARN", "33"),
        Level::ERROR => ("ERROR", "31"),
    };
    if writer.has_ansi_escapes() {
        write!(writer, "\x1b[{colour}m{text}\x1b[0m")
    } else {
        writer.write_str(text)
    }
}

/// Fields as `name=value` (an event's message alone), separated by spaces: the default text
/// without its styling, which paints each name and `=` even with an empty style.
pub fn text_fields() -> impl for<'writer> FormatFields<'writer> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| match field.name() {
        "message" => write!(writer, "{value:?}"),
        name => write!(writer, "{name}={value:?}"),
    })
    .delimited(" ")
}

/// One JSON object per event.
pub struct JsonLines;

#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: String,
    level: &'a str,
    fields: JsonFields,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    span: Option<JsonRequest<'a>>,
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    request_id: &'a str,
    line: String,
    name: &'static str,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields(Vec::new());
        event.record(&mut fields);
        let json = with_current_request(|request| {
            serde_json::to_string(&JsonLine {
                timestamp,
                level: event.metadata().level().as_str(),
                fields,
                target: event.metadata().target(),
                span: request.map(|request| JsonRequest {
                    request_id: request.id(),
                    line: request.line().to_string(),
                    name: "request",
                }),
            })
        })
        .map_err(|_| fmt::Error)?;
        writeln!(writer, "{json}")
    }
}

/// An event's fields as JSON values, in the order they were written: numbers and booleans as
/// themselves, the rest as text.
struct JsonFields(Vec<(&'static str, Value)>);

impl Serialize for JsonFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}").into()));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::http::Request;

    use super::*;
    use crate::request_id;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Logs a warning while serving a request with the id `lb-42`, then one outside any request,
    /// through `subscriber`.
    fn log_a_failed_request(subscriber: impl Subscriber + Send + Sync + 'static) {
        let mut request = Request::builder()
            .uri("/shop/rod?colour=red")
            .header("x-request-id", "lb-42")
            .body(axum::body::Body::empty())
            .unwrap();
        let (_, label) = request_id::tag(&mut request);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(request_id::labelled(label, async {
                tracing::warn!(route = "shop", code = 502, "origin failed");
            }));
            tracing::info!("outside");
        });
    }

    #[test]
    fn text_lines_read_as_the_full_format_with_the_request_as_its_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        log_a_failed_request(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .fmt_fields(text_fields())
                .event_format(TextLines)
                .finish(),
        );
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(
                r#"Z  WARN request{request_id=lb-42 line=GET /shop/rod}: floodgate_gateway::log_lines::tests: origin failed route="shop" code=502"#
            ),
            "{text}"
        );
        assert!(
            lines[1].ends_with("Z  INFO floodgate_gateway::log_lines::tests: outside"),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_request_as_their_span() {
        let captured = Captured::default();
        let writer = captured.clone();
        log_a_failed_request(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .event_format(JsonLines)
                .finish(),
        );
        let text = captured.text();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect(line))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            text.contains(r#""fields":{"message":"origin failed","route":"shop","code":502}"#),
            "fields in the order they were written: {text}"
        );
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["fields"]["message"], "origin failed");
        assert_eq!(lines[0]["fields"]["route"], "shop");
        assert_eq!(lines[0]["fields"]["code"], 502);
        assert_eq!(lines[0]["target"], "floodgate_gateway::log_lines::tests");
        assert_eq!(lines[0]["span"]["request_id"], "lb-42");
        assert_eq!(lines[0]["span"]["line"], "GET /shop/rod");
        assert!(lines[0]["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["fields"]["message"], "outside");
        assert!(lines[1].get("span").is_none());
    }
}
