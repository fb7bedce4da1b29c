//! The Redis session script against the pure session rule it implements, on a real Redis: same
//! snapshots for random streams with gaps and out-of-order events, and the same answer again when
//! events are redelivered.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clickpipe_actors::clients::redis::{create_pool, LookupClient, LookupItem};
use clickpipe_actors::clients::zip_cache::ZipCache;
use clickpipe_actors::session::{advance, SessionSnapshot, SessionState};
use common::*;
use rand::{Rng, SeedableRng};

const GAP_S: u64 = 60;

fn client(prefix: &str) -> LookupClient {
    let mut cfg = clickpipe::service::settings::load_from(
        None,
        figment::providers::Env::prefixed("CLICKPIPE_TEST_UNUSED__"),
    )
    .expect("defaults")
    .redis;
    cfg.url = redis_url();
    cfg.session_prefix = prefix.to_string();
    let pool = create_pool(&cfg).expect("pool");
    LookupClient::new(
        pool,
        Arc::new(ZipCache::new(0, Duration::from_secs(1))),
        &cfg,
        Duration::from_secs(GAP_S),
    )
}

/// The lookup items of `(session, event_id, ts_ms)` events without ZIPs.
fn items(events: &[(String, String, i64)]) -> Vec<LookupItem<'_>> {
    events
        .iter()
        .map(|(s, e, ts)| LookupItem {
            zip: None,
            session_id: s,
            event_id: e,
            ts_ms: *ts,
        })
        .collect()
}

#[test]
fn the_script_matches_the_pure_rule_and_is_idempotent() {
    let prefix = unique("script") + ":";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Three sessions, 300 events, interleaved; times jump forward, backward and past the gap.
    let mut events: Vec<(String, String, i64)> = Vec::new();
    let mut clock = [1_000_000i64; 3];
    for i in 0..300 {
        let s = rng.random_range(0..3usize);
        let step = match rng.random_range(0..10) {
            0 => -rng.random_range(1..30_000), // out of order
            1 => (GAP_S as i64) * 1000 + rng.random_range(1..5_000), // past the gap
            _ => rng.random_range(0..20_000),
        };
        clock[s] += step;
        events.push((format!("sess{s}"), format!("ev{i}"), clock[s]));
    }

    let mut expected: Vec<SessionSnapshot> = Vec::new();
    let mut states: [Option<SessionState>; 3] = [None; 3];
    for (s, _, ts) in &events {
        let idx: usize = s[4..].parse().expect("index");
        let (state, snap) = advance(states[idx], *ts, (GAP_S * 1000) as i64);
        states[idx] = Some(state);
        expected.push(snap);
    }

    let c = client(&prefix);
    let got = actix_rt::System::new().block_on(async {
        let mut got = Vec::new();
        // In batches of varying size, as the lookup stage sends them.
        for chunk in events.chunks(17) {
            let answers = c.lookup(&items(chunk)).await.expect("lookup");
            got.extend(answers.into_iter().map(|a| a.session));
        }
        // Redelivery of the last 50 events: same answers, nothing counted twice.
        let tail = &events[events.len() - 50..];
        let again = c.lookup(&items(tail)).await.expect("lookup again");
        (
            got,
            again.into_iter().map(|a| a.session).collect::<Vec<_>>(),
        )
    });
    let (got, again) = got;
    assert_eq!(got, expected);
    assert_eq!(again, expected[expected.len() - 50..].to_vec());
}

#[test]
fn a_session_remembers_the_results_of_its_latest_ring_of_events_only() {
    use clickpipe_actors::session::RESULT_RING;
    let prefix = unique("ring") + ":";
    let n = RESULT_RING as usize + 20;
    let events: Vec<(String, String, i64)> = (0..n)
        .map(|i| {
            (
                "s".to_string(),
                format!("ev{i}"),
                1_000_000 + i as i64 * 1000,
            )
        })
        .collect();
    let c = client(&prefix);
    let (first_again, last_again) = actix_rt::System::new().block_on(async {
        for chunk in events.chunks(64) {
            c.lookup(&items(chunk)).await.expect("lookup");
        }
        let last = c
            .lookup(&items(&events[n - 1..]))
            .await
            .expect("redelivery of the latest event");
        let first = c
            .lookup(&items(&events[..1]))
            .await
            .expect("redelivery of the oldest event");
        (first[0].session, last[0].session)
    });
    // The latest event is recognised: same answer, not counted again.
    assert_eq!(last_again.count, n as u64);
    // The oldest fell out of the ring: it counts as a new (late) event of the session.
    assert_eq!(first_again.count, n as u64 + 1);

    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let keys: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{prefix}s"))
        .query(&mut conn)
        .expect("HKEYS");
    let results = keys.iter().filter(|k| k.starts_with("e:")).count();
    assert_eq!(results, RESULT_RING as usize, "one result per ring slot");
    assert!(keys.contains(&format!("e:ev{}", n - 1)));
    assert!(!keys.contains(&"e:ev1".to_string()));
}

#[test]
fn times_beyond_fourteen_digits_cross_the_script_exactly() {
    // Year 9999 in epoch ms has 15 digits: Lua's `..` would write it as 2.534022144e+14.
    let prefix = unique("far") + ":";
    let far = 253_402_214_400_123i64;
    let events = [
        ("s".to_string(), "a".to_string(), far),
        ("s".to_string(), "b".to_string(), far + 1_000),
        ("s".to_string(), "c".to_string(), far - 5),
    ];
    let c = client(&prefix);
    let got = actix_rt::System::new().block_on(async {
        let mut got = Vec::new();
        for e in events.chunks(1) {
            let a = c.lookup(&items(e)).await.expect("the reply parses");
            got.push(a[0].session);
        }
        got
    });
    assert_eq!(got[1].prev_ms, Some(far));
    assert_eq!(
        (got[2].count, got[2].first_ms, got[2].last_ms),
        (3, far - 5, far + 1_000)
    );
}

#[test]
fn a_session_stored_with_a_float_formatted_time_starts_afresh() {
    // What the earlier script stored for a year-9999 event.
    let prefix = unique("poisoned") + ":";
    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}s"))
        .arg(&[
            "count",
            "4",
            "first",
            "1000",
            "last",
            "2.534022144e+14",
            "seq",
            "4",
        ])
        .query(&mut conn)
        .expect("HSET");
    let c = client(&prefix);
    let got = actix_rt::System::new().block_on(async {
        c.lookup(&items(&[(
            "s".to_string(),
            "n".to_string(),
            1_780_000_000_000,
        )]))
        .await
        .expect("a poisoned session does not fail the lookup")
    });
    assert_eq!(got[0].session.count, 1);
    assert_eq!(got[0].session.last_ms, 1_780_000_000_000);
}

#[test]
fn session_sums_and_distinct_counts_match_the_rust_rule_through_restarts_and_redelivery() {
    use clickpipe_actors::event::Event;
    use clickpipe_actors::feature_set::FeatureSet;
    use clickpipe_actors::session::{aggregate_step, AggFunction, AggState};
    type Pair = (Option<f64>, Option<f64>);

    let set = FeatureSet::parse(
        "version = \"t\"\n\
         [[feature]]\nname = \"spend\"\nkind = \"session\"\nfunction = \"sum\"\ncolumn = \"price\"\n\
         [[feature]]\nname = \"pages\"\nkind = \"session\"\nfunction = \"count_distinct\"\ncolumn = \"page\"\n",
    )
    .expect("set");
    let prefix = unique("aggs") + ":";
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut clock = [1_780_000_000_000i64; 2];
    let events: Vec<Event> = (0..240)
        .map(|i| {
            let s = rng.random_range(0..2usize);
            clock[s] += match rng.random_range(0..12) {
                0 => -rng.random_range(1..20_000),
                1 => (GAP_S as i64) * 1000 + rng.random_range(1..5_000),
                _ => rng.random_range(0..15_000),
            };
            Event {
                event_id: format!("ev{i}"),
                user_id: "u".into(),
                session_id: format!("sess{s}"),
                timestamp: chrono::DateTime::from_timestamp_millis(clock[s]).expect("time"),
                event_type: "page_view".into(),
                page: (rng.random_range(0..5) > 0).then(|| format!("/p{}", rng.random_range(0..6))),
                referrer: None,
                zip: None,
                device: None,
                price: match rng.random_range(0..4) {
                    0 => None,
                    _ => Some(f64::from(rng.random_range(1..100_000u32)) / 100.0),
                },
            }
        })
        .collect();

    // The Rust rule, fed in the same order.
    let mut states: [Option<SessionState>; 2] = [None; 2];
    let mut aggs: [[AggState; 2]; 2] = Default::default();
    let mut expected: Vec<Pair> = Vec::new();
    for e in &events {
        let idx: usize = e.session_id[4..].parse().expect("index");
        let (state, snap) = advance(
            states[idx],
            e.timestamp.timestamp_millis(),
            (GAP_S * 1000) as i64,
        );
        states[idx] = Some(state);
        let restarted = snap.count == 1;
        let price = e.price.map(|p| p.to_string());
        let spend = aggregate_step(
            &mut aggs[idx][0],
            restarted,
            AggFunction::Sum,
            price.as_deref(),
        );
        let pages = aggregate_step(
            &mut aggs[idx][1],
            restarted,
            AggFunction::CountDistinct,
            e.page.as_deref(),
        );
        expected.push((spend, pages));
    }
    assert!(expected.iter().any(|(s, _)| s.is_some_and(|v| v > 1_000.0)));
    assert!(expected.iter().any(|(_, p)| p.is_some_and(|v| v >= 4.0)));

    let c = client(&prefix);
    fn of(e: &Event) -> LookupItem<'_> {
        LookupItem {
            zip: None,
            session_id: &e.session_id,
            event_id: &e.event_id,
            ts_ms: e.timestamp.timestamp_millis(),
        }
    }
    async fn run(c: &LookupClient, set: &FeatureSet, chunk: &[Event]) -> Vec<Pair> {
        let refs: Vec<&Event> = chunk.iter().collect();
        let plan = set.plan(&refs);
        let items: Vec<LookupItem<'_>> = chunk.iter().map(of).collect();
        let (_, declared) = c.lookup_with(&items, Some(&plan)).await.expect("lookup");
        declared
            .into_iter()
            .map(|d| (d.aggregates["spend"], d.aggregates["pages"]))
            .collect()
    }
    let (got, again) = actix_rt::System::new().block_on(async {
        let mut got = Vec::new();
        for chunk in events.chunks(13) {
            got.extend(run(&c, &set, chunk).await);
        }
        let again = run(&c, &set, &events[events.len() - 30..]).await;
        (got, again)
    });
    assert_eq!(got, expected, "Redis and Rust agree to the last bit");
    assert_eq!(
        again,
        expected[expected.len() - 30..].to_vec(),
        "redelivered events get their first answers and change nothing"
    );
}
