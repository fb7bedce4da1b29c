//! Fuzz target: the event decoder, the feature computation and the session rule, from arbitrary
//! bytes.
//!
//! Every input is used twice:
//!
//! 1. Whole, as a record value, decoded with fixed [`Limits`] and a fixed "now" (so the seed
//!    corpus is plain events, valid or not).
//! 2. Split: a fixed-size [`Params`] header (read with `arbitrary`, little-endian, field by field:
//!    see fuzz/README.md) and the rest as the record value, decoded with limits and a "now" taken
//!    from the header.
//!
//! Every event that decodes is then enriched: a session snapshot from `advance` applied to a prior
//! state from the header, ZIP data built with `ZipInfo::from_fields` from arbitrary strings (the
//! event's own string fields, a time-zone name by index), and `compute`. `parse_snapshot` is fed
//! arbitrary strings (the event's fields, the input itself) and the snapshots `advance` made.
//!
//! Invariants (a broken one panics, which libFuzzer reports as a crash):
//! - nothing panics (overflow checks are on: cargo fuzz builds with debug assertions);
//! - every input is classified: an event, or a non-empty reason of at most
//!   [`MAX_MESSAGE_BYTES`] plus a little, and the same answer twice;
//! - a decoded event fits the limits: size, event time inside the window around now, required
//!   fields non-empty, a 5-digit ZIP, a finite price;
//! - `advance` follows the session rule, its snapshot round-trips through `parse_snapshot`;
//! - the features are consistent: clock ranges, one-hot columns, session columns.
//!
//! The session values are kept inside the domain the Redis script can hand back (integer strings
//! of at most 17 characters, i.e. |v| < 10^17); outside it `advance` and `compute` subtract
//! without checking (see bench/RESULTS.md, "Fuzzing"). The `unbounded-session` feature lifts
//! that bound (any i64 or u64), to show it.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, TimeZone, Utc};
use clickpipe_actors::error::{ErrorKind, Failure, Stage, MAX_MESSAGE_BYTES};
use clickpipe_actors::config::MAX_WINDOW_S;
use clickpipe_actors::event::{decode, Event, Limits};
use clickpipe_actors::features::{compute, Features, ZipInfo, DEVICES, EVENT_TYPES};
use clickpipe_actors::session::{advance, parse_snapshot, SessionSnapshot, SessionState};
use libfuzzer_sys::fuzz_target;

/// The longest reason accepted: the message bound plus the `… (N bytes)` a cut message ends with.
const REASON_MAX: usize = MAX_MESSAGE_BYTES + 32;

/// "Now" of the fixed decode: 2026-06-01T00:00:00Z.
const FIXED_NOW_MS: i64 = 1_780_272_000_000;

/// Payload bound of the fixed decode: inputs of the default `-max_len` (4 KiB) fall on both sides.
const FIXED_MAX_BYTES: usize = 2048;

/// The largest magnitude of a time or count the session script stores or returns (17 characters).
const SCRIPT_DOMAIN: i64 = 100_000_000_000_000_000;

/// The header of the split use of an input. Every field is a fixed-size integer, so the header is
/// always [`Params::SIZE`] bytes and seeds can be written by hand (fuzz/README.md).
#[derive(Debug, Arbitrary)]
struct Params {
    /// bit 0: limits from the header (else the fixed ones); bit 1: raw `Limits` fields (else
    /// `Limits::new` and config-like windows); bit 2: a prior session state; bit 3: prior times
    /// relative to the event time (else anywhere in the script's domain); bit 4: ZIP data present;
    /// bit 5: time zone by index into the tz database (else the event's `referrer`); bit 6: income
    /// from the event's `page` (else `income`).
    flags: u8,
    max_bytes: u32,
    max_age: i64,
    max_lead: i64,
    now_ms: i64,
    gap_s: u64,
    prior_count: u64,
    prior_first: i64,
    prior_last: i64,
    tz_index: u16,
    income: f64,
    default_income: f64,
}

impl Params {
    /// Bytes the header takes (1 + 4 + 8 × 7 + 2 + 8 × 2).
    const SIZE: usize = 79;

    fn limits(&self) -> Limits {
        if self.flags & 2 != 0 {
            return Limits {
                max_bytes: self.max_bytes as usize,
                max_age_ms: self.max_age,
                max_lead_ms: self.max_lead,
            };
        }
        // As `Limits::from_config` makes them: windows in whole seconds, 1 s to 100 years.
        let secs = |v: i64| (v.unsigned_abs() % MAX_WINDOW_S + 1) as i64 * 1000;
        Limits {
            max_age_ms: secs(self.max_age),
            max_lead_ms: secs(self.max_lead),
            ..Limits::new((self.max_bytes % 8192) as usize)
        }
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms).unwrap_or_else(fixed_now)
    }

    /// The session gap: 1 s to 100 years, as `features.session_gap_s` allows.
    fn gap_ms(&self) -> i64 {
        (self.gap_s % MAX_WINDOW_S + 1) as i64 * 1000
    }

    fn prior(&self, ts_ms: i64) -> Option<SessionState> {
        if self.flags & 4 == 0 {
            return None;
        }
        if cfg!(feature = "unbounded-session") {
            return Some(SessionState {
                count: self.prior_count,
                first_ms: self.prior_first,
                last_ms: self.prior_last,
            });
        }
        let count = self.prior_count % (SCRIPT_DOMAIN as u64 - 1) + 1;
        let (first_ms, last_ms) = if self.flags & 8 != 0 {
            // Near the event: the interesting side of the gap rule.
            let gap = self.gap_ms();
            let last = ts_ms + self.prior_last % (2 * gap + 1) - gap;
            let first = last - (self.prior_first % SCRIPT_DOMAIN).abs() / 1000;
            (first, last)
        } else {
            (
                self.prior_first % SCRIPT_DOMAIN,
                self.prior_last % SCRIPT_DOMAIN,
            )
        };
        Some(SessionState {
            count,
            first_ms,
            last_ms,
        })
    }

    fn zip(&self, event: &Event) -> Option<ZipInfo> {
        if self.flags & 16 == 0 {
            return None;
        }
        let income_text = self.income.to_string();
        let income = if self.flags & 64 != 0 {
            event.page.as_deref()
        } else {
            Some(income_text.as_str())
        };
        let tz_name;
        let tz = if self.flags & 32 != 0 {
            let variants = &chrono_tz::TZ_VARIANTS;
            tz_name = format!(
                " {} ",
                variants[self.tz_index as usize % variants.len()].name()
            );
            Some(tz_name.as_str())
        } else {
            event.referrer.as_deref()
        };
        let info = ZipInfo::from_fields(income, tz);
        if let Some(v) = info.median_income {
            assert!(v.is_finite(), "income {v} is not finite");
        }
        if self.flags & 32 != 0 {
            assert!(info.timezone.is_some(), "a tz database name parses: {tz:?}");
        }
        Some(info)
    }
}

fn fixed_now() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(FIXED_NOW_MS)
        .single()
        .expect("a valid instant")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let params = Params::arbitrary(&mut u).expect("integers never fail");
    let rest = data.get(Params::SIZE..).unwrap_or_default();
    assert_eq!(u.len(), rest.len(), "the header is Params::SIZE bytes");

    let fixed = Limits::new(FIXED_MAX_BYTES);
    if let Some(event) = classify(data, &fixed, fixed_now()) {
        enrich(&event, &params);
    }
    let (limits, now) = if params.flags & 1 != 0 {
        (params.limits(), params.now())
    } else {
        (fixed, fixed_now())
    };
    if let Some(event) = classify(rest, &limits, now) {
        enrich(&event, &params);
    }

    // parse_snapshot on arbitrary text: the input itself, and its halves.
    let text = String::from_utf8_lossy(data);
    check_parsed(&text);
    if let Some(head) = text.get(..text.len() / 2) {
        check_parsed(head);
    }
});

/// Decodes `payload` and checks the answer; returns the event, if any.
fn classify(payload: &[u8], limits: &Limits, now: DateTime<Utc>) -> Option<Event> {
    let answer = decode(payload, limits, now);
    assert_eq!(
        answer,
        decode(payload, limits, now),
        "decode is deterministic"
    );
    match answer {
        Err(reason) => {
            assert!(!reason.is_empty(), "an empty reason");
            assert!(
                reason.len() <= REASON_MAX,
                "a reason of {} bytes: {}",
                reason.len(),
                reason
            );
            let failure = Failure::new(ErrorKind::InvalidEvent, Stage::Decode, reason);
            assert!(failure.message().len() <= REASON_MAX);
            None
        }
        Ok(event) => {
            assert!(payload.len() <= limits.max_bytes, "over the size limit");
            let (ts, now_ms) = (event.timestamp.timestamp_millis(), now.timestamp_millis());
            assert!(
                ts >= now_ms.saturating_sub(limits.max_age_ms)
                    && ts <= now_ms.saturating_add(limits.max_lead_ms),
                "event time {ts} outside the window around {now_ms} ({limits:?})"
            );
            for (name, v) in [
                ("event_id", &event.event_id),
                ("user_id", &event.user_id),
                ("session_id", &event.session_id),
                ("event_type", &event.event_type),
            ] {
                assert!(!v.is_empty(), "empty {name}");
            }
            if let Some(zip) = &event.zip {
                assert!(zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit()));
            }
            if let Some(price) = event.price {
                assert!(price.is_finite(), "price {price}");
            }
            Some(event)
        }
    }
}

/// Runs the session rule and the feature computation for `event`, checking both.
fn enrich(event: &Event, params: &Params) {
    let ts = event.timestamp.timestamp_millis();
    let gap = params.gap_ms();
    let prior = params.prior(ts);
    let (state, snap) = advance(prior, ts, gap);
    check_advance(prior, ts, gap, state, snap);
    // The same event again, on the state it left: the session goes on (gap 0).
    let (state2, snap2) = advance(Some(state), ts, gap);
    check_advance(Some(state), ts, gap, state2, snap2);

    let text = format_snapshot(&snap);
    assert_eq!(parse_snapshot(&text), Some(snap), "round trip of {text}");

    let zip = params.zip(event);
    for s in [&snap, &snap2] {
        check_features(event, zip.as_ref(), s, params.default_income);
        check_features(event, None, s, params.default_income);
    }
    for field in [
        Some(&event.event_type),
        event.page.as_ref(),
        event.referrer.as_ref(),
        event.device.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(s) = check_parsed(field) {
            check_features(event, zip.as_ref(), &s, params.default_income);
        }
    }
}

fn check_advance(
    prior: Option<SessionState>,
    ts: i64,
    gap: i64,
    state: SessionState,
    snap: SessionSnapshot,
) {
    match prior {
        Some(p) if ts - p.last_ms <= gap => {
            assert_eq!(snap.count, p.count + 1);
            assert_eq!(snap.prev_ms, Some(p.last_ms));
            assert_eq!(snap.first_ms, p.first_ms.min(ts));
            assert_eq!(snap.last_ms, p.last_ms.max(ts));
        }
        _ => assert_eq!(
            snap,
            SessionSnapshot {
                count: 1,
                prev_ms: None,
                first_ms: ts,
                last_ms: ts
            }
        ),
    }
    assert_eq!(
        (state.count, state.first_ms, state.last_ms),
        (snap.count, snap.first_ms, snap.last_ms)
    );
    assert!(
        snap.first_ms <= ts && ts <= snap.last_ms,
        "{snap:?} around {ts}"
    );
}

/// The `count|prev|first|last` string the session script returns.
fn format_snapshot(s: &SessionSnapshot) -> String {
    let prev = s.prev_ms.map(|p| p.to_string()).unwrap_or_default();
    format!("{}|{prev}|{}|{}", s.count, s.first_ms, s.last_ms)
}

/// `parse_snapshot` on arbitrary text: no panic; what parses round-trips. Returns the snapshot when
/// it lies in the domain the session script can answer.
fn check_parsed(text: &str) -> Option<SessionSnapshot> {
    let s = parse_snapshot(text)?;
    assert_eq!(parse_snapshot(&format_snapshot(&s)), Some(s), "{text:?}");
    let in_domain =
        |v: i64| cfg!(feature = "unbounded-session") || v.unsigned_abs() < SCRIPT_DOMAIN as u64;
    ((s.count < SCRIPT_DOMAIN as u64 || cfg!(feature = "unbounded-session"))
        && s.prev_ms.is_none_or(in_domain)
        && in_domain(s.first_ms)
        && in_domain(s.last_ms))
    .then_some(s)
}

fn check_features(event: &Event, zip: Option<&ZipInfo>, snap: &SessionSnapshot, default: f64) {
    let f: Features = compute(event, zip, snap, default);
    assert!(f.hour_of_day < 24 && f.day_of_week < 7, "{f:?}");
    assert_eq!(f.is_weekend, f.day_of_week >= 5);
    let tz = zip.and_then(|z| z.timezone);
    assert_eq!(f.local_time_known, tz.is_some());
    let income = zip.and_then(|z| z.median_income);
    assert_eq!(f.zip_known, income.is_some());
    assert_eq!(
        f.zip_median_income.to_bits(),
        income.unwrap_or(default).to_bits()
    );
    assert_eq!(f.session_event_count, snap.count);
    assert_eq!(f.seconds_since_prev_event.is_some(), snap.prev_ms.is_some());
    if let Some(gap) = f.seconds_since_prev_event {
        assert!(gap >= 0.0 && gap.is_finite(), "{gap}");
    }
    assert!(f.session_duration_s >= 0.0 && f.session_duration_s.is_finite());
    let types = [
        f.event_type_page_view,
        f.event_type_product_view,
        f.event_type_search,
        f.event_type_add_to_cart,
        f.event_type_remove_from_cart,
        f.event_type_checkout,
        f.event_type_purchase,
        f.event_type_other,
    ];
    assert_eq!(types.iter().map(|&v| u32::from(v)).sum::<u32>(), 1);
    let known = EVENT_TYPES.iter().position(|t| *t == event.event_type);
    assert_eq!(types[known.unwrap_or(7)], 1, "{}", event.event_type);
    let devices = [
        f.device_mobile,
        f.device_desktop,
        f.device_tablet,
        f.device_other,
    ];
    assert_eq!(devices.iter().map(|&v| u32::from(v)).sum::<u32>(), 1);
    let dev = event.device.as_deref().unwrap_or("");
    let known = DEVICES.iter().position(|d| *d == dev);
    assert_eq!(devices[known.unwrap_or(3)], 1);
    let json = serde_json::to_value(&f).expect("features serialise");
    assert!(json.is_object());
}
