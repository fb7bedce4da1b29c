//! The input event contract and its decoder. Decoding is pure: bytes in, an [`Event`] or a reason
//! out. Every reason becomes the `clickpipe.error.message` of an `invalid_event` dead letter.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

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
/// mistyped required field, an unparsable timestamp, an optional field of the wrong type, a ZIP that
/// is not five digits. Unknown fields are ignored.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<Event, String> {
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
            return Err(format!("field `zip` must be a 5-digit string, got {zip:?}"));
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
    Ok(Event {
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
    })
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
            .map_err(|e| format!("field `{field}` is not an RFC 3339 time ({s:?}): {e}")),
        Value::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| {
                format!("field `{field}` must be integer epoch milliseconds, got {n}")
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn ok(json: &str) -> Event {
        decode(json.as_bytes(), MAX).expect("valid event")
    }

    fn err(bytes: &[u8]) -> String {
        decode(bytes, MAX).expect_err("invalid event")
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
        assert!(decode(&big, 10)
            .expect_err("too big")
            .contains("above the maximum"));
    }
}
