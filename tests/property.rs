//! Property test of the whole pipeline on the real broker, Redis and a model server: whatever the
//! input records are — valid events, events with extra, missing or mistyped fields, any JSON, any
//! size up to just above `kafka.max_payload_bytes`, any event time (RFC 3339 and epoch
//! milliseconds across chrono's whole range and beyond), valid UTF-8 or not — each record ends in
//! exactly one output record or one dead letter within a bounded time (matched by the
//! `clickpipe.source.partition` / `.offset` headers both carry), it ends where the pure decoder
//! says (a record `decode` rejects is an `invalid_event` dead letter, one it accepts an output),
//! and once the pipeline stops the group's committed offsets are the ends of the input topic.
//!
//! Reproducible: the cases come from a fixed seed; `CLICKPIPE_PROPTEST_SEED=<u64>` picks another
//! (the seed in use is printed). A few cases of a few hundred records each (under a minute).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use clickpipe_actors::event::{decode, Limits};
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::ClientConfig;
use serde_json::{json, Map, Value};

/// `kafka.max_payload_bytes` of the test: small, so records just above it are cheap.
const MAX_PAYLOAD: usize = 64 * 1024;
/// Pipelines (cases) run: each one its own topics, group and pipeline.
const CASES: u32 = 6;
/// The default seed of the generated cases.
const DEFAULT_SEED: u64 = 0x636c_6963_6b70_6970;
/// The bound on the time from the last record produced to the last one accounted for.
const SETTLE: Duration = Duration::from_secs(45);

#[test]
fn every_record_ends_in_one_output_or_one_dead_letter_and_every_offset_is_committed() {
    let seed = std::env::var("CLICKPIPE_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("property: seed {seed} (CLICKPIPE_PROPTEST_SEED={seed} repeats these cases)");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = ProptestConfig {
        cases: CASES,
        // Every case starts a pipeline: shrink a little, in bounded time.
        max_shrink_iters: 16,
        max_shrink_time: 90_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let now_ms = Utc::now().timestamp_millis();
    let model = ModelServer::start(0);
    let started = Instant::now();
    let case = std::cell::Cell::new(0);
    let result = runner.run(
        &prop::collection::vec(record(now_ms), 200..=300),
        |records| {
            case.set(case.get() + 1);
            run_case(case.get(), &model.url, &records)
        },
    );
    eprintln!(
        "property: {} pipelines in {:.1?}",
        case.get(),
        started.elapsed()
    );
    model.stop();
    if let Err(e) = result {
        panic!("{e} (seed {seed})");
    }
}

/// One generated input record: its key and value.
#[derive(Clone)]
struct Input {
    key: String,
    payload: Vec<u8>,
}

/// Short: a failing case prints every record of its (shrunk) input.
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} bytes {:?}",
            self.key,
            self.payload.len(),
            excerpt(&self.payload)
        )
    }
}

/// Where a record ended: `Some(kind)` for a dead letter, `None` for an output record.
type Ending = Option<String>;

fn run_case(case: u32, model_url: &str, records: &[Input]) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let names = Names::new(&format!("property{case}"), 2);
    let mut cfg = config(&names, model_url);
    cfg.kafka.max_payload_bytes = MAX_PAYLOAD;
    cfg.validate().expect("valid config");
    let limits = Limits::from_config(&cfg.pipeline());
    let running = run_pipeline(cfg);

    let produced: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.key.clone(), r.payload.clone()))
        .collect();
    produce(&names.input, &produced);
    let decided_at = Utc::now();
    let ends = end_offsets(&names.input);
    let total: i64 = ends.iter().sum();
    prop_assert_eq!(total as usize, records.len(), "every record was produced");

    // Input offset → record, per partition, from the input topic itself.
    let mut inputs = Collector::new(&names.input);
    inputs.until(SETTLE, |m| m.len() >= records.len());
    let by_position: HashMap<(i32, i64), Vec<u8>> = inputs
        .messages
        .iter()
        .map(|m| {
            (
                (m.partition(), m.offset()),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    prop_assert_eq!(by_position.len(), records.len());

    let mut outputs = Collector::new(&names.output);
    let mut dead = Collector::new(&names.dlq);
    let deadline = Instant::now() + SETTLE;
    loop {
        outputs.until(Duration::from_millis(200), |_| false);
        dead.until(Duration::from_millis(200), |_| false);
        if outputs.messages.len() + dead.messages.len() >= records.len()
            || Instant::now() >= deadline
        {
            break;
        }
    }
    let processed_in = t0.elapsed();
    let reports = running.stop();
    // Anything written late (it should not be) is still counted.
    outputs.until(Duration::from_millis(500), |_| false);
    dead.until(Duration::from_millis(500), |_| false);

    let mut endings: HashMap<(i32, i64), Vec<Ending>> = HashMap::new();
    for m in &outputs.messages {
        endings.entry(source(m)?).or_default().push(None);
    }
    for m in &dead.messages {
        let kind = header(m, "clickpipe.error.kind").unwrap_or_default();
        endings.entry(source(m)?).or_default().push(Some(kind));
    }
    for (pos, payload) in &by_position {
        let got = endings.remove(pos).unwrap_or_default();
        prop_assert_eq!(
            got.len(),
            1,
            "record at {:?} ({} bytes: {:?}) ended {} times: {:?}",
            pos,
            payload.len(),
            excerpt(payload),
            got.len(),
            got
        );
        let want = match decode(payload, &limits, decided_at) {
            Ok(_) => None,
            Err(_) => Some("invalid_event".to_string()),
        };
        prop_assert_eq!(
            &got[0],
            &want,
            "record at {:?} ({} bytes: {:?}) ended in the wrong place",
            pos,
            payload.len(),
            excerpt(payload)
        );
    }
    prop_assert!(
        endings.is_empty(),
        "outputs or dead letters of no input record: {:?}",
        endings.keys().collect::<Vec<_>>()
    );

    let committed = committed_offsets(&brokers(), &names.group, &names.input);
    let want: Vec<Option<i64>> = ends.iter().map(|&e| Some(e)).collect();
    prop_assert_eq!(
        committed,
        want,
        "committed offsets are the ends of the input topic (drain: {:?})",
        reports
    );
    let invalid = dead.messages.len();
    eprintln!(
        "property: case {case}: {} records ({} KiB), {} outputs, {invalid} dead letters, all ended in {processed_in:.1?}, case {:.1?}",
        records.len(),
        records.iter().map(|r| r.payload.len()).sum::<usize>() / 1024,
        outputs.messages.len(),
        t0.elapsed()
    );
    Ok(())
}

/// The input partition and offset an output record or a dead letter names.
fn source(m: &OwnedMessage) -> Result<(i32, i64), TestCaseError> {
    let partition = header(m, "clickpipe.source.partition").and_then(|v| v.parse().ok());
    let offset = header(m, "clickpipe.source.offset").and_then(|v| v.parse().ok());
    match (partition, offset) {
        (Some(p), Some(o)) => Ok((p, o)),
        _ => Err(TestCaseError::fail(format!(
            "a record on {} without its source headers",
            m.topic()
        ))),
    }
}

/// The end (high watermark) of each partition of `topic`, in partition order.
fn end_offsets(topic: &str) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    partitions
        .into_iter()
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The first 120 bytes of a payload, lossily as text.
fn excerpt(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(120)]).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Any JSON value, nested a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The smallest and largest epoch milliseconds chrono represents.
fn chrono_range_ms() -> (i64, i64) {
    (
        DateTime::<Utc>::MIN_UTC.timestamp_millis(),
        DateTime::<Utc>::MAX_UTC.timestamp_millis(),
    )
}

/// An RFC 3339 time string anywhere in years 0000–9999, in any offset, sometimes malformed.
fn rfc3339() -> impl Strategy<Value = String> {
    (
        0i32..=9999,
        1u32..=12,
        1u32..=31,
        0u32..=23,
        0u32..=59,
        0u32..=60,
        prop::option::of(0u32..1_000_000_000),
        prop_oneof![
            Just("Z".to_string()),
            (-23i32..=23, 0u32..60).prop_map(|(h, m)| format!(
                "{}{:02}:{m:02}",
                if h < 0 { '-' } else { '+' },
                h.abs()
            )),
        ],
        prop_oneof![Just(' '), Just('T'), Just('t')],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off, sep)| {
            let frac = frac.map(|f| format!(".{f:09}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

/// An event time: near now (valid), anywhere in chrono's range or beyond, year 9999, negative,
/// RFC 3339 or epoch milliseconds, or something that is no time at all.
fn timestamp(now_ms: i64) -> impl Strategy<Value = Value> {
    let (min, max) = chrono_range_ms();
    let near = now_ms - 3_600_000..now_ms + 3_600_000;
    prop_oneof![
        8 => near.clone().prop_map(Value::from),
        8 => near.prop_map(|ms| Value::String(
            DateTime::from_timestamp_millis(ms).expect("near now").to_rfc3339()
        )),
        2 => rfc3339().prop_map(Value::String),
        2 => (min..=max).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop::sample::select(vec![
            253_402_300_799_999i64,   // 9999-12-31T23:59:59.999Z
            253_402_300_800_000,      // 10000-01-01
            -62_167_219_200_000,      // 0000-01-01
            -1,
            0,
            min,
            max,
            max + 1,
            min - 1,
            i64::MIN,
            i64::MAX,
        ])
        .prop_map(Value::from),
        1 => Just(json!("9999-12-31T23:59:59Z")),
        1 => Just(json!("+10000-01-01T00:00:00Z")),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => any_json(),
    ]
}

/// A clickstream event as a JSON object: mostly valid, sometimes with fields missing, mistyped or
/// extra (nested junk).
fn event_object(now_ms: i64) -> impl Strategy<Value = Map<String, Value>> {
    let id = "[a-z0-9-]{1,12}";
    (
        (id, id, "s[0-9]{1,2}", timestamp(now_ms), any::<bool>()),
        // The one-hot types, and one that is not.
        prop::sample::select(
            clickpipe_actors::features::EVENT_TYPES
                .iter()
                .copied()
                .chain(["login"])
                .collect::<Vec<_>>(),
        ),
        prop::option::of(prop::sample::select(vec![
            "mobile", "desktop", "tablet", "watch",
        ])),
        prop::option::of(prop_oneof![3 => "[0-9]{5}", 1 => "[0-9a-z]{0,7}"]),
        prop::option::of(-1e6f64..1e6),
        prop::collection::vec((".{1,12}", any_json()), 0..4),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "event_id",
                        "user_id",
                        "session_id",
                        "timestamp",
                        "@timestamp",
                        "event_type",
                        "page",
                        "referrer",
                        "zip",
                        "device",
                        "price",
                    ]),
                    prop::option::of(any_json()),
                ),
                1..3,
            ),
        ],
    )
        .prop_map(
            |(
                (event_id, user, session, ts, alias),
                event_type,
                device,
                zip,
                price,
                extra,
                mutations,
            )| {
                let mut o = Map::new();
                o.insert("event_id".into(), json!(event_id));
                o.insert("user_id".into(), json!(user));
                o.insert("session_id".into(), json!(session));
                o.insert(if alias { "@timestamp" } else { "timestamp" }.into(), ts);
                o.insert("event_type".into(), json!(event_type));
                o.insert("page".into(), json!("/p"));
                if let Some(d) = device {
                    o.insert("device".into(), json!(d));
                }
                if let Some(z) = zip {
                    o.insert("zip".into(), json!(z));
                }
                if let Some(p) = price {
                    o.insert("price".into(), json!(p));
                }
                for (k, v) in extra {
                    o.insert(k, v);
                }
                // A field removed (None) or replaced by anything.
                for (k, v) in mutations {
                    match v {
                        Some(v) => o.insert(k.to_string(), v),
                        None => o.remove(k),
                    };
                }
                o
            },
        )
}

/// How a record's bytes are made from its JSON.
#[derive(Debug, Clone)]
enum Shape {
    /// As serialised.
    Plain,
    /// Padded with whitespace (still the same JSON) to exactly this many bytes.
    Size(usize),
    /// A byte replaced by one that makes the payload invalid UTF-8, at this fraction of it.
    NotUtf8(u8, f64),
    /// Cut at this fraction of its length.
    Truncated(f64),
    /// Random bytes instead.
    Bytes(Vec<u8>),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        12 => Just(Shape::Plain),
        2 => (0usize..=MAX_PAYLOAD).prop_map(Shape::Size),
        2 => (MAX_PAYLOAD - 2..=MAX_PAYLOAD + 64).prop_map(Shape::Size),
        2 => (prop::sample::select(vec![0xffu8, 0xfe, 0xc0, 0x80, 0xed, 0xf5]), 0.0f64..1.0)
            .prop_map(|(b, at)| Shape::NotUtf8(b, at)),
        1 => (0.0f64..1.0).prop_map(Shape::Truncated),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Shape::Bytes),
    ]
}

/// One input record: an event (or any JSON), keyed by its session, in some shape.
fn record(now_ms: i64) -> impl Strategy<Value = Input> {
    (
        prop_oneof![
            6 => event_object(now_ms).prop_map(Value::Object),
            1 => any_json(),
        ],
        shape(),
    )
        .prop_map(|(value, shape)| {
            let key = value
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or("no-session")
                .to_string();
            let mut payload = serde_json::to_vec(&value).expect("json");
            match shape {
                Shape::Plain => {}
                Shape::Size(n) => {
                    if payload.len() < n {
                        payload.resize(n, b' ');
                    }
                }
                Shape::NotUtf8(b, at) => {
                    let i = ((payload.len() as f64 * at) as usize).min(payload.len() - 1);
                    payload[i] = b;
                }
                Shape::Truncated(at) => payload.truncate((payload.len() as f64 * at) as usize),
                Shape::Bytes(bytes) => payload = bytes,
            }
            Input { key, payload }
        })
}

#[test]
fn the_time_generator_reaches_year_9999_negative_times_and_rfc3339_strings() {
    // The generator itself: year-9999 and negative epoch times and RFC 3339 strings all come up.
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = timestamp(Utc::now().timestamp_millis());
    let (mut year_9999, mut negative, mut strings) = (false, false, false);
    for _ in 0..2000 {
        let v = strategy.new_tree(&mut runner).expect("a value").current();
        match &v {
            Value::Number(n) if n.as_i64().is_some_and(|ms| ms < 0) => negative = true,
            Value::Number(n) => {
                if let Some(t) = n.as_i64().and_then(DateTime::from_timestamp_millis) {
                    year_9999 |= t.year() == 9999;
                }
            }
            Value::String(s) => {
                strings = true;
                year_9999 |= s.starts_with("9999");
            }
            _ => {}
        }
    }
    assert!(year_9999 && negative && strings);
}
