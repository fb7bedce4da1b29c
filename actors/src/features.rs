//! Model-ready features of one event. Pure: the event, what Redis knew about its ZIP and its
//! session go in; a [`Features`] comes out. No I/O, so every rule is unit-tested here.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::event::Event;
use crate::session::SessionSnapshot;

/// What Redis holds about a ZIP (`zip:{zip}` hash).
#[derive(Debug, Clone, PartialEq)]
pub struct ZipInfo {
    /// `median_income`, when present and numeric.
    pub median_income: Option<f64>,
    /// `timezone`, when present and a known IANA name.
    pub timezone: Option<Tz>,
}

impl ZipInfo {
    /// Builds from the raw hash fields; unparsable values count as absent.
    pub fn from_fields(median_income: Option<&str>, timezone: Option<&str>) -> ZipInfo {
        ZipInfo {
            median_income: median_income
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite()),
            timezone: timezone.and_then(|v| v.trim().parse::<Tz>().ok()),
        }
    }
}

/// Event types with a one-hot column; anything else is `event_type_other`.
pub const EVENT_TYPES: [&str; 7] = [
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
];

/// Devices with a one-hot column; anything else, or none, is `device_other`.
pub const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];

/// The features of one event, serialised by these exact names into the model request and the
/// output record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Features {
    /// Hour of day 0–23 in the ZIP's local time, or UTC when unknown.
    pub hour_of_day: u32,
    /// Day of week, 0 = Monday … 6 = Sunday, same clock as `hour_of_day`.
    pub day_of_week: u32,
    /// Saturday or Sunday.
    pub is_weekend: bool,
    /// Whether the ZIP's time zone was known (else the clock is UTC).
    pub local_time_known: bool,
    /// Median household income of the ZIP, or the configured default.
    pub zip_median_income: f64,
    /// Whether the ZIP was found with a median income.
    pub zip_known: bool,
    /// 1-based index of the event in its session.
    pub session_event_count: u64,
    /// Seconds since the previous event of the session (null for the first; 0 when out of order).
    pub seconds_since_prev_event: Option<f64>,
    /// Seconds from the session's first to its latest event.
    pub session_duration_s: f64,
    /// One-hot `event_type`.
    pub event_type_page_view: u8,
    /// One-hot `event_type`.
    pub event_type_product_view: u8,
    /// One-hot `event_type`.
    pub event_type_search: u8,
    /// One-hot `event_type`.
    pub event_type_add_to_cart: u8,
    /// One-hot `event_type`.
    pub event_type_remove_from_cart: u8,
    /// One-hot `event_type`.
    pub event_type_checkout: u8,
    /// One-hot `event_type`.
    pub event_type_purchase: u8,
    /// One-hot `event_type`: none of the above.
    pub event_type_other: u8,
    /// One-hot `device`.
    pub device_mobile: u8,
    /// One-hot `device`.
    pub device_desktop: u8,
    /// One-hot `device`.
    pub device_tablet: u8,
    /// One-hot `device`: none of the above, or absent.
    pub device_other: u8,
}

/// The features of one record: the built-in ones, or those of a declared feature set
/// (`features.set`). Serialised as the bare object of features either way.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FeatureValues {
    /// Without `features.set`: today's features.
    Builtin(Features),
    /// A declared set's values, in model-instance order.
    Declared(crate::feature_set::engine::Computed),
}

/// Computes the features of `event`.
pub fn compute(
    event: &Event,
    zip: Option<&ZipInfo>,
    session: &SessionSnapshot,
    default_income: f64,
) -> Features {
    let tz = zip.and_then(|z| z.timezone);
    let (hour, weekday) = local_clock(event.timestamp, tz);
    let income = zip.and_then(|z| z.median_income);
    let ts = event.timestamp.timestamp_millis();
    let et = event.event_type.as_str();
    let dev = event.device.as_deref().unwrap_or("");
    let hot = |v: bool| u8::from(v);
    let known_type = EVENT_TYPES.contains(&et);
    let known_dev = DEVICES.contains(&dev);
    Features {
        hour_of_day: hour,
        day_of_week: weekday,
        is_weekend: weekday >= 5,
        local_time_known: tz.is_some(),
        zip_median_income: income.unwrap_or(default_income),
        zip_known: income.is_some(),
        session_event_count: session.count,
        // Saturating: a snapshot is read back from Redis, and no stored value may panic here.
        seconds_since_prev_event: session
            .prev_ms
            .map(|p| ts.saturating_sub(p).max(0) as f64 / 1000.0),
        session_duration_s: session.last_ms.saturating_sub(session.first_ms).max(0) as f64 / 1000.0,
        event_type_page_view: hot(et == "page_view"),
        event_type_product_view: hot(et == "product_view"),
        event_type_search: hot(et == "search"),
        event_type_add_to_cart: hot(et == "add_to_cart"),
        event_type_remove_from_cart: hot(et == "remove_from_cart"),
        event_type_checkout: hot(et == "checkout"),
        event_type_purchase: hot(et == "purchase"),
        event_type_other: hot(!known_type),
        device_mobile: hot(dev == "mobile"),
        device_desktop: hot(dev == "desktop"),
        device_tablet: hot(dev == "tablet"),
        device_other: hot(!known_dev),
    }
}

/// Hour of day and weekday (0 = Monday) of `t` in `tz`, or in UTC without one.
fn local_clock(t: DateTime<Utc>, tz: Option<Tz>) -> (u32, u32) {
    match tz {
        Some(tz) => {
            let local = t.with_timezone(&tz);
            (local.hour(), local.weekday().num_days_from_monday())
        }
        None => (t.hour(), t.weekday().num_days_from_monday()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{advance, SessionSnapshot};
    use chrono::TimeZone;

    fn event(ts: &str, event_type: &str, device: Option<&str>) -> Event {
        Event {
            event_id: "e".into(),
            user_id: "u".into(),
            session_id: "s".into(),
            timestamp: DateTime::parse_from_rfc3339(ts)
                .expect("ts")
                .with_timezone(&Utc),
            event_type: event_type.into(),
            page: None,
            referrer: None,
            zip: Some("10001".into()),
            device: device.map(str::to_string),
            price: None,
        }
    }

    fn first(ts_ms: i64) -> SessionSnapshot {
        advance(None, ts_ms, 1_800_000).1
    }

    fn ny() -> ZipInfo {
        ZipInfo::from_fields(Some("72000"), Some("America/New_York"))
    }

    #[test]
    fn local_hour_follows_the_zip_time_zone() {
        // 2026-06-05 is a Friday; 03:30 UTC is 23:30 Thursday in New York (EDT, UTC-4).
        let e = event("2026-06-05T03:30:00Z", "page_view", Some("mobile"));
        let f = compute(&e, Some(&ny()), &first(0), 50_000.0);
        assert_eq!((f.hour_of_day, f.day_of_week), (23, 3));
        assert!(f.local_time_known && f.zip_known && !f.is_weekend);
        assert_eq!(f.zip_median_income, 72_000.0);
        assert_eq!((f.event_type_page_view, f.event_type_other), (1, 0));
        assert_eq!((f.device_mobile, f.device_other), (1, 0));
    }

    #[test]
    fn extreme_session_snapshots_saturate_instead_of_overflowing() {
        let e = event("2026-06-05T03:30:00Z", "page_view", None);
        let snap = SessionSnapshot {
            count: 1,
            prev_ms: Some(i64::MIN),
            first_ms: i64::MIN,
            last_ms: i64::MAX,
        };
        let f = compute(&e, None, &snap, 0.0);
        assert!(f.seconds_since_prev_event.is_some_and(f64::is_finite));
        assert!(f.session_duration_s.is_finite());
    }

    #[test]
    fn dst_transitions_shift_the_local_hour() {
        // US DST 2026: starts 2026-03-08 07:00 UTC, ends 2026-11-01 06:00 UTC.
        let before = event("2026-03-08T06:59:00Z", "x", None);
        let after = event("2026-03-08T07:01:00Z", "x", None);
        let z = ny();
        assert_eq!(compute(&before, Some(&z), &first(0), 0.0).hour_of_day, 1); // 01:59 EST
        assert_eq!(compute(&after, Some(&z), &first(0), 0.0).hour_of_day, 3); // 03:01 EDT
        let fall_before = event("2026-11-01T05:30:00Z", "x", None); // 01:30 EDT
        let fall_after = event("2026-11-01T06:30:00Z", "x", None); // 01:30 EST
        assert_eq!(
            compute(&fall_before, Some(&z), &first(0), 0.0).hour_of_day,
            1
        );
        assert_eq!(
            compute(&fall_after, Some(&z), &first(0), 0.0).hour_of_day,
            1
        );
    }

    #[test]
    fn unknown_zip_or_time_zone_falls_back_to_utc_and_the_default_income() {
        let e = event("2026-06-06T12:00:00Z", "checkout", Some("watch"));
        let f = compute(&e, None, &first(0), 61_000.0);
        assert_eq!((f.hour_of_day, f.day_of_week, f.is_weekend), (12, 5, true));
        assert!(!f.local_time_known && !f.zip_known);
        assert_eq!(f.zip_median_income, 61_000.0);
        assert_eq!((f.device_other, f.event_type_checkout), (1, 1));

        let bad_tz = ZipInfo::from_fields(Some("not a number"), Some("Mars/Olympus_Mons"));
        assert_eq!(
            bad_tz,
            ZipInfo {
                median_income: None,
                timezone: None
            }
        );
        let f = compute(&e, Some(&bad_tz), &first(0), 61_000.0);
        assert!(!f.local_time_known && !f.zip_known);
    }

    #[test]
    fn session_features_come_from_the_snapshot() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 6, 1, 10, 0, 0)
            .single()
            .expect("t0")
            .timestamp_millis();
        let (s1, _) = advance(None, t0, 1_800_000);
        let (s2, snap) = advance(Some(s1), t0 + 90_000, 1_800_000);
        let mut e = event("2026-06-01T10:01:30Z", "add_to_cart", None);
        let f = compute(&e, None, &snap, 0.0);
        assert_eq!(f.session_event_count, 2);
        assert_eq!(f.seconds_since_prev_event, Some(90.0));
        assert_eq!(f.session_duration_s, 90.0);
        // An event 30 s older than the latest arrives late: gap 0, duration unchanged.
        e.timestamp = DateTime::parse_from_rfc3339("2026-06-01T10:01:00Z")
            .expect("ts")
            .with_timezone(&Utc);
        let (_, late) = advance(Some(s2), e.timestamp.timestamp_millis(), 1_800_000);
        let f = compute(&e, None, &late, 0.0);
        assert_eq!(
            (
                f.session_event_count,
                f.seconds_since_prev_event,
                f.session_duration_s
            ),
            (3, Some(0.0), 90.0)
        );
        let first_f = compute(&e, None, &first(t0), 0.0);
        assert_eq!(first_f.seconds_since_prev_event, None);
    }

    #[test]
    fn serialises_every_feature_by_its_contract_name() {
        let f = compute(
            &event("2026-06-05T03:30:00Z", "page_view", None),
            None,
            &first(0),
            1.0,
        );
        let v = serde_json::to_value(&f).expect("json");
        for name in [
            "hour_of_day",
            "day_of_week",
            "is_weekend",
            "local_time_known",
            "zip_median_income",
            "zip_known",
            "session_event_count",
            "seconds_since_prev_event",
            "session_duration_s",
            "event_type_page_view",
            "event_type_other",
            "device_mobile",
            "device_other",
        ] {
            assert!(v.get(name).is_some(), "missing {name}");
        }
    }
}
