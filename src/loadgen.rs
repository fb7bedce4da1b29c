//! The load generator (`clickpipe loadgen`): a realistic synthetic clickstream.
//!
//! [`Generator`] is pure (a seeded RNG in, event payloads out) so it can be unit-tested and reused
//! by benchmarks. [`run`] paces its events onto the input topic and, with `summary`, reads the
//! output and dead-letter topics back to count what came out and how long it took.
//!
//! What the events look like:
//!
//! - `concurrent_sessions` sessions are open at once; each event belongs to a random open session;
//!   a session has 1–30 events (mostly short), then it is replaced by a new one.
//! - A session starts at a simulated time 1–7 days ago, at a local hour of day drawn from a
//!   realistic mix (quiet at night, peaks around 12–14 and 19–22 in the ZIP's time zone); its
//!   next events follow a few seconds to a few minutes apart.
//! - Event types follow a shopping funnel: `page_view` ≫ `product_view` > `search` >
//!   `add_to_cart` > `checkout` > `purchase`, with the odd `remove_from_cart`; checkout needs a
//!   cart and purchase needs a checkout.
//! - Each session has a ZIP from the reference CSV, or (per `unknown_zip_ratio`) a valid 5-digit
//!   ZIP not in it, or (per `missing_zip_ratio`) none; a device (mobile / desktop / tablet); an
//!   entry referrer sometimes, then the previous page as referrer.
//! - Ids: `event_id` is `{run_id}-{n}`, `session_id` is `{run_id}-s{n}`; the run id is fresh for
//!   every generator (never taken from the seed), so runs never collide in session state.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use clickpipe_actors::config::{Config, KafkaConfig, LoadgenConfig};
use clickpipe_actors::features::ZipInfo;
use clickpipe_actors::kafka::auth::AuthContext;
use clickpipe_actors::kafka::client;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::time::Instant;

/// Pacing tick: each tick sends every event that has come due.
const TICK: Duration = Duration::from_millis(5);

/// Most deliveries awaited at once; sending waits for acks beyond this.
const MAX_OUTSTANDING: usize = 20_000;

/// Largest latency the summary histogram tells apart, microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Events produced per pacing step when the rate is unlimited (`rate` 0), so progress still shows.
const UNPACED_STEP: u64 = 1_000;

/// With an unlimited rate and the summary on, the most events sent but not yet seen on an output
/// topic: the load generator keeps the system saturated without piling up a backlog that a broker
/// with bounded retention (librdkafka's MockCluster keeps a few MB per partition) would trim.
const UNPACED_BACKLOG: u64 = 20_000;

/// Timeout of the blocking metadata and watermark look-ups of the summary consumer.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How a load run is driven (from the CLI).
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Events per second; 0 produces as fast as the broker acknowledges (max-throughput mode).
    pub rate: u64,
    /// Total events to produce.
    pub count: u64,
    /// Read the output and dead-letter topics back and report counts and latency.
    pub summary: bool,
    /// With `summary`: stop waiting once this long passes without a new record after the last
    /// event was produced.
    pub summary_timeout: Duration,
    /// Seed of the event content (ids stay unique per run).
    pub seed: Option<u64>,
    /// With `summary`: stop waiting this long after the first send, whatever is still missing
    /// (overload runs, where the system cannot catch up in any useful time).
    pub summary_deadline: Option<Duration>,
}

/// End-to-end latency percentiles of a run, milliseconds (microsecond resolution).
///
/// Latency of one event = when the summary consumer received its output (or dead letter) − when
/// the load generator handed the input record to its producer, both read from the same monotonic
/// clock of the load generator's process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of microseconds; None when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }
}

/// The outcome of a load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadgenReport {
    /// The run id every `event_id` of the run starts with.
    pub run_id: String,
    /// Requested rate, events per second (0: unlimited).
    pub rate: u64,
    /// Events acknowledged by the broker.
    pub produced: u64,
    /// Events whose delivery failed.
    pub delivery_errors: u64,
    /// Events of this run seen on the output topic (each counted once).
    pub predictions: u64,
    /// Events of this run seen on the dead-letter topic (each counted once).
    pub dead_letters: u64,
    /// Records of this run seen more than once on the same topic.
    pub duplicates: u64,
    /// Produced events seen on neither topic when the summary stopped waiting.
    pub missing: u64,
    /// End-to-end latency (with the summary).
    pub latency: Option<LatencySummary>,
    /// Seconds from the first send until every delivery was settled.
    pub elapsed_s: f64,
    /// Events accounted for (output or dead letter) per second, from the first send to the last
    /// result received: the system's throughput when the input outpaces it.
    pub output_rate: Option<f64>,
}

impl LoadgenReport {
    /// Acknowledged events per second over `elapsed_s`.
    fn achieved_rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.produced as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

impl fmt::Display for LoadgenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.latency.as_ref();
        let ms = |v: Option<f64>| match v {
            Some(v) if v < 10.0 => format!("{v:.2} ms"),
            Some(v) => format!("{v:.1} ms"),
            None => "-".to_string(),
        };
        writeln!(f, "{:<18}{:>14}", "events in", self.produced)?;
        writeln!(f, "{:<18}{:>14}", "delivery errors", self.delivery_errors)?;
        writeln!(f, "{:<18}{:>14}", "predictions out", self.predictions)?;
        writeln!(f, "{:<18}{:>14}", "dead letters", self.dead_letters)?;
        writeln!(f, "{:<18}{:>14}", "missing", self.missing)?;
        writeln!(f, "{:<18}{:>14}", "latency p50", ms(l.map(|l| l.p50_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p90", ms(l.map(|l| l.p90_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p99", ms(l.map(|l| l.p99_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency p99.9", ms(l.map(|l| l.p999_ms)))?;
        writeln!(f, "{:<18}{:>14}", "latency max", ms(l.map(|l| l.max_ms)))?;
        writeln!(
            f,
            "{:<18}{:>14}",
            "elapsed",
            format!("{:.2} s", self.elapsed_s)
        )?;
        writeln!(
            f,
            "{:<18}{:>14}",
            "achieved rate",
            format!("{:.1} ev/s", self.achieved_rate())
        )?;
        write!(
            f,
            "{:<18}{:>14}",
            "output rate",
            match self.output_rate {
                Some(r) => format!("{r:.1} ev/s"),
                None => "-".to_string(),
            }
        )
    }
}

/// One sample of a run's progress, taken every second (`--timeline`).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Wall clock, epoch milliseconds.
    pub unix_ms: i64,
    /// Seconds since the first send.
    pub t_s: f64,
    /// Events handed to the producer.
    pub sent: u64,
    /// Events acknowledged by the broker.
    pub acked: u64,
    /// Distinct events seen on the output topic.
    pub predictions: u64,
    /// Distinct events seen on the dead-letter topic.
    pub dead_letters: u64,
    /// Acknowledged events not yet seen on either topic: the end-to-end backlog.
    pub lag: u64,
}

// ---------------------------------------------------------------------------------------------
// ZIP reference data
// ---------------------------------------------------------------------------------------------

/// One row of the ZIP reference CSV (`zip,median_income,timezone,city,state`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZipRow {
    /// 5-digit ZIP code.
    pub zip: String,
    /// Median household income, if given.
    pub median_income: Option<f64>,
    /// IANA time zone name, if given.
    pub timezone: Option<String>,
}

/// Reads the ZIP reference CSV. It needs a header with at least `zip`; `median_income` and
/// `timezone` are used when present, other columns are ignored. A row whose ZIP is not five
/// digits is an error naming the file and line.
pub fn load_zips(path: &Path) -> anyhow::Result<Vec<ZipRow>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open ZIP reference file {}", path.display()))?;
    read_zips(file).with_context(|| format!("invalid ZIP reference file {}", path.display()))
}

fn read_zips<R: std::io::Read>(reader: R) -> anyhow::Result<Vec<ZipRow>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(reader);
    let headers = rdr.headers().context("cannot read the header row")?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let zip_col = col("zip").ok_or_else(|| anyhow!("the header has no `zip` column"))?;
    let income_col = col("median_income");
    let tz_col = col("timezone");
    let mut rows = Vec::new();
    for (i, record) in rdr.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("line {line}"))?;
        let zip = record.get(zip_col).unwrap_or("");
        if zip.len() != 5 || !zip.bytes().all(|b| b.is_ascii_digit()) {
            bail!("line {line}: `zip` must be five digits, got {zip:?}");
        }
        let median_income = income_col
            .and_then(|c| record.get(c))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        let timezone = tz_col
            .and_then(|c| record.get(c))
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        rows.push(ZipRow {
            zip: zip.to_string(),
            median_income,
            timezone,
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// Relative traffic by local hour of day (0–23): quiet at night, a lunch peak and a larger
/// evening peak.
const HOUR_WEIGHTS: [f64; 24] = [
    2.0, 1.2, 0.8, 0.6, 0.6, 0.9, 1.8, 3.0, 4.0, 4.8, 5.2, 5.8, // 00–11
    6.8, 6.9, 6.2, 5.4, 5.0, 5.2, 5.8, 6.8, 7.4, 7.3, 5.8, 3.6, // 12–23
];

/// Device mix of sessions.
const DEVICES: [(&str, f64); 3] = [("mobile", 0.56), ("desktop", 0.37), ("tablet", 0.07)];

/// Entry referrers (`None` = direct traffic).
const ENTRY_REFERRERS: [(Option<&str>, f64); 7] = [
    (None, 0.34),
    (Some("https://www.google.com/"), 0.36),
    (Some("https://www.bing.com/"), 0.05),
    (Some("https://www.facebook.com/"), 0.08),
    (Some("https://www.instagram.com/"), 0.07),
    (Some("https://www.pinterest.com/"), 0.04),
    (Some("https://news.example-mail.com/weekly"), 0.06),
];

/// Browsing pages a `page_view` lands on.
const PAGES: [(&str, f64); 11] = [
    ("/", 0.26),
    ("/category/shoes", 0.1),
    ("/category/outdoor", 0.08),
    ("/category/electronics", 0.11),
    ("/category/home", 0.09),
    ("/category/kitchen", 0.07),
    ("/category/toys", 0.05),
    ("/deals", 0.1),
    ("/new-arrivals", 0.07),
    ("/blog/gift-guide", 0.03),
    ("/account", 0.04),
];

const SEARCH_TERMS: [&str; 12] = [
    "running+shoes",
    "headphones",
    "coffee+maker",
    "rain+jacket",
    "lego",
    "desk+lamp",
    "yoga+mat",
    "air+fryer",
    "backpack",
    "phone+case",
    "cast+iron+pan",
    "gift+card",
];

const SITE: &str = "https://shop.example.com";
const USERS: u32 = 250_000;
const PRODUCTS: u32 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PageView,
    ProductView,
    Search,
    AddToCart,
    RemoveFromCart,
    Checkout,
    Purchase,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::PageView => "page_view",
            Kind::ProductView => "product_view",
            Kind::Search => "search",
            Kind::AddToCart => "add_to_cart",
            Kind::RemoveFromCart => "remove_from_cart",
            Kind::Checkout => "checkout",
            Kind::Purchase => "purchase",
        }
    }
}

/// The ZIP a session reports.
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
        let kind = next_kind(rng, s);
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

/// Index drawn with probability proportional to `weights`.
fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    // Rounding left `x` at the very top: the last option that can be drawn.
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// The next event type of a session: a funnel where checkout needs a cart and purchase follows a
/// checkout.
fn next_kind(rng: &mut StdRng, s: &Session) -> Kind {
    use Kind::{AddToCart, Checkout, PageView, ProductView, Purchase, RemoveFromCart, Search};
    let cart = if s.cart_items > 0 { 1.0 } else { 0.0 };
    // (kind, weight); weights need not sum to 1, unused slots weigh 0.
    let options: [(Kind, f64); 6] = match s.prev {
        None => [
            (PageView, 0.62),
            (ProductView, 0.2),
            (Search, 0.18),
            (AddToCart, 0.0),
            (Checkout, 0.0),
            (Purchase, 0.0),
        ],
        Some(Checkout) => [
            (Purchase, 0.62),
            (PageView, 0.2),
            (ProductView, 0.1),
            (RemoveFromCart, 0.08 * cart),
            (Search, 0.0),
            (AddToCart, 0.0),
        ],
        Some(Purchase) => [
            (PageView, 0.7),
            (ProductView, 0.2),
            (Search, 0.1),
            (AddToCart, 0.0),
            (Checkout, 0.0),
            (RemoveFromCart, 0.0),
        ],
        Some(ProductView) => [
            (PageView, 0.34),
            (ProductView, 0.24),
            (Search, 0.12),
            (AddToCart, 0.22),
            (Checkout, 0.06 * cart),
            (RemoveFromCart, 0.02 * cart),
        ],
        Some(AddToCart) => [
            (PageView, 0.38),
            (ProductView, 0.3),
            (Search, 0.1),
            (Checkout, 0.18),
            (RemoveFromCart, 0.04),
            (Purchase, 0.0),
        ],
        Some(PageView | Search | RemoveFromCart) => [
            (PageView, 0.5),
            (ProductView, 0.28),
            (Search, 0.15),
            (AddToCart, 0.02),
            (Checkout, 0.06 * cart),
            (RemoveFromCart, 0.02 * cart),
        ],
    };
    options[pick(rng, &options.map(|o| o.1))].0
}

/// Events in a session: 1–30, mostly short (geometric-like, mean ≈ 6).
fn session_length(rng: &mut StdRng) -> u32 {
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let n = 1.0 + (-u.ln() * 5.5).floor();
    n.min(30.0) as u32
}

/// Time to the next event of a session: log-uniform between 2 s and 5 min.
fn gap_ms(rng: &mut StdRng) -> i64 {
    let (lo, hi) = (2_000f64.ln(), 300_000f64.ln());
    rng.random_range(lo..hi).exp() as i64
}

/// A session start 1–7 days ago, at a local hour drawn from [`HOUR_WEIGHTS`] in the ZIP's time
/// zone (UTC without one), as epoch milliseconds.
fn session_start_ms(
    rng: &mut StdRng,
    today: NaiveDate,
    now_ms: i64,
    zone: Option<&ZipInfo>,
) -> i64 {
    let days_back = rng.random_range(1..=7u64);
    let date = today
        .checked_sub_days(Days::new(days_back))
        .unwrap_or(today);
    let hour = pick(rng, &HOUR_WEIGHTS) as u32;
    let second_of_hour = rng.random_range(0..3600u32);
    let millis = rng.random_range(0..1000u32);
    let naive = date
        .and_hms_milli_opt(hour, second_of_hour / 60, second_of_hour % 60, millis)
        .unwrap_or_else(|| date.and_time(chrono::NaiveTime::MIN));
    let ms = match zone.and_then(|z| z.timezone) {
        Some(tz) => local_to_utc_ms(&tz, naive),
        None => naive.and_utc().timestamp_millis(),
    };
    // Keep whole sessions (at most 30 × 5 min) in the past.
    if ms > now_ms - 3 * 3_600_000 {
        ms - 86_400_000
    } else {
        ms
    }
}

/// A local wall-clock time in `tz` as epoch milliseconds; a time skipped by a DST change moves
/// an hour later, an ambiguous one takes the earlier instant.
fn local_to_utc_ms<Z: TimeZone>(tz: &Z, naive: NaiveDateTime) -> i64 {
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| naive.and_utc().timestamp_millis())
}

/// A random valid ZIP that is not in the reference data (`None` if none is found quickly).
fn unknown_zip(rng: &mut StdRng, known: &HashSet<String>) -> Option<String> {
    (0..1000)
        .map(|_| format!("{:05}", rng.random_range(0..100_000u32)))
        .find(|z| !known.contains(z))
}

/// A stable price per product: log-normal around $30, ending in .99.
fn sku_price(sku: u32) -> f64 {
    let u1 = hash01(u64::from(sku)).max(1e-12);
    let u2 = hash01(u64::from(sku) ^ 0x9e37_79b9_7f4a_7c15);
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let p = (3.4 + 0.8 * z).exp().clamp(1.0, 2_000.0);
    p.floor() + 0.99
}

/// A uniform value in [0, 1) derived from `x` (splitmix64).
fn hash01(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// Kafka I/O
// ---------------------------------------------------------------------------------------------

/// The load generator's producer: not idempotent (a benchmark's input), a short linger.
fn producer_config(k: &KafkaConfig) -> ClientConfig {
    client::producer(k)
        .default("linger.ms", "2")
        .default(
            "message.timeout.ms",
            client::DEFAULT_MESSAGE_TIMEOUT_MS.to_string(),
        )
        .default("client.id", "clickpipe-loadgen")
        .build()
}

/// The summary consumer: reads assigned partitions, never joins a group, never commits.
fn consumer_config(k: &KafkaConfig, run_id: &str) -> ClientConfig {
    // A low fetch wait unless configured: brokers that wait the full time add it to every latency.
    client::consumer(k)
        .default("fetch.wait.max.ms", "5")
        .default("client.id", "clickpipe-loadgen-summary")
        .force("group.id", format!("clickpipe-loadgen-{run_id}"))
        .force("enable.auto.commit", "false")
        .force("enable.auto.offset.store", "false")
        .force("enable.partition.eof", "false")
        .build()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How many of `count` events are due `elapsed` into a run at `rate` per second: event `n` is due
/// at `n / rate` seconds, so the first one goes out at once.
fn due(elapsed: Duration, rate: u64, count: u64) -> u64 {
    let n = elapsed.as_nanos() * u128::from(rate) / 1_000_000_000 + 1;
    n.min(u128::from(count)) as u64
}

/// When event `n` is due.
fn due_at(start: Instant, n: u64, rate: u64) -> Instant {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(rate.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// State the producing, collecting and sampling halves of a run share (same task, no locking).
struct Shared {
    /// The run's time origin: just before the first send.
    origin: Instant,
    /// When each event was handed to the producer, microseconds after `origin`, by sequence.
    sent_at: RefCell<Vec<u64>>,
    sent: Cell<u64>,
    acked: Cell<u64>,
    delivery_errors: Cell<u64>,
    /// Set once every delivery is settled.
    produced_at: Cell<Option<Instant>>,
    predictions: Cell<u64>,
    dead_letters: Cell<u64>,
    /// Distinct events seen on either topic.
    accounted: Cell<u64>,
    /// When the latest new result arrived.
    last_result: Cell<Option<Instant>>,
    /// Set when the collector is done.
    finished: Cell<bool>,
    timeline: RefCell<Vec<Sample>>,
}

impl Shared {
    fn new(count: u64) -> Shared {
        Shared {
            origin: Instant::now(),
            sent_at: RefCell::new(vec![u64::MAX; usize::try_from(count).unwrap_or(0)]),
            sent: Cell::new(0),
            acked: Cell::new(0),
            delivery_errors: Cell::new(0),
            produced_at: Cell::new(None),
            predictions: Cell::new(0),
            dead_letters: Cell::new(0),
            accounted: Cell::new(0),
            last_result: Cell::new(None),
            finished: Cell::new(false),
            timeline: RefCell::new(Vec::new()),
        }
    }

    fn settle(
        &self,
        result: <DeliveryFuture as std::future::Future>::Output,
        first_error: &mut Option<String>,
    ) {
        match result {
            Ok(Ok(_)) => self.acked.set(self.acked.get() + 1),
            Ok(Err((e, _))) => {
                self.delivery_errors.set(self.delivery_errors.get() + 1);
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                self.delivery_errors.set(self.delivery_errors.get() + 1);
                first_error.get_or_insert_with(|| "delivery canceled (producer gone)".into());
            }
        }
    }

    /// Notes that event `seq` was handed to the producer now.
    fn mark_sent(&self, seq: u64) {
        let us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        let mut sent_at = self.sent_at.borrow_mut();
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| sent_at.get_mut(i)) {
            *slot = us;
        }
    }

    /// Latency of event `seq` if received now, microseconds.
    fn latency_us(&self, seq: u64, received: Instant) -> Option<u64> {
        let sent = *self.sent_at.borrow().get(usize::try_from(seq).ok()?)?;
        if sent == u64::MAX {
            return None;
        }
        let at = u64::try_from(received.duration_since(self.origin).as_micros()).ok()?;
        Some(at.saturating_sub(sent))
    }

    fn sample(&self) -> Sample {
        let acked = self.acked.get();
        Sample {
            unix_ms: wall_ms(),
            t_s: self.origin.elapsed().as_secs_f64(),
            sent: self.sent.get(),
            acked,
            predictions: self.predictions.get(),
            dead_letters: self.dead_letters.get(),
            lag: acked.saturating_sub(self.accounted.get()),
        }
    }

    fn outputs(&self) -> String {
        format!(
            " | out {} dlq {}",
            self.predictions.get(),
            self.dead_letters.get()
        )
    }
}

/// Produces `count` events at `rate`/s to the input topic (and with `summary`, reads the output and
/// dead-letter topics back). Progress goes to stderr about once a second. Delivery failures are
/// counted, and make the run an error at the end (whose message includes the report).
pub async fn run(cfg: &Config, opts: LoadgenOptions) -> anyhow::Result<LoadgenReport> {
    run_with_timeline(cfg, opts).await.map(|(report, _)| report)
}

/// [`run`], also returning a [`Sample`] of the run's progress per second.
pub async fn run_with_timeline(
    cfg: &Config,
    opts: LoadgenOptions,
) -> anyhow::Result<(LoadgenReport, Vec<Sample>)> {
    let zips = load_zips(Path::new(&cfg.loadgen.zip_csv))?;
    let mut generator = Generator::new(zips, &cfg.loadgen, opts.seed);
    let run_id = generator.run_id().to_string();
    let producer: FutureProducer<AuthContext> = producer_config(&cfg.kafka)
        .create_with_context(AuthContext::for_kafka(&cfg.kafka))
        .context("cannot create the Kafka producer")?;
    let collector = if opts.summary && opts.count > 0 {
        Some(Collector::start(&cfg.kafka, &run_id, opts.count)?)
    } else {
        None
    };
    let rate = if opts.rate == 0 {
        format!("as fast as the system answers (at most {UNPACED_BACKLOG} outstanding)")
    } else {
        format!("at {}/s", opts.rate)
    };
    eprintln!(
        "loadgen: run {run_id}: {} events {rate} to `{}` on {}",
        opts.count, cfg.kafka.input_topic, cfg.kafka.brokers
    );

    let shared = Shared::new(opts.count);
    let summary = collector.is_some();
    let producing = produce(
        &producer,
        &mut generator,
        &cfg.kafka.input_topic,
        &opts,
        &shared,
        summary,
    );
    let collecting = async {
        let out = match collector {
            Some(c) => Some(
                c.collect(&shared, opts.summary_timeout, opts.summary_deadline)
                    .await,
            ),
            None => None,
        };
        shared.finished.set(true);
        out
    };
    let sampling = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.timeline.borrow_mut().push(shared.sample());
            if shared.finished.get() && shared.produced_at.get().is_some() {
                break;
            }
        }
    };
    let ((elapsed, first_error), collected, ()) =
        futures::future::join3(producing, collecting, sampling).await;

    let produced = shared.acked.get();
    let delivery_errors = shared.delivery_errors.get();
    let mut report = LoadgenReport {
        run_id,
        rate: opts.rate,
        produced,
        delivery_errors,
        predictions: 0,
        dead_letters: 0,
        duplicates: 0,
        missing: 0,
        latency: None,
        elapsed_s: elapsed.as_secs_f64(),
        output_rate: None,
    };
    if let Some(c) = collected {
        report.predictions = c.predictions;
        report.dead_letters = c.dead_letters;
        report.duplicates = c.duplicates;
        report.missing = produced.saturating_sub(shared.accounted.get());
        report.latency = LatencySummary::of(&c.latency);
        if let Some(last) = shared.last_result.get() {
            let span = last.duration_since(shared.origin).as_secs_f64();
            if span > 0.0 {
                report.output_rate = Some(shared.accounted.get() as f64 / span);
            }
        }
        if c.duplicates > 0 {
            eprintln!("loadgen: {} duplicate records", c.duplicates);
        }
    }
    let timeline = shared.timeline.take();
    if delivery_errors > 0 {
        bail!(
            "{delivery_errors} of {} events failed delivery (first error: {})\n{report}",
            opts.count,
            first_error.unwrap_or_default()
        );
    }
    Ok((report, timeline))
}

/// The producing half of [`run`]: returns the time from the first send until every delivery
/// settled, and the first delivery error.
async fn produce(
    producer: &FutureProducer<AuthContext>,
    generator: &mut Generator,
    topic: &str,
    opts: &LoadgenOptions,
    shared: &Shared,
    summary: bool,
) -> (Duration, Option<String>) {
    let start = shared.origin;
    let mut outstanding: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();
    let mut first_error: Option<String> = None;
    let mut sent = 0u64;
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_progress = (start, 0u64);
    let progress = |sent: u64, last: &mut (Instant, u64)| {
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = (sent - last.1) as f64 / dt;
        *last = (now, sent);
        eprintln!(
            "loadgen: {:>6.1}s sent {sent} acked {} failed {} rate {rate:.0}/s{}",
            now.duration_since(start).as_secs_f64(),
            shared.acked.get(),
            shared.delivery_errors.get(),
            if summary {
                shared.outputs()
            } else {
                String::new()
            },
        );
    };

    while sent < opts.count {
        let target = if opts.rate == 0 {
            (sent + UNPACED_STEP).min(opts.count)
        } else {
            due(start.elapsed(), opts.rate, opts.count)
        };
        while sent < target {
            let mut stalled = (shared.accounted.get(), Instant::now());
            while opts.rate == 0
                && summary
                && sent.saturating_sub(shared.accounted.get()) >= UNPACED_BACKLOG
            {
                // A system that stopped answering does not hold the run forever.
                if shared.accounted.get() != stalled.0 {
                    stalled = (shared.accounted.get(), Instant::now());
                } else if stalled.1.elapsed() >= opts.summary_timeout {
                    break;
                }
                tokio::select! {
                    biased;
                    Some(r) = outstanding.next(), if !outstanding.is_empty() => {
                        shared.settle(r, &mut first_error);
                    }
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            while outstanding.len() >= MAX_OUTSTANDING {
                if let Some(r) = outstanding.next().await {
                    shared.settle(r, &mut first_error);
                }
            }
            let (key, payload, _) = generator.next_event();
            loop {
                let record = FutureRecord::to(topic).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        shared.mark_sent(sent);
                        outstanding.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        match outstanding.next().await {
                            Some(r) => shared.settle(r, &mut first_error),
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => {
                        shared.delivery_errors.set(shared.delivery_errors.get() + 1);
                        first_error.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
            sent += 1;
            shared.sent.set(sent);
        }
        let now = Instant::now();
        if now >= next_progress {
            progress(sent, &mut last_progress);
            // Stay on the run's one-second grid, skipping seconds missed while blocked.
            while next_progress <= now {
                next_progress += Duration::from_secs(1);
            }
        }
        if sent >= opts.count {
            break;
        }
        let deadline = if opts.rate == 0 {
            now
        } else {
            due_at(start, sent, opts.rate)
                .max(now + TICK)
                .min(next_progress)
        };
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                Some(r) = outstanding.next(), if !outstanding.is_empty() => {
                    shared.settle(r, &mut first_error);
                }
                _ = &mut sleep => break,
            }
        }
    }
    while let Some(r) = outstanding.next().await {
        shared.settle(r, &mut first_error);
        let now = Instant::now();
        if now >= next_progress {
            progress(sent, &mut last_progress);
            next_progress = now + Duration::from_secs(1);
        }
    }
    let elapsed = start.elapsed();
    eprintln!(
        "loadgen: produced in {:.2}s: sent {sent} acked {} failed {} ({:.0}/s)",
        elapsed.as_secs_f64(),
        shared.acked.get(),
        shared.delivery_errors.get(),
        shared.acked.get() as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    shared.produced_at.set(Some(Instant::now()));
    (elapsed, first_error)
}

/// What the summary consumer saw.
struct Collected {
    predictions: u64,
    dead_letters: u64,
    duplicates: u64,
    /// End-to-end latency, microseconds.
    latency: Histogram<u64>,
}

/// Reads this run's records back from the output and dead-letter topics.
struct Collector {
    consumer: StreamConsumer<AuthContext>,
    run_id: String,
    output_topic: String,
    dlq_topic: String,
    count: u64,
    latency: Histogram<u64>,
}

impl Collector {
    /// Creates the consumer and assigns every partition of both topics at its current end, so
    /// only records written from now on are read. (The high watermark is looked up and assigned
    /// as an explicit offset rather than `Offset::End`, which tansu's ListOffsets makes unreliable.)
    fn start(k: &KafkaConfig, run_id: &str, count: u64) -> anyhow::Result<Collector> {
        let consumer: StreamConsumer<AuthContext> = consumer_config(k, run_id)
            .create_with_context(AuthContext::for_kafka(k))
            .context("cannot create the summary consumer")?;
        let mut tpl = TopicPartitionList::new();
        for topic in [&k.output_topic, &k.dlq_topic] {
            let md = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .with_context(|| format!("cannot fetch metadata of topic `{topic}`"))?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic.as_str())
                .ok_or_else(|| anyhow!("topic `{topic}` is not in the broker's metadata"))?;
            if let Some(err) = t.error() {
                bail!("topic `{topic}`: {:?}", RDKafkaErrorCode::from(err));
            }
            if t.partitions().is_empty() {
                bail!("topic `{topic}` has no partitions (does it exist?)");
            }
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                    .with_context(|| {
                        format!("cannot fetch watermarks of `{topic}` [{}]", p.id())
                    })?;
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))
                    .with_context(|| format!("cannot assign `{topic}` [{}]", p.id()))?;
            }
        }
        consumer
            .assign(&tpl)
            .context("cannot assign the output and dead-letter partitions")?;
        Ok(Collector {
            consumer,
            run_id: run_id.to_string(),
            output_topic: k.output_topic.clone(),
            dlq_topic: k.dlq_topic.clone(),
            count,
            // 1 µs – 1 h at 3 significant digits; longer latencies clamp to 1 h.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .context("cannot create the latency histogram")?,
        })
    }

    /// Reads until every acknowledged event is accounted for, or `timeout` passes without a new
    /// record after production finished.
    async fn collect(
        self,
        shared: &Shared,
        timeout: Duration,
        deadline: Option<Duration>,
    ) -> Collected {
        // Per event: bit 1 = seen on the output topic, bit 2 = seen on the dead-letter topic.
        let mut seen = vec![0u8; usize::try_from(self.count).unwrap_or(usize::MAX)];
        let mut out = Collected {
            predictions: 0,
            dead_letters: 0,
            duplicates: 0,
            latency: self.latency,
        };
        let mut last_record = Instant::now();
        let mut next_progress = Instant::now();
        let mut last_error: Option<Instant> = None;
        loop {
            if deadline.is_some_and(|d| shared.origin.elapsed() >= d) {
                eprintln!(
                    "loadgen: summary deadline reached; {} events unaccounted for",
                    shared.acked.get().saturating_sub(shared.accounted.get())
                );
                break;
            }
            if let Some(done) = shared.produced_at.get() {
                if shared.accounted.get() >= shared.acked.get() {
                    break;
                }
                if last_record.max(done).elapsed() >= timeout {
                    eprintln!(
                        "loadgen: no new records for {:.1}s; {} events unaccounted for",
                        timeout.as_secs_f64(),
                        shared.acked.get().saturating_sub(shared.accounted.get())
                    );
                    break;
                }
                if Instant::now() >= next_progress {
                    eprintln!(
                        "loadgen: waiting for results: {} of {} accounted for{}",
                        shared.accounted.get(),
                        shared.acked.get(),
                        shared.outputs()
                    );
                    next_progress = Instant::now() + Duration::from_secs(1);
                }
            }
            let msg =
                match tokio::time::timeout(Duration::from_millis(5), self.consumer.recv()).await {
                    Err(_) => continue,
                    Ok(Err(e)) => {
                        if last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            eprintln!("loadgen: summary consumer error: {e}");
                            last_error = Some(Instant::now());
                        }
                        continue;
                    }
                    Ok(Ok(msg)) => msg,
                };
            let received = Instant::now();
            let bit = if msg.topic() == self.output_topic {
                1u8
            } else if msg.topic() == self.dlq_topic {
                2u8
            } else {
                continue;
            };
            let Some(seq) = msg
                .payload()
                .and_then(event_id_of)
                .and_then(|id| sequence_of(&self.run_id, &id))
            else {
                continue;
            };
            let Some(slot) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) else {
                continue;
            };
            last_record = received;
            if *slot & bit != 0 {
                out.duplicates += 1;
                continue;
            }
            let first = *slot == 0;
            *slot |= bit;
            if bit == 1 {
                out.predictions += 1;
                shared.predictions.set(out.predictions);
            } else {
                out.dead_letters += 1;
                shared.dead_letters.set(out.dead_letters);
            }
            if first {
                shared.accounted.set(shared.accounted.get() + 1);
                shared.last_result.set(Some(received));
                if let Some(us) = shared.latency_us(seq, received) {
                    out.latency.saturating_record(us.max(1));
                }
            }
        }
        out
    }
}

/// The `event_id` of an output record or a dead-lettered payload, if it has a string one.
fn event_id_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: Option<String>,
    }
    serde_json::from_slice::<Id>(payload).ok()?.event_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpipe_actors::event::{decode, Limits};
    use clickpipe_actors::features::compute;
    use clickpipe_actors::session::advance;
    use std::collections::HashMap;

    const CSV: &str = "zip,median_income,timezone,city,state\n\
        10001,72000,America/New_York,New York,NY\n\
        60601,81000,America/Chicago,Chicago,IL\n\
        80202,76000,America/Denver,Denver,CO\n\
        94103,98000,America/Los_Angeles,San Francisco,CA\n\
        33101,45000,America/New_York,Miami,FL\n\
        98101,91000,America/Los_Angeles,Seattle,WA\n\
        85001,38000,America/Phoenix,Phoenix,AZ\n\
        02108,88000,America/New_York,Boston,MA\n";

    fn zips() -> Vec<ZipRow> {
        read_zips(CSV.as_bytes()).expect("csv")
    }

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
    fn reads_the_zip_csv_and_rejects_bad_rows() {
        let rows = zips();
        assert_eq!(rows.len(), 8);
        assert_eq!(
            rows[7],
            ZipRow {
                zip: "02108".into(),
                median_income: Some(88_000.0),
                timezone: Some("America/New_York".into())
            }
        );
        let sparse = read_zips("zip,median_income,timezone\n12345,,\n".as_bytes()).expect("sparse");
        assert_eq!(sparse[0].median_income, None);
        assert_eq!(sparse[0].timezone, None);
        let err =
            read_zips("zip,median_income\n12345,1\n1234,2\n".as_bytes()).expect_err("bad zip");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = read_zips("code,income\n12345,1\n".as_bytes()).expect_err("no zip column");
        assert!(err.to_string().contains("`zip`"), "{err}");
        let err = format!(
            "{:#}",
            load_zips(Path::new("/nonexistent/zips.csv")).expect_err("absent")
        );
        assert!(err.contains("/nonexistent/zips.csv"), "{err}");
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

    #[test]
    fn pacing_spreads_events_without_drift() {
        assert_eq!(due(Duration::ZERO, 1000, 10_000), 1);
        assert_eq!(due(Duration::from_millis(5), 1000, 10_000), 6);
        assert_eq!(due(Duration::from_secs(3), 1000, 10_000), 3001);
        assert_eq!(due(Duration::from_secs(30), 1000, 10_000), 10_000);
        assert_eq!(due(Duration::from_millis(999), 1, 10), 1);
        assert_eq!(due(Duration::from_millis(1000), 1, 10), 2);
        let start = Instant::now();
        assert_eq!(
            due_at(start, 1500, 1000),
            start + Duration::from_millis(1500)
        );
    }

    #[test]
    fn the_load_generator_keeps_its_own_client_defaults_unless_configured() {
        let mut k: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9092", "group_id": "g", "input_topic": "in",
            "output_topic": "out", "dlq_topic": "dlq", "max_payload_bytes": 1048576,
            "commit_interval_ms": 1000, "consumer": {"enable.auto.commit": "true"},
        }))
        .expect("kafka config");
        let p = producer_config(&k);
        assert_eq!(p.get("linger.ms"), Some("2"));
        assert_eq!(p.get("client.id"), Some("clickpipe-loadgen"));
        let c = consumer_config(&k, "r1");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(c.get("group.id"), Some("clickpipe-loadgen-r1"));
        // It never commits, whatever the consumer section says.
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        k.producer
            .insert("queue.buffering.max.ms".into(), "4".into());
        assert_eq!(producer_config(&k).get("linger.ms"), None);
    }

    #[test]
    fn latency_summary_reads_microseconds_as_milliseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        assert_eq!(LatencySummary::of(&h), None);
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap(); // 10 µs … 10 ms
        }
        let l = LatencySummary::of(&h).unwrap();
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert!(l.p90_ms < l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms);
    }

    #[test]
    fn report_prints_a_summary_table() {
        let mut r = LoadgenReport {
            run_id: "r1".into(),
            rate: 500,
            produced: 1000,
            delivery_errors: 0,
            predictions: 990,
            dead_letters: 8,
            duplicates: 0,
            missing: 2,
            latency: Some(LatencySummary {
                p50_ms: 4.0,
                p90_ms: 9.5,
                p99_ms: 21.0,
                p999_ms: 30.0,
                max_ms: 31.25,
                mean_ms: 5.0,
            }),
            elapsed_s: 2.0,
            output_rate: None,
        };
        let s = r.to_string();
        for needle in [
            "events in",
            "990",
            "dead letters",
            "missing",
            "4.00 ms",
            "9.50 ms",
            "21.0 ms",
            "31.2 ms",
            "500.0 ev/s",
        ] {
            assert!(s.contains(needle), "{needle} in\n{s}");
        }
        assert!(
            s.lines()
                .any(|l| l.starts_with("output rate") && l.ends_with('-')),
            "{s}"
        );
        r.latency = None;
        assert!(
            r.to_string()
                .lines()
                .any(|l| l.starts_with("latency p99.9") && l.ends_with('-')),
            "{r}"
        );
    }
}
