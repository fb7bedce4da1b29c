//! The `clickpipe run` process killed with SIGKILL mid-stream and started again: every event still
//! ends up in the output or the dead-letter topic (at-least-once: some may repeat, none is lost).
//!
//! The broker is the shared Apache Kafka broker (`scripts/services.sh start`): the group protocol,
//! session expiry and offset commits are Kafka's own.

mod common;

use std::time::Duration;

use common::*;

/// These tests each load the broker heavily and wait on group session timeouts; run them one at
/// a time so they measure the pipeline, not each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`process_fixture`] (classic group) for one of these tests, with the lock that runs them one
/// at a time.
fn serial_fixture(
    test: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    Names,
    String,
    ModelServer,
    std::path::PathBuf,
) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (names, bootstrap, model, config) = process_fixture(test, CLASSIC_GROUP);
    (serial, names, bootstrap, model, config)
}

/// Sum over partitions of the group's committed offsets on the input topic.
fn committed_total(names: &Names, bootstrap: &str) -> i64 {
    committed_offsets(bootstrap, &names.group, &names.input)
        .into_iter()
        .map(|o| o.unwrap_or(0))
        .sum()
}

#[test]
fn a_killed_pipeline_restarted_loses_no_event() {
    let (_serial, names, bootstrap, _model, config) = serial_fixture("crash");
    let total = 4000usize;
    let records = events("c", total, 113);
    produce_on(&bootstrap, &names.input, &records);

    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut first = spawn(&config);
    // Kill once some outputs exist, mid-stream.
    assert!(
        outputs.until(Duration::from_secs(60), |m| m.len() >= 300),
        "first instance produced outputs"
    );
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    outputs.until(Duration::from_secs(1), |_| false);
    let before = outputs.messages.len();
    assert!(
        before < total,
        "killed mid-stream ({before} of {total} done)"
    );
    let committed = committed_total(&names, &bootstrap);
    eprintln!("crash test: killed with {before} outputs seen, {committed} input offsets committed");

    let mut second = spawn(&config);
    let ids = outputs.event_ids(total, Duration::from_secs(180));
    let _ = second.kill();
    let _ = second.wait();
    let _ = std::fs::remove_file(&config);
    let out = &outputs.messages;

    let missing = missing_events(&ids, "c", total);
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "crash test: {} outputs for {total} events ({} repeated after SIGKILL)",
        out.len(),
        out.len().saturating_sub(total)
    );
}

#[test]
fn five_kills_during_a_long_run_lose_nothing_and_repeat_at_most_the_in_flight_bound() {
    let (_serial, names, bootstrap, _model, config) = serial_fixture("kills");
    let total = 20_000usize;
    let max_in_flight = 200usize;
    let records = events("k", total, 211);
    produce_on(&bootstrap, &names.input, &records);
    let env = [
        ("CLICKPIPE__PIPELINE__MAX_IN_FLIGHT", "200"),
        ("CLICKPIPE__PIPELINE__MAX_BATCH", "100"),
    ];

    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut kills = 0;
    let mut rng_state = 0x9e37_79b9_u64;
    while kills < 5 {
        let mut child = spawn_with(&config, &env);
        // Kill after a pseudo-random amount of further progress (150–1,150 outputs).
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let step = 150 + (rng_state >> 33) as usize % 1000;
        let target = outputs.messages.len() + step;
        let progressed = outputs.until(Duration::from_secs(90), |m| m.len() >= target);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert!(progressed, "instance {kills} made progress");
        kills += 1;
    }
    let mut last = spawn_with(&config, &env);
    let tally = outputs.tally("k", total, Duration::from_secs(300));
    let code = last.terminate();
    let _ = std::fs::remove_file(&config);

    let (repeats, bound) = (tally.repeats, repeat_bound(kills, max_in_flight));
    eprintln!("five kills: {tally} (bound {bound})");
    assert_eq!(tally.missing.len(), 0, "events lost");
    assert!(repeats <= bound, "{repeats} repeats exceed {bound}");
    assert_eq!(code, Some(0), "the last instance stopped cleanly");
}

#[test]
fn of_two_instances_one_killed_loses_nothing_and_one_stopped_cleanly_repeats_nothing() {
    let (_serial, names, bootstrap, _model, config) = serial_fixture("pair");
    let total = 4000usize;
    let records = events("t", total, 97);
    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut a = spawn(&config);
    let mut b = spawn(&config);
    produce_on(&bootstrap, &names.input, &records[..total / 2]);
    let half = outputs.event_ids(total / 2, Duration::from_secs(120));
    assert_eq!(
        half.len(),
        total / 2,
        "two instances process the first half"
    );
    let before_stop = outputs.messages.len();

    // A clean stop of one: its partitions move to the other without repeats.
    assert_eq!(a.terminate(), Some(0));
    produce_on(
        &bootstrap,
        &names.input,
        &records[total / 2..(3 * total) / 4],
    );
    let three_q = outputs.event_ids((3 * total) / 4, Duration::from_secs(120));
    outputs.until(Duration::from_secs(2), |_| false);
    assert_eq!(three_q.len(), (3 * total) / 4);
    assert_eq!(
        outputs.messages.len(),
        before_stop + total / 4,
        "a clean stop repeats nothing"
    );

    // A second instance joins again, then the first one is killed: nothing is lost.
    let mut c = spawn(&config);
    produce_on(&bootstrap, &names.input, &records[(3 * total) / 4..]);
    std::thread::sleep(Duration::from_secs(3));
    b.kill().expect("SIGKILL");
    let _ = b.wait();
    let all = outputs.event_ids(total, Duration::from_secs(120));
    let _ = c.terminate();
    let _ = std::fs::remove_file(&config);
    let missing = missing_events(&all, "t", total).len();
    assert_eq!(missing, 0, "nothing lost when one of two is killed");
}
