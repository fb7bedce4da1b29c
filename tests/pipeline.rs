//! End-to-end behaviour of `clickpipe run` on real services: the broker, Redis and a model server
//! over loopback.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use rdkafka::Message;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn crafted_events_get_exact_features_and_a_model_score() {
    let names = Names::new("features", 2);
    let model = ModelServer::start(0);
    seed_zip(&names.zip_prefix, "10001", "72000", "America/New_York");
    seed_zip(&names.zip_prefix, "96813", "55000", "Pacific/Honolulu");
    let running = run_pipeline(config(&names, &model.url));

    // Same session: a first event, one 90 s later; a third with an unknown ZIP in another session.
    produce(
        &names.input,
        &[
            (
                "s1".into(),
                event(
                    "e1",
                    "s1",
                    "2026-06-05T03:30:00Z",
                    "page_view",
                    Some("10001"),
                ),
            ),
            (
                "s1".into(),
                event(
                    "e2",
                    "s1",
                    "2026-06-05T03:31:30Z",
                    "add_to_cart",
                    Some("10001"),
                ),
            ),
            (
                "s2".into(),
                event(
                    "e3",
                    "s2",
                    "2026-06-06T12:00:00Z",
                    "purchase",
                    Some("99999"),
                ),
            ),
            (
                "s3".into(),
                event(
                    "e4",
                    "s3",
                    "2026-01-10T20:00:00Z",
                    "checkout",
                    Some("96813"),
                ),
            ),
        ],
    );
    let out = by_event_id(&consume(&names.output, 4, WAIT));
    running.stop();
    assert_eq!(out.len(), 4, "{out:?}");

    let f1 = &out["e1"]["features"];
    // 03:30 UTC on Friday 5 June is 23:30 on Thursday in New York.
    assert_eq!(
        (f1["hour_of_day"].as_u64(), f1["day_of_week"].as_u64()),
        (Some(23), Some(3))
    );
    assert_eq!(f1["local_time_known"], true);
    assert_eq!(f1["zip_known"], true);
    assert_eq!(f1["zip_median_income"].as_f64(), Some(72000.0));
    assert_eq!(f1["session_event_count"].as_u64(), Some(1));
    assert!(f1["seconds_since_prev_event"].is_null());
    assert_eq!(f1["event_type_page_view"].as_u64(), Some(1));

    let f2 = &out["e2"]["features"];
    assert_eq!(f2["session_event_count"].as_u64(), Some(2));
    assert_eq!(f2["seconds_since_prev_event"].as_f64(), Some(90.0));
    assert_eq!(f2["session_duration_s"].as_f64(), Some(90.0));

    let f3 = &out["e3"]["features"];
    assert_eq!(f3["zip_known"], false);
    assert_eq!(f3["local_time_known"], false);
    assert_eq!(
        f3["zip_median_income"].as_f64(),
        Some(65000.0),
        "the configured default"
    );
    assert_eq!(
        (f3["hour_of_day"].as_u64(), f3["is_weekend"].as_bool()),
        (Some(12), Some(true))
    );

    // Honolulu has no DST: 20:00 UTC is 10:00 local.
    assert_eq!(out["e4"]["features"]["hour_of_day"].as_u64(), Some(10));

    for (id, v) in &out {
        let score = v["prediction"]["score"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&score), "{id}: score {score}");
        assert!(v["prediction"]["model_version"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert!(v["event_time"].as_str().is_some_and(|s| s.ends_with('Z')));
        assert!(v["processed_at"].as_str().is_some());
    }
    assert_eq!(out["e1"]["event_time"], "2026-06-05T03:30:00.000Z");
    assert_eq!(out["e1"]["user_id"], "u-s1");
    // The purchase scores higher than the first page view.
    assert!(out["e3"]["prediction"]["score"].as_f64() > out["e1"]["prediction"]["score"].as_f64());
}

#[test]
fn poison_records_are_dead_lettered_with_reasons_and_the_rest_still_flows() {
    let (names, _model, mut cfg) = with_healthy_model("poison", 1);
    cfg.kafka.max_payload_bytes = 4096;
    let running = run_pipeline(cfg);

    let huge = format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(5000));
    produce(&names.input, &[
        ("k".into(), event("ok-1", "s", "2026-06-01T10:00:00Z", "page_view", None)),
        ("k".into(), b"{not json".to_vec()),
        ("k".into(), br#"{"user_id":"u","session_id":"s","timestamp":1,"event_type":"x"}"#.to_vec()),
        ("k".into(), br#"{"event_id":7,"user_id":"u","session_id":"s","timestamp":1,"event_type":"x"}"#.to_vec()),
        ("k".into(), huge.into_bytes()),
        ("k".into(), b"\xff\xfe\xfd".to_vec()),
        ("k".into(), br#"{"event_id":"t","user_id":"u","session_id":"s","timestamp":"noon","event_type":"x"}"#.to_vec()),
        ("k".into(), event("ok-2", "s", "2026-06-01T10:00:05Z", "page_view", None)),
    ]);
    let dead = consume(&names.dlq, 6, WAIT);
    let out = consume(&names.output, 2, WAIT);
    running.stop();

    assert_eq!(
        out.len(),
        2,
        "valid records around the poison are processed"
    );
    assert_eq!(dead.len(), 6);
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| header(m, "clickpipe.error.message").unwrap_or_default())
        .collect();
    for expected in [
        "not valid JSON",
        "`event_id` is missing",
        "`event_id` must be a string",
        "above the maximum",
        "UTF-8",
        "RFC 3339",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason with {expected:?} in {reasons:?}"
        );
    }
    assert_all_of_kind(&dead, "invalid_event");
    for m in &dead {
        assert_eq!(
            header(m, "clickpipe.error.stage").as_deref(),
            Some("decode")
        );
        assert_eq!(
            header(m, "clickpipe.source.topic").as_deref(),
            Some(names.input.as_str())
        );
        assert_eq!(
            header(m, "clickpipe.source.partition").as_deref(),
            Some("0")
        );
        let offset: i64 = header(m, "clickpipe.source.offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(-1);
        assert!((1..=6).contains(&offset), "offset {offset}");
        assert_eq!(header(m, "clickpipe.attempts").as_deref(), Some("1"));
        assert!(header(m, "clickpipe.failed_at").is_some());
        assert_eq!(m.key(), Some(&b"k"[..]), "the key is kept");
    }
    // The value is the original payload, byte for byte.
    assert!(dead
        .iter()
        .any(|m| m.payload() == Some(&b"\xff\xfe\xfd"[..])));
    assert!(dead.iter().any(|m| m.payload() == Some(&b"{not json"[..])));
}

#[test]
fn events_from_year_9999_are_dead_lettered_and_their_session_keeps_flowing() {
    let (names, _model, cfg) = with_healthy_model("far-time", 1);
    let running = run_pipeline(cfg);
    produce(&names.input, &[
        ("k".into(), event("a", "s", "2026-06-01T10:00:00Z", "page_view", None)),
        ("k".into(), event("far-rfc", "s", "9999-12-31T23:59:59Z", "page_view", None)),
        ("k".into(), br#"{"event_id":"far-ms","user_id":"u","session_id":"s","timestamp":253402214400000,"event_type":"x"}"#.to_vec()),
        ("k".into(), event("b", "s", "2026-06-01T10:00:07Z", "page_view", None)),
    ]);
    let dead = consume(&names.dlq, 2, WAIT);
    let out = by_event_id(&consume(&names.output, 2, WAIT));
    running.stop();

    assert_eq!(dead.len(), 2);
    assert_all_of_kind(&dead, "invalid_event");
    for m in &dead {
        let reason = header(m, "clickpipe.error.message").unwrap_or_default();
        assert!(reason.contains("features.max_event_lead_s"), "{reason}");
    }
    // The far events never reached the session: the next event sees the one before them.
    let b = &out["b"]["features"];
    assert_eq!(b["session_event_count"].as_u64(), Some(2), "{b}");
    assert_eq!(b["seconds_since_prev_event"].as_f64(), Some(7.0), "{b}");
}

#[test]
fn model_failures_are_retried_and_recover_without_dead_letters() {
    let names = Names::new("flaky", 1);
    let model = ModelServer::start(3);
    let running = run_pipeline(config(&names, &model.url));
    let records: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("s{i}"),
                page_view(&format!("f{i}"), &format!("s{i}")),
            )
        })
        .collect();
    produce(&names.input, &records);
    let out = consume(&names.output, 20, WAIT);
    let dead = settled_after_a_second(&names.dlq);
    running.stop();
    assert_eq!(by_event_id(&out).len(), 20);
    assert!(dead.is_empty(), "no dead letters: {}", dead.len());
    assert!(
        model.invocations.load(std::sync::atomic::Ordering::SeqCst) > 3,
        "the failures happened"
    );
}

#[test]
fn a_model_that_keeps_failing_dead_letters_as_inference_failed() {
    let names = Names::new("down", 1);
    let model = ModelServer::start(usize::MAX);
    let mut cfg = config(&names, &model.url);
    cfg.model.on_unavailable = clickpipe_actors::config::UnavailablePolicy::DeadLetter;
    cfg.model.retry_budget_ms = Millis(300);
    // This test is about the retry budget; the circuit breaker has its own test (faults.rs).
    cfg.model.circuit_failure_threshold = 1000;
    let running = run_pipeline(cfg);
    produce(
        &names.input,
        &[
            ("a".into(), page_view("d1", "a")),
            ("b".into(), page_view("d2", "b")),
        ],
    );
    let dead = consume(&names.dlq, 2, WAIT);
    running.stop();
    assert_eq!(dead.len(), 2);
    assert_all_of_kind(&dead, "inference_failed");
    for m in &dead {
        assert_eq!(header(m, "clickpipe.error.stage").as_deref(), Some("infer"));
        assert!(header(m, "clickpipe.error.message").is_some_and(|s| s.contains("500")));
        let attempts: u32 = header(m, "clickpipe.attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        assert!(attempts > 1, "retried before giving up: {attempts}");
    }
    assert!(consume(&names.output, 1, Duration::from_secs(1)).is_empty());
}

#[test]
fn a_pipeline_stopped_mid_stream_and_restarted_loses_nothing_and_repeats_nothing() {
    let (names, _model, mut cfg) = with_healthy_model("restart", 4);
    // A small in-flight bound keeps the drain short on a slow broker: a clean stop must finish
    // every record it read (abandoned == 0) within the drain timeout.
    cfg.pipeline.max_in_flight = 100;
    cfg.pipeline.max_batch = 50;
    let total = 1500;
    let records: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| {
            let s = format!("s{}", i % 97);
            let payload = if i % 500 == 7 {
                b"garbage".to_vec()
            } else {
                page_view(&format!("r{i}"), &s)
            };
            (s, payload)
        })
        .collect();
    produce(&names.input, &records);

    let first = run_pipeline(cfg.clone());
    // Stop while work is under way.
    let deadline = std::time::Instant::now() + WAIT;
    while first
        .stats
        .records_in
        .load(std::sync::atomic::Ordering::Relaxed)
        < 500
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let reports = first.stop();
    assert!(reports.iter().all(|r| r.abandoned == 0), "{reports:?}");

    let second = run_pipeline(cfg);
    let garbage = total / 500;
    let out = consume(&names.output, total - garbage, WAIT);
    let dead = consume(&names.dlq, garbage, WAIT);
    let late_out = consume_settled(&names.output, total - garbage, WAIT, Duration::from_secs(2));
    second.stop();

    let ids: Vec<String> = late_out
        .iter()
        .map(|m| json(m)["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(out.len(), total - garbage);
    assert_eq!(dead.len(), garbage);
    assert_eq!(unique.len(), total - garbage, "every event has an output");
    assert_eq!(ids.len(), unique.len(), "a clean stop repeats nothing");
}

#[test]
fn redelivered_records_do_not_count_twice_in_their_session() {
    let (names, _model, cfg) = with_healthy_model("redeliver", 1);
    let running = run_pipeline(cfg);
    let batch: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                "s".to_string(),
                event(
                    &format!("x{i}"),
                    "s",
                    &format!("2026-06-01T10:00:{:02}Z", i * 10),
                    "page_view",
                    None,
                ),
            )
        })
        .collect();
    produce(&names.input, &batch);
    let first = consume(&names.output, 5, WAIT);
    // The same records again, as after a crash before the commit.
    produce(&names.input, &batch);
    let both = consume(&names.output, 10, WAIT);
    running.stop();
    assert_eq!(first.len(), 5);
    assert_eq!(both.len(), 10);
    let mut counts: HashMap<String, Vec<u64>> = HashMap::new();
    for m in &both {
        let v = json(m);
        counts
            .entry(v["event_id"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(v["features"]["session_event_count"].as_u64().unwrap_or(0));
    }
    for i in 0..5u64 {
        assert_eq!(
            counts[&format!("x{i}")],
            vec![i + 1, i + 1],
            "x{i} keeps its count"
        );
    }
}

#[test]
fn outputs_keep_input_order_per_key_across_partitions() {
    let (names, _model, mut cfg) = with_healthy_model("order", 4);
    cfg.model.max_batch_size = 16;
    cfg.pipeline.max_batch = 32;
    let running = run_pipeline(cfg);
    let keys = 20;
    let per_key = 40;
    let mut records = Vec::new();
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("key{k}");
            records.push((key.clone(), page_view(&format!("{key}-{n}"), &key)));
        }
    }
    produce(&names.input, &records);
    let out = consume(&names.output, keys * per_key, WAIT);
    running.stop();
    assert_eq!(out.len(), keys * per_key);
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let mut partitions: HashSet<i32> = HashSet::new();
    for m in &out {
        partitions.insert(m.partition());
        let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
        let (key, n) = id.rsplit_once('-').expect("id");
        seen.entry(key.to_string())
            .or_default()
            .push(n.parse().expect("n"));
        assert_eq!(m.key(), Some(key.as_bytes()), "output key is the input key");
    }
    assert!(partitions.len() > 1, "records spread over partitions");
    for (key, ns) in seen {
        assert_eq!(ns, (0..per_key).collect::<Vec<_>>(), "{key} out of order");
    }
}

#[test]
fn a_second_instance_joining_the_group_takes_partitions_without_loss_or_repeats() {
    let (names, _model, cfg) = with_healthy_model("rebalance", 4);
    let total = 1000;
    let records = events("j", total, 53);
    let mut outputs = Collector::new(&names.output);
    let a = run_pipeline(cfg.clone());
    produce(&names.input, &records[..total / 2]);
    assert!(
        outputs.until(WAIT, |m| m.len() >= 200),
        "first instance is processing"
    );
    // A second member joins: the group rebalances; revoked partitions are drained and committed.
    let b = run_pipeline(cfg);
    let deadline = std::time::Instant::now() + WAIT;
    while b.status.partitions().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !b.status.partitions().is_empty(),
        "the second instance got partitions"
    );
    produce(&names.input, &records[total / 2..]);
    let complete = outputs.until(WAIT, |m| m.len() >= total);
    // Anything extra (a repeat) would arrive now.
    outputs.until(Duration::from_secs(2), |_| false);
    let b_took = b
        .stats
        .records_in
        .load(std::sync::atomic::Ordering::Relaxed);
    b.stop();
    a.stop();
    assert!(
        complete,
        "only {} of {total} outputs",
        outputs.messages.len()
    );
    let ids: Vec<String> = outputs
        .messages
        .iter()
        .map(|m| json(m)["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), total, "nothing lost");
    assert_eq!(ids.len(), total, "nothing repeated by the rebalance");
    assert!(b_took > 0, "the second instance processed records");
}
