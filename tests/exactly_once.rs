//! `kafka.delivery = "exactly_once"` on the real broker: a `read_committed` reader of the output
//! and dead-letter topics finds every input exactly once — in one of them, never both, never
//! twice — across SIGKILLs of the `clickpipe run` process, members joining and leaving, a member
//! frozen past its session, a broker restart and model and Redis outages.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::Message as _;

/// These tests each load the broker heavily and wait on group sessions and transaction timeouts;
/// run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The group settings of these tests: exactly-once, the classic protocol with a 6 s session.
fn exactly_once_group() -> String {
    format!("delivery = \"exactly_once\"\ntransaction_interval_ms = 100\n{CLASSIC_GROUP}")
}

/// `n` inputs with ids `{prefix}{i}`: page views, and every `poison_every`-th one an event the
/// pipeline must dead-letter (a timestamp that is no date).
fn inputs(prefix: &str, n: usize, poison_every: usize) -> Vec<(String, Vec<u8>)> {
    let mut records = events(prefix, n, 97);
    for (i, (_, payload)) in records.iter_mut().enumerate() {
        if i % poison_every == 0 {
            *payload =
                format!(r#"{{"event_id":"{prefix}{i}","timestamp":"not a date"}}"#).into_bytes();
        }
    }
    records
}

/// Where each input's result was found by `read_committed` readers of both topics, once every
/// input has a result (or `timeout` passed) and 3 s more for late repeats.
struct Results {
    /// Event id → (outputs, dead letters) carrying it.
    seen: HashMap<String, (usize, usize)>,
}

impl Results {
    fn collect(
        outputs: &mut Collector,
        letters: &mut Collector,
        total: usize,
        timeout: Duration,
    ) -> Results {
        let deadline = std::time::Instant::now() + timeout;
        let mut late = None;
        loop {
            outputs.until(Duration::from_millis(200), |_| false);
            letters.until(Duration::from_millis(200), |_| false);
            let results = Results::tally(outputs, letters);
            if results.seen.len() >= total && late.is_none() {
                late = Some(std::time::Instant::now() + Duration::from_secs(3));
            }
            let now = std::time::Instant::now();
            if late.is_some_and(|l| now >= l) || now >= deadline {
                return results;
            }
        }
    }

    fn tally(outputs: &Collector, letters: &Collector) -> Results {
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut where_ = HashMap::new();
        for m in &outputs.messages {
            let v = json(m);
            let id = v["event_id"].as_str().unwrap_or_default().to_string();
            seen.entry(id.clone()).or_default().0 += 1;
            where_.entry(id).or_insert_with(Vec::new).push(format!(
                "out p{} o{} src {:?} at {}",
                m.partition(),
                m.offset(),
                header(m, "clickpipe.source.offset"),
                v["processed_at"]
            ));
        }
        for m in &letters.messages {
            let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
            seen.entry(id).or_default().1 += 1;
        }
        let mut shown = 0;
        for (id, (o, d)) in &seen {
            if o + d > 1 && shown < 6 {
                shown += 1;
                eprintln!("repeat {id}: {:?}", where_.get(id));
            }
        }
        Results { seen }
    }

    /// Asserts every input `{prefix}0..{total}` has exactly one result, dead-lettered exactly
    /// when it is poison.
    fn assert_exactly_once(&self, prefix: &str, total: usize, poison_every: usize) {
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        for i in 0..total {
            let id = format!("{prefix}{i}");
            let want = if i % poison_every == 0 {
                (0, 1)
            } else {
                (1, 0)
            };
            match self.seen.get(&id) {
                None => missing.push(id),
                Some(&got) if got != want => wrong.push((id, got)),
                Some(_) => {}
            }
        }
        let extra = self.seen.len().saturating_sub(total - missing.len());
        assert!(
            missing.is_empty() && wrong.is_empty() && extra == 0,
            "{} inputs without a result (e.g. {:?}), {} with other than one result (e.g. {:?}: \
             (outputs, dead letters)), {extra} unknown ids",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            wrong.len(),
            wrong.iter().take(5).collect::<Vec<_>>(),
        );
    }
}

#[test]
fn kills_mid_stream_leave_every_input_exactly_once_in_outputs_or_dead_letters() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (names, bootstrap, _model, config) = process_fixture("eos-kills", &exactly_once_group());
    let (total, poison_every) = (12_000usize, 50usize);
    produce_on(&bootstrap, &names.input, &inputs("x", total, poison_every));
    let env = [
        ("CLICKPIPE__PIPELINE__MAX_IN_FLIGHT", "200"),
        ("CLICKPIPE__PIPELINE__MAX_BATCH", "100"),
    ];

    // Read uncommitted to see progress as it is written (kills land mid-transaction), committed
    // to judge.
    let mut progress = Collector::on(&bootstrap, &names.output);
    let mut outputs = Collector::read_committed(&bootstrap, &names.output);
    let mut letters = Collector::read_committed(&bootstrap, &names.dlq);
    let mut rng_state = 0x2545_f491_u64;
    for kill in 0..4 {
        let mut child = spawn_with(&config, &env);
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let step = 300 + (rng_state >> 33) as usize % 1200;
        let target = progress.messages.len() + step;
        let progressed = progress.until(Duration::from_secs(90), |m| m.len() >= target);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert!(progressed, "instance {kill} made progress");
    }
    let mut last = spawn_with(&config, &env);
    let results = Results::collect(&mut outputs, &mut letters, total, Duration::from_secs(300));
    let code = last.terminate();
    let _ = std::fs::remove_file(&config);
    eprintln!(
        "exactly-once after 4 kills: {} results read committed, {} written in all (aborted \
         included)",
        outputs.messages.len() + letters.messages.len(),
        progress.messages.len()
    );
    results.assert_exactly_once("x", total, poison_every);
    assert_eq!(code, Some(0), "the last instance stopped cleanly");
}

/// Sends `signal` (e.g. `STOP`, `CONT`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_member_joining_and_another_leaving_keep_every_input_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (names, bootstrap, _model, config) = process_fixture("eos-join", &exactly_once_group());
    let (total, poison_every) = (9_000usize, 40usize);
    let records = inputs("j", total, poison_every);
    let mut progress = Collector::on(&bootstrap, &names.output);
    let mut outputs = Collector::read_committed(&bootstrap, &names.output);
    let mut letters = Collector::read_committed(&bootstrap, &names.dlq);

    let mut a = spawn(&config);
    produce_on(&bootstrap, &names.input, &records[..total / 3]);
    assert!(
        progress.until(Duration::from_secs(90), |m| m.len() >= 1_000),
        "the first member made progress"
    );
    // A second member joins mid-stream: partitions move while transactions are open.
    let mut b = spawn(&config);
    produce_on(&bootstrap, &names.input, &records[total / 3..2 * total / 3]);
    assert!(
        progress.until(Duration::from_secs(90), |m| m.len() >= 3_500),
        "the pair made progress"
    );
    // The first leaves cleanly: its partitions are committed and handed over.
    assert_eq!(a.terminate(), Some(0), "the first member stopped cleanly");
    produce_on(&bootstrap, &names.input, &records[2 * total / 3..]);
    let results = Results::collect(&mut outputs, &mut letters, total, Duration::from_secs(240));
    let code = b.terminate();
    let _ = std::fs::remove_file(&config);
    results.assert_exactly_once("j", total, poison_every);
    assert_eq!(code, Some(0), "the second member stopped cleanly");
}

#[test]
fn a_frozen_member_whose_partitions_moved_cannot_make_its_writes_visible() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (names, bootstrap, _model, config) = process_fixture("eos-zombie", &exactly_once_group());
    let (total, poison_every) = (8_000usize, 40usize);
    let records = inputs("z", total, poison_every);
    let mut progress = Collector::on(&bootstrap, &names.output);
    let mut outputs = Collector::read_committed(&bootstrap, &names.output);
    let mut letters = Collector::read_committed(&bootstrap, &names.dlq);
    let env = [
        ("CLICKPIPE__PIPELINE__MAX_IN_FLIGHT", "200"),
        ("CLICKPIPE__PIPELINE__MAX_BATCH", "50"),
    ];

    let mut zombie = spawn_with(&config, &env);
    produce_on(&bootstrap, &names.input, &records[..total / 2]);
    assert!(
        progress.until(Duration::from_secs(90), |m| m.len() >= 800),
        "the first member made progress"
    );
    // Frozen mid-stream with a transaction open: past its 6 s session the group gives its
    // partitions to a new member, which redoes what the frozen one had not committed.
    signal(zombie.id(), "STOP");
    let mut successor = spawn_with(&config, &env);
    produce_on(&bootstrap, &names.input, &records[total / 2..]);
    let before = progress.messages.len();
    assert!(
        progress.until(Duration::from_secs(90), |m| m.len() >= before + 1_000),
        "the successor took the partitions over"
    );
    // Thawed: whatever it still writes or commits under its old generation must stay invisible.
    signal(zombie.id(), "CONT");
    std::thread::sleep(Duration::from_secs(5));
    let results = Results::collect(&mut outputs, &mut letters, total, Duration::from_secs(240));
    zombie.kill().expect("SIGKILL");
    let _ = zombie.wait();
    let code = successor.terminate();
    let _ = std::fs::remove_file(&config);
    results.assert_exactly_once("z", total, poison_every);
    assert_eq!(code, Some(0), "the successor stopped cleanly");
}

#[test]
fn a_broker_killed_mid_stream_keeps_every_input_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut broker = OwnBroker::start();
    let bootstrap = broker.bootstrap();
    let names = Names::without_topics("eos-broker");
    broker.create_topics(&[(&names.input, 4), (&names.output, 4), (&names.dlq, 1)]);
    let model = ModelServer::start(0);
    let config = config_file_with_group(&names, &model.url, &bootstrap, &exactly_once_group());
    let (total, poison_every) = (10_000usize, 50usize);
    let mut instance = spawn(&config);
    // 500 events/s for 20 s: input keeps arriving through the outage.
    let input = PacedProducer::start(
        &bootstrap,
        &names.input,
        inputs("k", total, poison_every),
        500,
    );
    let mut progress = Collector::on(&bootstrap, &names.output);
    assert!(
        progress.until(Duration::from_secs(60), |m| m.len() >= 2_000),
        "outputs before the outage"
    );
    broker.kill();
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        instance.try_wait().is_none(),
        "clickpipe run must ride out the broker's absence, not exit"
    );
    broker.restart();
    let produced = input.finish();
    assert_eq!(produced.failed, 0, "every input record was acknowledged");
    let mut outputs = Collector::read_committed(&bootstrap, &names.output);
    let mut letters = Collector::read_committed(&bootstrap, &names.dlq);
    let results = Results::collect(&mut outputs, &mut letters, total, Duration::from_secs(240));
    let code = instance.terminate();
    let _ = std::fs::remove_file(&config);
    results.assert_exactly_once("k", total, poison_every);
    assert_eq!(code, Some(0), "clickpipe stopped cleanly after the outage");
}

#[test]
fn model_and_redis_outages_keep_every_input_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (names, bootstrap, model, config) = process_fixture("eos-outages", &exactly_once_group());
    let port = free_port();
    let mut redis = OwnRedis::start(port);
    let text = std::fs::read_to_string(&config).expect("config file");
    let text = text.replace(
        &format!("url = \"{}\"", redis_url()),
        &format!("url = \"{}\"", redis.url()),
    );
    std::fs::write(&config, text).expect("config file");
    let (total, poison_every) = (8_000usize, 40usize);
    let mut instance = spawn_with(&config, &[("CLICKPIPE__REDIS__TIMEOUT_MS", "300")]);
    // 500 events/s for 16 s: input keeps arriving through both outages (the pause policies
    // hold the partitions; nothing is dead-lettered for an outage).
    let input = PacedProducer::start(
        &bootstrap,
        &names.input,
        inputs("o", total, poison_every),
        500,
    );
    let mut progress = Collector::on(&bootstrap, &names.output);
    assert!(
        progress.until(Duration::from_secs(60), |m| m.len() >= 1_000),
        "outputs before the outages"
    );
    model
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    model
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let before = progress.messages.len();
    assert!(
        progress.until(Duration::from_secs(60), |m| m.len() >= before + 500),
        "outputs again after the model's outage"
    );
    redis.stop();
    std::thread::sleep(Duration::from_secs(4));
    let _redis = OwnRedis::start(port);
    assert_eq!(
        input.finish().failed,
        0,
        "every input record was acknowledged"
    );
    let mut outputs = Collector::read_committed(&bootstrap, &names.output);
    let mut letters = Collector::read_committed(&bootstrap, &names.dlq);
    let results = Results::collect(&mut outputs, &mut letters, total, Duration::from_secs(180));
    let code = instance.terminate();
    let _ = std::fs::remove_file(&config);
    results.assert_exactly_once("o", total, poison_every);
    assert_eq!(code, Some(0), "clickpipe stopped cleanly after the outages");
}
