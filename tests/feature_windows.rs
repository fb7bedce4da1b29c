//! The window rule in Redis (`WINDOW_SCRIPT`) against the Rust rule (`feature_set::window`), on a
//! real Redis: the same aggregates for random batches with late, repeated and value-less events
//! over several entities and every function, and state that expires with its window.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use clickpipe_actors::feature_set::spec::WindowFunction;
use clickpipe_actors::feature_set::window::{
    aggregate, insert, parse_reply, prune, script_args, Entry, WindowItem, DEFAULT_MAX_EVENTS,
    WINDOW_SCRIPT,
};
use common::*;

const FUNCTIONS: [WindowFunction; 7] = WindowFunction::ALL;

fn connection() -> redis::Connection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .unwrap_or_else(|e| panic!("redis at {} (scripts/services.sh start): {e}", redis_url()))
}

/// Runs the script over `items`; one reply per item.
fn run(conn: &mut redis::Connection, items: &[WindowItem]) -> Vec<Option<f64>> {
    let (keys, argv) = script_args(items);
    let script = redis::Script::new(WINDOW_SCRIPT);
    let mut script = script.prepare_invoke();
    for k in &keys {
        script.key(k);
    }
    for a in &argv {
        script.arg(a);
    }
    let replies: Vec<String> = script.invoke(conn).expect("window script");
    replies.iter().map(|r| parse_reply(r)).collect()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn the_redis_script_and_the_rust_rule_agree_on_every_aggregate() {
    let mut conn = connection();
    let prefix = unique("fw");
    let window_ms = 60_000i64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // The Rust rule's state per key, fed exactly as the script is.
    let mut states: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut compared = 0usize;
    let mut nonzero = 0usize;
    for batch in 0..60 {
        let mut items = Vec::new();
        for j in 0..40u64 {
            let n = batch * 40 + j;
            // Mostly increasing times, with events up to 50 s late and some repeats.
            let late = if rng.next(4) == 0 {
                rng.next(50_000) as i64
            } else {
                0
            };
            let ts_ms = 1_780_000_000_000 + (n as i64) * 900 - late;
            let id = if rng.next(10) == 0 && n > 5 {
                format!("e{}", n - 1 - rng.next(5))
            } else {
                format!("e{n}")
            };
            let value = match rng.next(5) {
                0 => None,
                k => Some(format!("{}", (rng.next(1000) as f64) / 8.0 * k as f64)),
            };
            let function = FUNCTIONS[rng.next(FUNCTIONS.len() as u64) as usize];
            let entity = rng.next(3);
            items.push(WindowItem {
                key: format!("{{{prefix}:{function:?}:{entity}}}"),
                entry: Entry {
                    event_id: id,
                    ts_ms,
                    value,
                },
                add: rng.next(6) != 0,
                window_ms,
                // Entity 2 is capped hard, so the cap's drops are compared too.
                max_events: if entity == 2 { 3 } else { DEFAULT_MAX_EVENTS },
                function,
            });
        }
        let got = run(&mut conn, &items);
        for (item, got) in items.iter().zip(got) {
            let state = states.entry(item.key.clone()).or_default();
            if item.add {
                insert(state, item.entry.clone());
            }
            prune(state, item.window_ms, item.max_events);
            let want = aggregate(state, item.entry.ts_ms, item.window_ms, item.function);
            assert_eq!(got, want, "{item:?}");
            compared += 1;
            if want.is_some_and(|v| v != 0.0) {
                nonzero += 1;
            }
        }
    }
    assert_eq!(compared, 2_400);
    assert!(
        nonzero > 1_500,
        "the comparison saw real aggregates: {nonzero}"
    );
}

#[test]
fn window_state_expires_two_windows_after_its_last_event() {
    let mut conn = connection();
    let key = format!("{{{}}}", unique("fw-expiry"));
    let item = |id: &str, ts_ms: i64| WindowItem {
        key: key.clone(),
        entry: Entry {
            event_id: id.into(),
            ts_ms,
            value: Some("1".into()),
        },
        add: true,
        window_ms: 300,
        max_events: DEFAULT_MAX_EVENTS,
        function: WindowFunction::Sum,
    };
    assert_eq!(
        run(&mut conn, &[item("a", 1_000), item("b", 1_100)]),
        vec![Some(1.0), Some(2.0)]
    );
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 600,
        "expires within two windows: {ttl} ms"
    );
    let values_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{key}:v"))
        .query(&mut conn)
        .expect("PTTL");
    assert!(values_ttl > 0 && values_ttl <= 600, "{values_ttl} ms");
    std::thread::sleep(Duration::from_millis(700));
    let left: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .arg(format!("{key}:v"))
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(left, 0, "nothing left once the window has passed twice");

    // Within one entity, old events are dropped as newer ones arrive.
    let events: Vec<WindowItem> = (0..200).map(|i| item(&format!("e{i}"), i * 100)).collect();
    run(&mut conn, &events);
    let kept: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query(&mut conn)
        .expect("ZCARD");
    let values: i64 = redis::cmd("HLEN")
        .arg(format!("{key}:v"))
        .query(&mut conn)
        .expect("HLEN");
    assert!(
        kept <= 6 && values == kept,
        "two windows of events: {kept} kept, {values} values"
    );
}

#[test]
fn a_hot_entity_keeps_its_latest_max_window_events_only() {
    let mut conn = connection();
    let key = format!("{{{}}}", unique("fw-hot"));
    // 500 events within one 10-minute window, all distinct values, a cap of 100.
    let item = |i: i64, function| WindowItem {
        key: key.clone(),
        entry: Entry {
            event_id: format!("e{i:04}"),
            ts_ms: 1_780_000_000_000 + i * 10,
            value: Some(i.to_string()),
        },
        add: true,
        window_ms: 600_000,
        max_events: 100,
        function,
    };
    let events: Vec<WindowItem> = (0..500)
        .map(|i| item(i, WindowFunction::CountDistinct))
        .collect();
    let got = run(&mut conn, &events);
    assert_eq!(got[50], Some(51.0), "under the cap: exact");
    assert_eq!(got[499], Some(100.0), "over it: the latest 100");
    let kept: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query(&mut conn)
        .expect("ZCARD");
    let values: i64 = redis::cmd("HLEN")
        .arg(format!("{key}:v"))
        .query(&mut conn)
        .expect("HLEN");
    assert_eq!((kept, values), (100, 100));
    // The oldest went: the minimum is event 400's value.
    let min = run(
        &mut conn,
        &[WindowItem {
            add: false,
            ..item(499, WindowFunction::Min)
        }],
    );
    assert_eq!(min, vec![Some(400.0)]);
}
