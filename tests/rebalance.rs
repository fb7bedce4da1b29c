//! Rebalances under load on the shared Apache Kafka broker: instances join and leave a running
//! group while input arrives at a steady rate. Partitions move between instances; every event
//! comes out, and since every leave is a clean stop (drain, commit, then release), none twice.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::message::Message;

#[test]
fn instances_joining_and_leaving_under_load_lose_nothing_and_repeat_nothing() {
    join_and_leave("rebalance", CLASSIC_GROUP);
}

#[test]
fn under_the_consumer_protocol_joins_and_leaves_under_load_lose_and_repeat_nothing() {
    join_and_leave("rebalance-848", CONSUMER_PROTOCOL_GROUP);
}

/// A runs alone; B joins, B leaves; C joins, A leaves; C finishes. 1,000 events/s throughout.
fn join_and_leave(test: &str, group: &str) {
    let (names, bootstrap, _model, config) = process_fixture(test, group);
    // 1,000 events/s for 24 s.
    let total = 24_000usize;
    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut a = spawn(&config);
    let input = PacedProducer::start(&bootstrap, &names.input, events("r", total, 301), 1_000);

    let step = |outputs: &mut Collector, what: &str| {
        let target = outputs.messages.len() + 4_000;
        assert!(
            outputs.until(Duration::from_secs(60), |m| m.len() >= target),
            "progress before: {what} ({} outputs)",
            outputs.messages.len()
        );
        eprintln!("{test}: {what} at {} outputs", outputs.messages.len());
    };
    step(&mut outputs, "b joins");
    let mut b = spawn(&config);
    step(&mut outputs, "b leaves");
    assert_eq!(b.terminate(), Some(0), "b stopped cleanly");
    step(&mut outputs, "c joins");
    let mut c = spawn(&config);
    step(&mut outputs, "a leaves");
    assert_eq!(a.terminate(), Some(0), "a stopped cleanly");

    let produced = input.finish();
    assert_eq!(produced.failed, 0);
    let tally = outputs.tally("r", total, Duration::from_secs(120));
    assert_eq!(c.terminate(), Some(0), "c stopped cleanly");
    let _ = std::fs::remove_file(&config);

    // The longest stretch without an output (by the outputs' create times): what a rebalance
    // costs the stream, printed for the record.
    let mut times: Vec<i64> = outputs
        .messages
        .iter()
        .filter_map(|m| m.timestamp().to_millis())
        .collect();
    times.sort_unstable();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    eprintln!("{test}: {tally}, longest pause in outputs {gap} ms");
    assert_eq!(tally.missing.len(), 0, "events lost");
    assert_eq!(tally.repeats, 0, "clean joins and leaves repeat nothing");
}

#[test]
fn a_revoke_draining_longer_than_the_session_loses_and_repeats_nothing() {
    // Session 6 s; model calls take 7 s while b joins, so a's revoked partitions drain for up to
    // the 9 s drain timeout. librdkafka heartbeats while the revoke callback drains (a member is
    // not evicted for a drain longer than its session; the bound is max.poll.interval.ms): a keeps
    // its other partitions, and what the drain finished is committed before the rest moves.
    let (names, bootstrap, model, config) = process_fixture("long-drain", CLASSIC_GROUP);
    let env = [
        ("CLICKPIPE__PIPELINE__DRAIN_TIMEOUT_MS", "9000"),
        ("CLICKPIPE__MODEL__TIMEOUT_MS", "8000"),
    ];
    let total = 3_000usize;
    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut a = spawn_with(&config, &env);
    let input = PacedProducer::start(&bootstrap, &names.input, events("d", total, 97), 200);
    assert!(
        outputs.until(Duration::from_secs(60), |m| m.len() >= 500),
        "a works alone"
    );
    model
        .delay_ms
        .store(7_000, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    let mut b = spawn_with(&config, &env);
    // The join and the long drain happen now; then the model is fast again.
    std::thread::sleep(Duration::from_secs(12));
    model.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);

    let produced = input.finish();
    assert_eq!(produced.failed, 0);
    let tally = outputs.tally("d", total, Duration::from_secs(120));
    assert_eq!(b.terminate(), Some(0));
    assert_eq!(a.terminate(), Some(0));
    let _ = std::fs::remove_file(&config);
    eprintln!("long drain: {tally}");
    assert_eq!(tally.missing.len(), 0, "events lost");
    assert_eq!(
        tally.repeats, 0,
        "a drain longer than the session repeats nothing"
    );
}
