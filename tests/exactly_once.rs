//! `kafka.delivery = "exactly_once"` on the real broker: a `read_committed` reader of the output
//! and dead-letter topics finds every input exactly once — in one of them, never both, never
//! twice — across SIGKILLs of the `clickpipe run` process and a member frozen past its session.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

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
        for m in &outputs.messages {
            let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
            seen.entry(id).or_default().0 += 1;
        }
        for m in &letters.messages {
            let id = json(m)["event_id"].as_str().unwrap_or_default().to_string();
            seen.entry(id).or_default().1 += 1;
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
