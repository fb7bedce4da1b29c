//! The [`Generator`]: pure (a seeded RNG in, event payloads out), so it can be unit-tested and
//! reused by benchmarks; and [`poison`] records for the dead-letter path. The traffic's shape is
//! in `traffic.rs`.

use std::collections::HashSet;

use crate::service::config::LoadgenConfig;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clickpipe_actors::features::ZipInfo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::traffic::{
    cents, gap_ms, next_kind, pick, session_length, session_start_ms, sku_price, unknown_zip, Kind,
    DEVICES, ENTRY_REFERRERS, PAGES, PRODUCTS, SEARCH_TERMS, SITE, USERS,
};
use super::zips::ZipRow;

#[derive(Debug, Clone)]
enum SessionZip {
    /// Index into the reference rows.
    Known(usize),
    /// A valid ZIP that is not in the reference data.
    Unknown(String),
    /// No ZIP at all.
    Missing,
}

/// One open synthetic session.
#[derive(Debug)]
struct Session {
    id: String,
    user_id: String,
    zip: SessionZip,
    device: &'static str,
    /// Events still to emit.
    remaining: u32,
    /// Event time of the next event, epoch milliseconds.
    next_ms: i64,
    prev: Option<Kind>,
    prev_page: Option<String>,
    entry_referrer: Option<&'static str>,
    /// Last product looked at.
    product: Option<u32>,
    cart_items: u32,
    cart_total: f64,
}

/// The JSON of one event, per the input contract (`clickpipe_actors::event`).
#[derive(Serialize)]
struct EventJson<'a> {
    event_id: &'a str,
    user_id: &'a str,
    session_id: &'a str,
    timestamp: String,
    event_type: &'a str,
    page: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zip: Option<&'a str>,
    device: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f64>,
}

/// A record the pipeline must dead-letter as `invalid_event` (`loadgen.poison_ratio`), in one
/// of several shapes by `seq`. Each holds `"event_id":"{event_id}"` verbatim, so a harness can
/// tell which input it was from its bytes alone.
pub fn poison(seq: u64, event_id: &str, session: &str) -> Vec<u8> {
    let head = format!(r#"{{"event_id":"{event_id}","user_id":"u","session_id":"{session}""#);
    match seq % 6 {
        // Not JSON.
        0 => format!(r#"{head},"timestamp": nope"#).into_bytes(),
        // An event time in year 9999.
        1 => format!(r#"{head},"timestamp":"9999-12-31T23:59:59Z","event_type":"page_view"}}"#)
            .into_bytes(),
        // A required field missing.
        2 => format!(r#"{{"event_id":"{event_id}","timestamp":"2026-01-01T00:00:00Z"}}"#)
            .into_bytes(),
        // Not UTF-8.
        3 => {
            let mut b =
                format!(r#"{head},"timestamp":"2026-01-01T00:00:00Z","page":""#).into_bytes();
            b.extend_from_slice(b"\xff\xfe\"}");
            b
        }
        // A long bad ZIP.
        4 => format!(
            r#"{head},"timestamp":"2026-01-01T00:00:00Z","event_type":"x","zip":"{}"}}"#,
            "9".repeat(4096)
        )
        .into_bytes(),
        // A mistyped field.
        _ => format!(r#"{head},"timestamp":1767225600000,"event_type":["x"]}}"#).into_bytes(),
    }
}

/// A pure, seedable generator of realistic clickstream events.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    run_id: String,
    zips: Vec<ZipRow>,
    /// Time zones of `zips`, same order.
    zones: Vec<ZipInfo>,
    known: HashSet<String>,
    unknown_zip_ratio: f64,
    missing_zip_ratio: f64,
    poison_ratio: f64,
    sessions: Vec<Session>,
    concurrent: usize,
    next_event: u64,
    next_session: u64,
    /// Simulated days are counted back from this date.
    today: NaiveDate,
    now_ms: i64,
}

impl Generator {
    /// A generator drawing ZIPs from `zips` with the ratios and session count of `cfg`. The same
    /// `seed` gives the same stream apart from the run id; `None` seeds from the OS. With no ZIP
    /// rows, sessions that would get a known ZIP get an unknown one.
    pub fn new(zips: Vec<ZipRow>, cfg: &LoadgenConfig, seed: Option<u64>) -> Generator {
        let rng = StdRng::seed_from_u64(seed.unwrap_or_else(rand::random));
        let run_id = format!("r{:016x}", rand::random::<u64>());
        let zones = zips
            .iter()
            .map(|z| ZipInfo::from_fields(None, z.timezone.as_deref()))
            .collect();
        let known = zips.iter().map(|z| z.zip.clone()).collect();
        let now = Utc::now();
        Generator {
            rng,
            run_id,
            zips,
            zones,
            known,
            unknown_zip_ratio: cfg.unknown_zip_ratio.clamp(0.0, 1.0),
            missing_zip_ratio: cfg.missing_zip_ratio.clamp(0.0, 1.0),
            poison_ratio: cfg.poison_ratio.clamp(0.0, 1.0),
            sessions: Vec::new(),
            concurrent: cfg.concurrent_sessions.max(1),
            next_event: 0,
            next_session: 0,
            today: now.date_naive(),
            now_ms: now.timestamp_millis(),
        }
    }

    /// The id of this run: every `event_id` is `{run_id}-{n}`.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The next event: `(key, payload, event_id)`, the key being the session id.
    pub fn next_event(&mut self) -> (String, Vec<u8>, String) {
        while self.sessions.len() < self.concurrent {
            let s = self.new_session();
            self.sessions.push(s);
        }
        let idx = self.rng.random_range(0..self.sessions.len());
        let seq = self.next_event;
        self.next_event += 1;
        let event_id = format!("{}-{seq}", self.run_id);
        if self.poison_ratio > 0.0 && self.rng.random_bool(self.poison_ratio) {
            let key = self.sessions[idx].id.clone();
            let payload = poison(seq, &event_id, &key);
            return (key, payload, event_id);
        }

        let Generator {
            rng,
            sessions,
            zips,
            ..
        } = self;
        let s = &mut sessions[idx];
        let kind = next_kind(rng, s.prev, s.cart_items);
        let (page, price) = match kind {
            Kind::PageView => {
                let page = if s.prev.is_none() && rng.random_bool(0.5) {
                    "/".to_string()
                } else {
                    PAGES[pick(rng, &PAGES.map(|p| p.1))].0.to_string()
                };
                (page, None)
            }
            Kind::ProductView => {
                let sku = rng.random_range(1..=PRODUCTS);
                s.product = Some(sku);
                (format!("/product/{sku}"), Some(sku_price(sku)))
            }
            Kind::Search => {
                let term = SEARCH_TERMS[rng.random_range(0..SEARCH_TERMS.len())];
                (format!("/search?q={term}"), None)
            }
            Kind::AddToCart => {
                let sku = match s.product {
                    Some(sku) if rng.random_bool(0.9) => sku,
                    _ => rng.random_range(1..=PRODUCTS),
                };
                let price = sku_price(sku);
                s.cart_items += 1;
                s.cart_total = cents(s.cart_total + price);
                (format!("/product/{sku}"), Some(price))
            }
            Kind::RemoveFromCart => {
                let price = if s.cart_items > 0 {
                    cents(s.cart_total / f64::from(s.cart_items))
                } else {
                    sku_price(rng.random_range(1..=PRODUCTS))
                };
                s.cart_items = s.cart_items.saturating_sub(1);
                s.cart_total = if s.cart_items == 0 {
                    0.0
                } else {
                    cents((s.cart_total - price).max(0.0))
                };
                ("/cart".to_string(), Some(price))
            }
            Kind::Checkout => ("/checkout".to_string(), Some(s.cart_total)),
            Kind::Purchase => {
                let total = s.cart_total;
                s.cart_items = 0;
                s.cart_total = 0.0;
                ("/checkout/confirmation".to_string(), Some(total))
            }
        };
        let referrer = match &s.prev_page {
            None => s.entry_referrer.map(str::to_string),
            Some(prev) if rng.random_bool(0.85) => Some(format!("{SITE}{prev}")),
            Some(_) => None,
        };
        let zip = match &s.zip {
            SessionZip::Known(i) => zips.get(*i).map(|z| z.zip.as_str()),
            SessionZip::Unknown(z) => Some(z.as_str()),
            SessionZip::Missing => None,
        };
        let timestamp = DateTime::<Utc>::from_timestamp_millis(s.next_ms)
            .unwrap_or(DateTime::UNIX_EPOCH)
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let json = EventJson {
            event_id: &event_id,
            user_id: &s.user_id,
            session_id: &s.id,
            timestamp,
            event_type: kind.as_str(),
            page: &page,
            referrer: referrer.as_deref(),
            zip,
            device: s.device,
            price,
        };
        // Serialising plain strings and finite numbers cannot fail.
        let payload = serde_json::to_vec(&json).unwrap_or_default();
        let key = s.id.clone();

        s.prev = Some(kind);
        s.prev_page = Some(page);
        s.remaining = s.remaining.saturating_sub(1);
        s.next_ms += gap_ms(rng);
        if s.remaining == 0 {
            let fresh = self.new_session();
            self.sessions[idx] = fresh;
        }
        (key, payload, event_id)
    }

    fn new_session(&mut self) -> Session {
        let seq = self.next_session;
        self.next_session += 1;
        let rng = &mut self.rng;
        let u: f64 = rng.random();
        let zip = if u < self.missing_zip_ratio {
            SessionZip::Missing
        } else if u < self.missing_zip_ratio + self.unknown_zip_ratio || self.zips.is_empty() {
            unknown_zip(rng, &self.known)
                .map(SessionZip::Unknown)
                .unwrap_or(SessionZip::Missing)
        } else {
            SessionZip::Known(rng.random_range(0..self.zips.len()))
        };
        let zone = match zip {
            SessionZip::Known(i) => self.zones.get(i).cloned(),
            _ => None,
        };
        let start_ms = session_start_ms(rng, self.today, self.now_ms, zone.as_ref());
        let device = DEVICES[pick(rng, &DEVICES.map(|d| d.1))].0;
        let entry_referrer = ENTRY_REFERRERS[pick(rng, &ENTRY_REFERRERS.map(|r| r.1))].0;
        Session {
            id: format!("{}-s{seq}", self.run_id),
            user_id: format!("u{:07}", rng.random_range(0..USERS)),
            zip,
            device,
            remaining: session_length(rng),
            next_ms: start_ms,
            prev: None,
            prev_page: None,
            entry_referrer,
            product: None,
            cart_items: 0,
            cart_total: 0.0,
        }
    }
}

/// The sequence number `n` of an `event_id` `{run_id}-{n}` of this run, or `None` for another
/// run's event.
pub fn sequence_of(run_id: &str, event_id: &str) -> Option<u64> {
    event_id
        .strip_prefix(run_id)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::super::collector::event_id_of;
    use super::super::zips::fixtures::zips;
    use super::super::zips::load_zips;
    use super::*;
    use clickpipe_actors::event::{decode, Limits};
    use clickpipe_actors::features::compute;
    use clickpipe_actors::session::advance;
    use std::collections::HashMap;
    use std::path::Path;

    fn cfg(unknown: f64, missing: f64, sessions: usize) -> LoadgenConfig {
        LoadgenConfig {
            zip_csv: String::new(),
            unknown_zip_ratio: unknown,
            missing_zip_ratio: missing,
            concurrent_sessions: sessions,
            poison_ratio: 0.0,
        }
    }

    fn events(n: usize, seed: u64, unknown: f64, missing: f64) -> Vec<(String, Vec<u8>, String)> {
        let mut g = Generator::new(zips(), &cfg(unknown, missing, 50), Some(seed));
        (0..n).map(|_| g.next_event()).collect()
    }

    #[test]
    fn poison_records_are_all_invalid_events_that_name_their_id() {
        for seq in 0..12 {
            let p = poison(seq, "run-7", "s1");
            assert!(
                decode(&p, &Limits::new(1 << 20), Utc::now()).is_err(),
                "{seq}: {}",
                String::from_utf8_lossy(&p)
            );
            assert!(p
                .windows(br#""event_id":"run-7""#.len())
                .any(|w| w == br#""event_id":"run-7""#));
        }
    }

    #[test]
    fn the_shipped_zip_file_loads_and_feeds_the_generator() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/zips.csv");
        let rows = load_zips(Path::new(path)).expect("config/zips.csv loads");
        assert!(rows.len() >= 100, "{} rows", rows.len());
        for r in &rows {
            let tz = r.timezone.as_deref();
            assert!(
                ZipInfo::from_fields(None, tz).timezone.is_some(),
                "{}: {tz:?}",
                r.zip
            );
            assert!(r.median_income.is_some(), "{}", r.zip);
        }
        let mut g = Generator::new(rows, &cfg(0.05, 0.05, 200), Some(9));
        for _ in 0..2_000 {
            let (_, payload, _) = g.next_event();
            decode(&payload, &Limits::new(1 << 20), Utc::now()).expect("valid");
        }
    }

    #[test]
    fn every_event_is_valid_per_the_contract() {
        let evs = events(20_000, 7, 0.1, 0.05);
        let mut ids = HashSet::new();
        let mut last_ts: HashMap<String, i64> = HashMap::new();
        let mut priced = 0;
        for (key, payload, event_id) in &evs {
            let e = decode(payload, &Limits::new(1 << 20), Utc::now())
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(payload)));
            assert_eq!(&e.event_id, event_id);
            assert_eq!(&e.session_id, key);
            assert!(
                ids.insert(e.event_id.clone()),
                "duplicate id {}",
                e.event_id
            );
            assert!(["mobile", "desktop", "tablet"].contains(&e.device.as_deref().unwrap_or("")));
            assert!(e.page.as_deref().is_some_and(|p| p.starts_with('/')));
            let needs_price = matches!(
                e.event_type.as_str(),
                "product_view" | "add_to_cart" | "remove_from_cart" | "checkout" | "purchase"
            );
            assert_eq!(
                e.price.is_some(),
                needs_price,
                "{}",
                String::from_utf8_lossy(payload)
            );
            if let Some(p) = e.price {
                assert!(p.is_finite() && p >= 0.0);
                priced += 1;
            }
            // Within a session, events are 2 s – 5 min apart, in order, and in the past.
            let ts = e.timestamp.timestamp_millis();
            assert!(ts < Utc::now().timestamp_millis());
            if let Some(prev) = last_ts.insert(e.session_id.clone(), ts) {
                let gap = ts - prev;
                assert!((2_000..=300_000).contains(&gap), "gap {gap}");
            }
        }
        assert!(priced > 1000);
        // Sessions have 1–30 events.
        let mut per_session: HashMap<&str, usize> = HashMap::new();
        for (key, _, _) in &evs {
            *per_session.entry(key.as_str()).or_default() += 1;
        }
        assert!(per_session.values().all(|n| (1..=30).contains(n)));
        assert!(per_session.values().any(|n| *n == 1) && per_session.values().any(|n| *n >= 15));
    }

    #[test]
    fn event_types_follow_the_funnel() {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, payload, _) in events(60_000, 11, 0.05, 0.05) {
            let e = decode(&payload, &Limits::new(1 << 20), Utc::now()).expect("valid");
            *counts.entry(e.event_type).or_default() += 1;
        }
        let c = |t: &str| counts.get(t).copied().unwrap_or(0);
        let order = [
            "page_view",
            "product_view",
            "search",
            "add_to_cart",
            "checkout",
            "purchase",
        ];
        let seq: Vec<usize> = order.iter().map(|t| c(t)).collect();
        assert!(seq.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
        assert!(
            c("page_view") as f64 > 1.3 * c("product_view") as f64,
            "{counts:?}"
        );
        assert!(c("remove_from_cart") > 0, "{counts:?}");
        assert!(c("purchase") as f64 > 0.005 * 60_000.0, "{counts:?}");
        assert_eq!(counts.len(), 7, "{counts:?}");
    }

    #[test]
    fn local_hour_of_day_is_realistic() {
        let rows = zips();
        let zones: HashMap<String, ZipInfo> = rows
            .iter()
            .map(|r| {
                (
                    r.zip.clone(),
                    ZipInfo::from_fields(None, r.timezone.as_deref()),
                )
            })
            .collect();
        let mut hours = [0usize; 24];
        for (_, payload, _) in events(40_000, 3, 0.0, 0.0) {
            let e = decode(&payload, &Limits::new(1 << 20), Utc::now()).expect("valid");
            let zip = e
                .zip
                .as_ref()
                .and_then(|z| zones.get(z))
                .expect("known zip");
            let snap = advance(None, e.timestamp.timestamp_millis(), 1_800_000).1;
            hours[compute(&e, Some(zip), &snap, 0.0).hour_of_day as usize] += 1;
        }
        let night: usize = hours[2..6].iter().sum();
        let lunch: usize = hours[12..15].iter().sum();
        let evening: usize = hours[19..23].iter().sum();
        assert!(evening > 5 * night, "{hours:?}");
        assert!(lunch > 3 * night, "{hours:?}");
        let max = hours.iter().copied().max().unwrap_or(0);
        let min = hours.iter().copied().min().unwrap_or(0);
        assert!(max > 5 * min, "{hours:?}");
    }

    #[test]
    fn unknown_and_missing_zip_ratios_hold() {
        let known: HashSet<String> = zips().into_iter().map(|z| z.zip).collect();
        let evs = events(60_000, 5, 0.2, 0.1);
        let (mut unknown, mut missing) = (0usize, 0usize);
        for (_, payload, _) in &evs {
            match decode(payload, &Limits::new(1 << 20), Utc::now())
                .expect("valid")
                .zip
            {
                None => missing += 1,
                Some(z) if !known.contains(&z) => unknown += 1,
                Some(_) => {}
            }
        }
        let n = evs.len() as f64;
        let (u, m) = (unknown as f64 / n, missing as f64 / n);
        assert!((u - 0.2).abs() < 0.03, "unknown ratio {u}");
        assert!((m - 0.1).abs() < 0.03, "missing ratio {m}");

        // Without reference rows every non-missing ZIP is unknown.
        let mut g = Generator::new(Vec::new(), &cfg(0.0, 0.0, 5), Some(1));
        let e = decode(&g.next_event().1, &Limits::new(1 << 20), Utc::now()).expect("valid");
        assert!(e.zip.is_some());
    }

    #[test]
    fn the_seed_fixes_the_stream_but_not_the_run_id() {
        let norm = |g: &mut Generator| {
            let run = g.run_id().to_string();
            (0..500)
                .map(|_| String::from_utf8_lossy(&g.next_event().1).replace(&run, "RUN"))
                .collect::<Vec<_>>()
        };
        let mut a = Generator::new(zips(), &cfg(0.1, 0.1, 20), Some(42));
        let mut b = Generator::new(zips(), &cfg(0.1, 0.1, 20), Some(42));
        let mut c = Generator::new(zips(), &cfg(0.1, 0.1, 20), Some(43));
        assert_ne!(a.run_id(), b.run_id());
        let (sa, sb, sc) = (norm(&mut a), norm(&mut b), norm(&mut c));
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
    }

    #[test]
    fn event_ids_map_back_to_their_sequence() {
        let mut g = Generator::new(zips(), &cfg(0.0, 0.0, 3), Some(1));
        let run = g.run_id().to_string();
        for n in 0..5 {
            let (key, payload, id) = g.next_event();
            assert_eq!(sequence_of(&run, &id), Some(n));
            assert_eq!(event_id_of(&payload).as_deref(), Some(id.as_str()));
            assert_eq!(
                sequence_of(&run, &key),
                None,
                "session ids are not event ids"
            );
        }
        assert_eq!(sequence_of(&run, "rother-3"), None);
        assert_eq!(sequence_of(&run, &format!("{run}x-3")), None);
        assert_eq!(event_id_of(br#"{"event_id": 5}"#), None);
        assert_eq!(event_id_of(b"\xff not json"), None);
    }
}
