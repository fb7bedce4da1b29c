//! The input event contract and its decoder. Decoding is pure: bytes in, an [`Event`] or a reason
//! out. Every reason becomes the `clickpipe.error.message` of an `invalid_event` dead letter.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::config::{Config, FeaturesConfig, KafkaConfig};
use crate::error::excerpt;

/// What the decoder accepts: the payload size and the window of event times around "now".
///
/// The window keeps every time that reaches Redis (session state) and the feature computation
/// well inside the range both handle exactly: a clock set to year 9999 becomes an
/// `invalid_event`, not a session poisoned for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_bytes: usize,
    /// Oldest event accepted, in milliseconds before now.
    pub max_age_ms: i64,
    /// Newest event accepted, in milliseconds after now (clock skew of the producers).
    pub max_lead_ms: i64,
}

impl Limits {
    /// The limits of `kafka.max_payload_bytes`, `features.max_event_age_s` and
    /// `features.max_event_lead_s`.
    pub fn from_config(config: &Config) -> Self {
        Self::of(&config.kafka, &config.features)
    }

    /// [`Limits::from_config`] from the two sections it reads (for callers that hold the service's
    /// configuration rather than the pipeline's).
    pub fn of(kafka: &KafkaConfig, features: &FeaturesConfig) -> Self {
        Limits {
            max_bytes: kafka.max_payload_bytes,
            max_age_ms: secs_to_ms(features.max_event_age_s),
            max_lead_ms: secs_to_ms(features.max_event_lead_s),
        }
    }

    /// `max_bytes` with the default window: ten years back, one day ahead.
    pub fn new(max_bytes: usize) -> Self {
        Limits {
            max_bytes,
            max_age_ms: secs_to_ms(10 * 365 * 24 * 3600),
            max_lead_ms: secs_to_ms(24 * 3600),
        }
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.min(crate::config::MAX_WINDOW_S)).unwrap_or(i64::MAX / 1000) * 1000
}

/// A decoded clickstream event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id of the event; also the idempotency key of session state.
    pub event_id: String,
    /// The user the event belongs to.
    pub user_id: String,
    /// The session the event belongs to.
    pub session_id: String,
    /// Event time (from `timestamp`, or its alias `@timestamp`).
    pub timestamp: DateTime<Utc>,
    /// Event type, e.g. `page_view`, `add_to_cart`.
    pub event_type: String,
    /// Page URL or path.
    pub page: Option<String>,
    /// Referrer URL.
    pub referrer: Option<String>,
    /// 5-digit US ZIP code.
    pub zip: Option<String>,
    /// `mobile`, `desktop`, `tablet` or anything else (counted as `other`).
    pub device: Option<String>,
    /// Price of the item involved, if any.
    pub price: Option<f64>,
}

/// Decodes one record value into an [`Event`].
///
/// Rejects: payloads over `max_bytes`, invalid UTF-8, invalid JSON, a non-object, a missing or
/// mistyped required field, an unparsable timestamp or one outside the window of `limits` around
/// `now`, an optional field of the wrong type, a ZIP that is not five digits. Unknown fields are
/// ignored. Reasons quote offending values only in short excerpts.
pub fn decode(payload: &[u8], limits: &Limits, now: DateTime<Utc>) -> Result<Event, String> {
    let max_bytes = limits.max_bytes;
    if payload.len() > max_bytes {
        return Err(format!(
            "payload is {} bytes, above the maximum of {max_bytes}",
            payload.len()
        ));
    }
    let text =
        std::str::from_utf8(payload).map_err(|e| format!("payload is not valid UTF-8: {e}"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("payload is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err(format!(
            "payload is a JSON {}, expected an object",
            json_type(&value)
        ));
    };

    let timestamp = match (obj.get("timestamp"), obj.get("@timestamp")) {
        (Some(v), _) if !v.is_null() => parse_timestamp("timestamp", v)?,
        (_, Some(v)) if !v.is_null() => parse_timestamp("@timestamp", v)?,
        _ => return Err("required field `timestamp` (or `@timestamp`) is missing".into()),
    };
    let zip = optional_string(&obj, "zip")?;
    if let Some(zip) = &zip {
        if zip.len() != 5 || !zip.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "field `zip` must be a 5-digit string, got {:?}",
                excerpt(zip)
            ));
        }
    }
    let price = match obj.get("price") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => {
            return Err(format!(
                "field `price` must be a number, got a {}",
                json_type(other)
            ))
        }
    };
    let event = Event {
        event_id: required_string(&obj, "event_id")?,
        user_id: required_string(&obj, "user_id")?,
        session_id: required_string(&obj, "session_id")?,
        timestamp,
        event_type: required_string(&obj, "event_type")?,
        page: optional_string(&obj, "page")?,
        referrer: optional_string(&obj, "referrer")?,
        zip,
        device: optional_string(&obj, "device")?,
        price,
    };
    // The window comes last, so a record with several problems is named by its structural one.
    let (ts, now_ms) = (timestamp.timestamp_millis(), now.timestamp_millis());
    if ts < now_ms.saturating_sub(limits.max_age_ms) {
        return Err(format!(
            "event time {} is more than features.max_event_age_s ({} s) in the past",
            rfc3339(timestamp),
            limits.max_age_ms / 1000
        ));
    }
    if ts > now_ms.saturating_add(limits.max_lead_ms) {
        return Err(format!(
            "event time {} is more than features.max_event_lead_s ({} s) in the future",
            rfc3339(timestamp),
            limits.max_lead_ms / 1000
        ));
    }
    Ok(event)
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(format!("required field `{field}` is missing")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("required field `{field}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "field `{field}` must be a string, got a {}",
            json_type(other)
        )),
    }
}

fn optional_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "field `{field}` must be a string, got a {}",
            json_type(other)
        )),
    }
}

fn parse_timestamp(field: &str, value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                format!(
                    "field `{field}` is not an RFC 3339 time ({:?}): {e}",
                    excerpt(s)
                )
            }),
        Value::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| {
                format!(
                    "field `{field}` must be integer epoch milliseconds, got {}",
                    excerpt(&n.to_string())
                )
            })?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .ok_or_else(|| format!("field `{field}` is out of range: {ms}"))
        }
        other => Err(format!(
            "field `{field}` must be an RFC 3339 string or epoch milliseconds, got a {}",
            json_type(other)
        )),
    }
}

/// The JSON type name of a value, as error messages name it ("string", "array", …).
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Formats a time as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_780_000_000_000)
            .single()
            .expect("a time")
    }

    fn ok(json: &str) -> Event {
        decode(json.as_bytes(), &Limits::new(MAX), now()).expect("valid event")
    }

    fn err(bytes: &[u8]) -> String {
        decode(bytes, &Limits::new(MAX), now()).expect_err("invalid event")
    }

    fn event_at(ts: &str) -> String {
        format!(
            r#"{{"event_id":"e","user_id":"u","session_id":"s","timestamp":{ts},"event_type":"x"}}"#
        )
    }

    #[test]
    fn rejects_event_times_outside_the_window_around_now() {
        for far in [
            r#""9999-12-31T23:59:59Z""#,
            "253402214400000",
            "8210266876799999",
            "-8334601228800000",
            r#""1900-01-01T00:00:00Z""#,
        ] {
            let reason = err(event_at(far).as_bytes());
            assert!(reason.contains("features.max_event_"), "{far}: {reason}");
        }
        let ahead = now().timestamp_millis() + 23 * 3600 * 1000;
        ok(&event_at(&ahead.to_string()));
        let wide = Limits {
            max_age_ms: 60_000,
            ..Limits::new(MAX)
        };
        let old = now().timestamp_millis() - 120_000;
        assert!(decode(event_at(&old.to_string()).as_bytes(), &wide, now())
            .expect_err("too old")
            .contains("max_event_age_s (60 s)"));
    }

    #[test]
    fn reasons_quote_only_an_excerpt_of_a_huge_value() {
        let zip = "9".repeat(900_000);
        let reason = err(
            format!(r#"{{"event_id":"e","user_id":"u","session_id":"s","timestamp":1,"event_type":"x","zip":"{zip}"}}"#)
                .as_bytes(),
        );
        assert!(reason.len() < 300, "{} bytes", reason.len());
        let ts = "x".repeat(900_000);
        assert!(err(event_at(&format!("{ts:?}")).as_bytes()).len() < 400);
    }

    #[test]
    fn decodes_a_full_event_and_ignores_unknown_fields() {
        let e = ok(r#"{"event_id":"e1","user_id":"u1","session_id":"s1",
            "timestamp":"2026-03-08T09:30:00-05:00","event_type":"page_view","page":"/p",
            "referrer":"https://x","zip":"10001","device":"mobile","price":9.5,"extra":[1]}"#);
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.timestamp.to_rfc3339(), "2026-03-08T14:30:00+00:00");
        assert_eq!(e.zip.as_deref(), Some("10001"));
        assert_eq!(e.price, Some(9.5));
    }

    #[test]
    fn accepts_epoch_millis_and_the_at_timestamp_alias() {
        let e = ok(
            r#"{"event_id":"e","user_id":"u","session_id":"s","@timestamp":1767225600000,"event_type":"x"}"#,
        );
        assert_eq!(e.timestamp.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    }

    #[test]
    fn rejects_bad_input_with_a_reason_naming_the_problem() {
        assert!(err(b"\xff\xfe").contains("UTF-8"));
        assert!(err(b"{nope").contains("not valid JSON"));
        assert!(err(b"[1,2]").contains("array"));
        assert!(
            err(br#"{"user_id":"u","session_id":"s","timestamp":1,"event_type":"x"}"#)
                .contains("`event_id` is missing")
        );
        assert!(err(
            br#"{"event_id":5,"user_id":"u","session_id":"s","timestamp":1,"event_type":"x"}"#
        )
        .contains("`event_id` must be a string"));
        assert!(err(br#"{"event_id":"e","user_id":"u","session_id":"s","timestamp":"yesterday","event_type":"x"}"#)
            .contains("RFC 3339"));
        assert!(err(br#"{"event_id":"e","user_id":"u","session_id":"s","timestamp":1,"event_type":"x","zip":"123"}"#)
            .contains("5-digit"));
        assert!(err(br#"{"event_id":"e","user_id":"u","session_id":"s","timestamp":1,"event_type":"x","price":"9"}"#)
            .contains("`price` must be a number"));
        assert!(
            err(br#"{"event_id":"e","user_id":"u","session_id":"s","event_type":"x"}"#)
                .contains("timestamp")
        );
    }

    #[test]
    fn rejects_payloads_over_the_maximum() {
        let big = vec![b' '; 100];
        assert!(decode(&big, &Limits::new(10), now())
            .expect_err("too big")
            .contains("above the maximum"));
    }
}
