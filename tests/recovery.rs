//! Recovery after `kill -9` on the shared Apache Kafka broker, per supported group mode: the
//! instance is killed mid-stream and started again at once; its partitions come back (how soon
//! depends on the mode — the time is printed, the bound asserted is the mode's own mechanism), and
//! no event is lost. The KIP-848 consumer protocol is also taken through a join and a clean leave.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// These tests load the broker and measure recovery times: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the instance is a member of its group.
#[derive(Clone, Copy, PartialEq)]
enum Membership {
    Dynamic,
    /// With a `group.instance.id` of its own, the same after the restart.
    Static,
}

/// Runs one instance under 1,000 events/s, kills it with SIGKILL, restarts it with the same
/// config and environment, and returns the time from the restart to its first output. Asserts
/// that every event comes out, and the first output within `within_s` seconds. One at a time.
fn kill_and_restart(
    test: &str,
    group: &str,
    membership: Membership,
    env: &[(&str, &str)],
    within_s: u64,
) -> Duration {
    let _serial = serial();
    let within = Duration::from_secs(within_s);
    let instance_id = unique(test);
    let mut env = env.to_vec();
    if membership == Membership::Static {
        env.push(("CLICKPIPE__KAFKA__GROUP_INSTANCE_ID", instance_id.as_str()));
    }
    let env = env.as_slice();
    let (names, bootstrap, _model, config) = process_fixture(test, group);
    let total = 20_000usize;
    let mut outputs = Collector::on(&bootstrap, &names.output);
    let mut first = spawn_with(&config, env);
    let input = PacedProducer::start(&bootstrap, &names.input, events("v", total, 257), 1_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outputs.until(Duration::from_millis(200), |m| m.len() >= 3_000) {
        assert!(Instant::now() < deadline, "outputs before the kill");
        assert!(first.try_wait().is_none(), "the first instance exited");
    }
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    // Whatever the dead instance had produced arrives within a moment; then nothing until the
    // new instance has partitions.
    outputs.until(Duration::from_millis(500), |_| false);
    let before = outputs.messages.len();
    let restarted = Instant::now();
    let mut second = spawn_with(&config, env);
    // Like an orchestrator, start the instance again whenever it exits (a fatal group error
    // ends the process rather than leaving it alive without partitions).
    let mut exits = 0;
    let deadline = restarted + within + Duration::from_secs(30);
    while !outputs.until(Duration::from_millis(200), |m| m.len() > before) {
        assert!(
            Instant::now() < deadline,
            "the restarted instance produced no output within {:?}",
            within + Duration::from_secs(30)
        );
        if let Some(status) = second.try_wait() {
            exits += 1;
            eprintln!("recovery {test}: the restarted instance exited ({status}); again");
            second = spawn_with(&config, env);
        }
    }
    let recovery = restarted.elapsed();

    let produced = input.finish();
    assert_eq!(produced.failed, 0);
    let ids = outputs.event_ids(total, Duration::from_secs(120));
    assert_eq!(second.terminate(), Some(0), "clean stop");
    let _ = std::fs::remove_file(&config);
    let missing = missing_events(&ids, "v", total).len();
    eprintln!(
        "recovery {test}: first output {:.1} s after the restart ({exits} early exits); {} outputs for {total} events",
        recovery.as_secs_f64(),
        outputs.messages.len()
    );
    assert_eq!(missing, 0, "events lost");
    assert!(
        recovery <= within,
        "first output {recovery:?} after the restart, expected within {within:?}"
    );
    recovery
}

#[test]
fn a_killed_instance_restarted_with_the_default_group_settings_resumes_within_its_session() {
    // clickpipe's classic session of 8 s (heartbeats every second): the dead member is evicted
    // 7–8 s after its last heartbeat, where librdkafka's own 45 s would hold its partitions.
    kill_and_restart(
        "recover-default",
        DEFAULT_GROUP,
        Membership::Dynamic,
        &[],
        20,
    );
}

#[test]
fn a_killed_static_member_restarted_takes_its_partitions_back_before_its_session_expires() {
    // A 45 s session: only static membership can bring the partitions back sooner.
    kill_and_restart(
        "recover-static",
        CLASSIC_GROUP,
        Membership::Static,
        &[
            ("CLICKPIPE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "45000"),
            ("CLICKPIPE__KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS", "60000"),
        ],
        15,
    );
}

#[test]
fn a_killed_member_of_the_consumer_protocol_restarted_resumes_once_the_broker_expires_it() {
    // Under KIP-848 the session is the broker's (45 s by default, not below 45 s unless the
    // broker's group.consumer.min.session.timeout.ms allows it): the new member gets the dead
    // one's partitions when that session expires. Within: 45 s session + up to one 5 s broker
    // heartbeat interval + the restart, with a margin.
    kill_and_restart(
        "recover-848",
        CONSUMER_PROTOCOL_GROUP,
        Membership::Dynamic,
        &[],
        75,
    );
}

#[test]
fn a_killed_static_member_of_the_consumer_protocol_restarted_exits_until_released_then_resumes() {
    // A static member that rejoins before the broker released its dead predecessor gets the fatal
    // UNRELEASED_INSTANCE_ID: clickpipe exits (and is started again) instead of idling without
    // partitions, and resumes once the old session expired.
    kill_and_restart(
        "recover-848-static",
        CONSUMER_PROTOCOL_GROUP,
        Membership::Static,
        &[],
        75,
    );
}
