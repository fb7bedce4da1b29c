//! Supervision and failure policies under injected faults: a panicking stage, a model that goes
//! away, a Redis that goes away. Nothing may be lost in any of them.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickpipe::service::config::Config;
use clickpipe_actors::clients::breaker::BreakerState;
use clickpipe_actors::config::UnavailablePolicy;
use clickpipe_actors::fault_injection::{FaultHooks, PANIC_EVENT_TYPE};
use clickpipe_actors::status::{PartitionState, PartitionStatus};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn ids(msgs: &[rdkafka::message::OwnedMessage]) -> HashSet<String> {
    msgs.iter()
        .map(|m| json(m)["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Whether, within `timeout`, some partition of `running` is in a state `pred` accepts.
fn some_partition(
    running: &Running,
    timeout: Duration,
    pred: impl Fn(&PartitionStatus) -> bool,
) -> bool {
    wait_for(timeout, || running.status.partitions().iter().any(&pred))
}

/// Whether, within `timeout`, some partition of `running` is held with a reason naming `why`.
fn held_for(running: &Running, why: &str, timeout: Duration) -> bool {
    some_partition(running, timeout, |p| {
        p.paused_reason.as_deref().is_some_and(|r| r.contains(why))
    })
}

/// Whether the model client's circuit breaker leaves `Closed` within `timeout`.
fn breaker_opens(running: &Running, timeout: Duration) -> bool {
    wait_for(timeout, || {
        running.status.breaker.state() != BreakerState::Closed
    })
}

/// Runs the pipeline on `cfg` and gets the traffic before an outage through it: 100 events
/// `{prefix}…` over `keys` sessions. Returns the pipeline and the collector of its outputs.
fn running_with_traffic(
    names: &Names,
    cfg: Config,
    prefix: &str,
    keys: usize,
) -> (Running, Collector) {
    let running = run_pipeline(cfg);
    let mut outputs = Collector::new(&names.output);
    produce(&names.input, &events(prefix, 100, keys));
    assert!(
        outputs.until(WAIT, |m| ids(m).len() >= 100),
        "before the outage"
    );
    (running, outputs)
}

/// Starts an outage with `take_down`, produces 100 more events `{prefix}…` over `keys` sessions
/// into it, and returns when it began.
fn outage(names: &Names, prefix: &str, keys: usize, take_down: impl FnOnce()) -> Instant {
    take_down();
    let down_at = Instant::now();
    produce(&names.input, &events(prefix, 100, keys));
    down_at
}

/// Fault hooks that panic the enrich stage at the next `times` poisoned events it sees.
fn panicking_enrich(times: usize) -> Arc<FaultHooks> {
    let hooks = Arc::new(FaultHooks::default());
    hooks.enrich_panics.store(times, Ordering::SeqCst);
    hooks
}

/// Sets the supervisor's restart backoff: from `initial_ms`, growing up to `max_ms`.
fn restart_backoff(cfg: &mut Config, initial_ms: u64, max_ms: u64) {
    cfg.supervision.backoff_initial_ms = Millis(initial_ms);
    cfg.supervision.backoff_max_ms = Millis(max_ms);
}

/// An event that panics the enrich stage while its fault hook is armed.
fn poisoned(id: &str, session: &str) -> Vec<u8> {
    event(id, session, "2026-06-01T10:00:00Z", PANIC_EVENT_TYPE, None)
}

#[test]
fn a_panicking_stage_is_restarted_and_nothing_is_lost() {
    let (names, _model, mut cfg) = with_healthy_model("panic", 1);
    let hooks = panicking_enrich(2);
    restart_backoff(&mut cfg, 10, 50);
    let running = run_pipeline_with(cfg, hooks.clone());

    let mut records = events("p", 200, 7);
    // The poisoned event panics the enrich stage twice; the third time it passes.
    records.insert(100, ("p-s1".into(), poisoned("poisoned", "p-s1")));
    produce(&names.input, &records);
    let mut outputs = Collector::new(&names.output);
    let complete = outputs.until(WAIT, |m| ids(m).len() >= 201);
    let status = running.status.partitions();
    running.stop();

    assert!(complete, "{} of 201 outputs", ids(&outputs.messages).len());
    assert_eq!(
        hooks.enrich_panics.load(Ordering::SeqCst),
        0,
        "both panics happened"
    );
    let p = &status[0];
    assert_eq!(
        p.restarts, 2,
        "each panic restarted the partition's stages: {p:?}"
    );
    assert_eq!(p.state, PartitionState::Running);
}

#[test]
fn a_seek_during_a_restart_backoff_reads_the_partition_once_in_order() {
    let (names, model, mut cfg) = with_healthy_model("seek-backoff", 1);
    let hooks = panicking_enrich(1);
    // A long backoff: the seek lands inside it (after the first generation settled), and the
    // restart comes due after it.
    restart_backoff(&mut cfg, 6_000, 6_000);
    cfg.pipeline.max_batch = 8;
    cfg.model.max_batch_size = 4;
    let running = run_pipeline_with(cfg, hooks);
    let mut records = events("sb", 60, 1);
    records.insert(30, ("sb-s0".into(), poisoned("poisoned", "sb-s0")));
    produce(&names.input, &records);
    let restarting = some_partition(&running, WAIT, |p| p.state == PartitionState::Restarting);
    assert!(restarting, "the stages failed and wait out their backoff");
    let mut outputs = Collector::new(&names.output);
    // What the first generation emitted: the records its later stages held when enrich panicked
    // are still delivered while the partition restarts, so read until a second passes with
    // nothing new and everything the topic holds is read (a single fixed wait counted late
    // deliveries as replayed after the seek).
    let settle = std::time::Instant::now() + Duration::from_secs(4);
    loop {
        let seen = outputs.messages.len();
        outputs.until(Duration::from_secs(1), |_| false);
        assert!(
            outputs.caught_up(&names.output, WAIT),
            "read what was emitted before the seek"
        );
        if outputs.messages.len() == seen || std::time::Instant::now() > settle {
            break;
        }
    }
    let before = outputs.messages.len();
    // A slow model: the replay after the seek is still under way when the restart comes due.
    model.delay_ms.store(300, Ordering::SeqCst);
    let handle = running.handle.clone();
    actix_rt::System::new()
        .block_on(async move {
            handle
                .command(0, clickpipe_actors::partition::Control::Seek(0))
                .await
        })
        .expect("seek during the backoff");
    // Everything again from offset 0, and past the moment the void restart came due.
    let complete = outputs.until(WAIT, |m| m.len() >= before + 61);
    outputs.until(Duration::from_secs(4), |_| false);
    running.stop();

    assert!(
        complete,
        "{} outputs after the seek",
        outputs.messages.len() - before
    );
    let after: Vec<i64> = outputs.messages[before..]
        .iter()
        .map(|m| {
            header(m, "clickpipe.source.offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(
        after,
        (0..61).collect::<Vec<i64>>(),
        "after the seek, each record once, in order"
    );
}

/// A pipeline whose enrich stage panics every time it sees the poisoned event, with that event
/// already produced on key "k0" (one partition; the other keeps working). Fast backoff.
fn always_panicking(
    names: &Names,
    model: &ModelServer,
    max_restarts: u32,
    root_max_restarts: u32,
) -> Running {
    let mut cfg = config(names, &model.url);
    cfg.supervision.max_restarts = max_restarts;
    cfg.supervision.root_max_restarts = root_max_restarts;
    restart_backoff(&mut cfg, 10, 20);
    let running = run_pipeline_with(cfg, panicking_enrich(1_000));
    produce(&names.input, &[("k0".into(), poisoned("bad", "k0"))]);
    running
}

#[test]
fn a_partition_past_its_restart_intensity_is_paused_and_reported_failed() {
    let names = Names::new("intensity", 2);
    let model = ModelServer::start(0);
    let running = always_panicking(&names, &model, 2, 20);

    let failed = some_partition(&running, WAIT, |p| p.state == PartitionState::Failed);
    let reasons = running.status.not_ready_reasons();
    let status = running.status.partitions();
    running.stop();

    assert!(failed, "a partition failed: {status:?}");
    let p = status
        .iter()
        .find(|p| p.state == PartitionState::Failed)
        .expect("failed partition");
    assert_eq!(
        p.restarts, 3,
        "two restarts allowed, the third failure gives up"
    );
    assert!(p.paused);
    assert!(
        p.failure.as_deref().is_some_and(
            |f| f.contains("restart intensity exceeded") && f.contains("injected panic")
        ),
        "{p:?}"
    );
    assert_eq!(
        reasons.len(),
        1,
        "readiness is false with the reason: {reasons:?}"
    );
    assert!(
        status.iter().any(|p| p.state == PartitionState::Running),
        "the other partition is unaffected"
    );
}

#[test]
fn the_root_gives_up_when_partitions_keep_failing() {
    let names = Names::new("root", 2);
    let model = ModelServer::start(0);
    let running = always_panicking(&names, &model, 10, 3);
    let gave_up = wait_for(WAIT, || {
        running.fatal.lock().map(|f| f.is_some()).unwrap_or(false)
    });
    let reason = running.fatal.lock().ok().and_then(|f| f.clone());
    running.stop();
    assert!(gave_up, "the root gave up");
    assert!(reason.is_some_and(|r| r.contains("root restart intensity exceeded")));
}

#[test]
fn model_down_for_ten_seconds_pauses_and_resumes_without_dead_letters() {
    let names = Names::new("modeldown", 2);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let model = ModelServer::start_on(listener, 0);
    let mut cfg = config(&names, &model.url);
    cfg.model.circuit_open_ms = Millis(500);
    let (running, mut outputs) = running_with_traffic(&names, cfg, "a", 11);
    let down_at = outage(&names, "b", 11, || model.stop());
    // While the model is away the partitions are held, and say why.
    let held = held_for(&running, "model unavailable", Duration::from_secs(8));
    // The breaker opens after `circuit_failure_threshold` consecutive failures, each after a
    // retry backoff: some time after the first failure is reported.
    let breaker_opened = breaker_opens(&running, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed()));
    let model = ModelServer::start_on(TcpListener::bind(addr).expect("rebind the model's port"), 0);
    let complete = outputs.until(WAIT, |m| ids(m).len() >= 200);
    let dead = settled_after_a_second(&names.dlq);
    let after = running.status.partitions();
    running.stop();
    model.stop();

    assert!(held, "partitions reported the model outage");
    assert!(breaker_opened, "the circuit breaker opened");
    assert!(complete, "{} of 200 outputs", ids(&outputs.messages).len());
    assert!(
        dead.is_empty(),
        "no dead letters under the pause policy: {}",
        dead.len()
    );
    assert!(
        after.iter().all(|p| p.paused_reason.is_none()),
        "resumed: {after:?}"
    );
}

#[test]
fn a_probe_answered_with_a_4xx_after_an_outage_closes_the_circuit_instead_of_stalling() {
    // The model fails (500) until the breaker opens; its half-open probe then gets a 400. The
    // probe must settle: that batch is dead-lettered (inference_failed) and the circuit closes,
    // instead of staying half-open with its probe taken and every partition held for good.
    let (names, model, mut cfg) = with_healthy_model("probe4xx", 1);
    cfg.model.circuit_open_ms = Millis(300);
    cfg.model.circuit_failure_threshold = 2;
    cfg.model.max_batch_size = 1;
    let running = run_pipeline(cfg);
    let mut outputs = Collector::new(&names.output);
    model.failing.store(true, Ordering::SeqCst);
    produce(&names.input, &events("p", 5, 1));
    let opened = breaker_opens(&running, Duration::from_secs(10));
    // The next model call is the probe's: refuse it.
    model.rejecting.store(true, Ordering::SeqCst);
    model.failing.store(false, Ordering::SeqCst);
    let dead = consume(&names.dlq, 1, Duration::from_secs(15));
    model.rejecting.store(false, Ordering::SeqCst);
    produce(&names.input, &events("q", 20, 1));
    let resumed = outputs.until(WAIT, |m| {
        ids(m).iter().filter(|i| i.starts_with('q')).count() >= 20
    });
    let state = running.status.breaker.state();
    running.stop();

    assert!(opened, "the circuit opened during the outage");
    assert!(
        dead.iter()
            .any(|m| header(m, "clickpipe.error.kind").as_deref() == Some("inference_failed")),
        "the refused batch was dead-lettered"
    );
    assert!(
        resumed,
        "later events come out: the circuit did not stay half-open"
    );
    assert_eq!(state, BreakerState::Closed);
}

#[test]
fn model_down_with_the_dead_letter_policy_dead_letters_inference_failed() {
    let names = Names::new("modeldl", 1);
    let model = ModelServer::start(usize::MAX);
    let mut cfg = config(&names, &model.url);
    cfg.model.on_unavailable = UnavailablePolicy::DeadLetter;
    cfg.model.retry_budget_ms = Millis(200);
    cfg.model.circuit_failure_threshold = 2;
    let running = run_pipeline(cfg);
    produce(&names.input, &events("d", 30, 5));
    let dead = consume(&names.dlq, 30, WAIT);
    running.stop();
    assert_eq!(
        ids_of_payloads(&dead).len(),
        30,
        "every event is dead-lettered, none lost"
    );
    assert!(dead
        .iter()
        .all(|m| header(m, "clickpipe.error.kind").as_deref() == Some("inference_failed")));
    assert!(
        dead.iter().any(|m| header(m, "clickpipe.error.message")
            .is_some_and(|s| s.contains("circuit breaker open"))),
        "once open, the breaker dead-letters at once"
    );
}

fn ids_of_payloads(msgs: &[rdkafka::message::OwnedMessage]) -> HashSet<String> {
    use rdkafka::Message;
    msgs.iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m.payload()?).ok())
        .map(|v| v["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn redis_down_for_five_seconds_loses_nothing() {
    let names = Names::new("redisdown", 2);
    let model = ModelServer::start(0);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut redis = OwnRedis::start(port);
    let mut cfg = config(&names, &model.url);
    cfg.redis.url = redis.url();
    cfg.redis.timeout_ms = Millis(300);
    let (running, mut outputs) = running_with_traffic(&names, cfg, "r", 13);
    let down_at = outage(&names, "q", 13, || redis.stop());
    let held = held_for(&running, "redis unavailable", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(5).saturating_sub(down_at.elapsed()));
    let _redis = OwnRedis::start(port);
    let complete = outputs.until(WAIT, |m| ids(m).len() >= 200);
    let dead = settled_after_a_second(&names.dlq);
    running.stop();

    assert!(held, "partitions reported the Redis outage");
    assert!(complete, "{} of 200 outputs", ids(&outputs.messages).len());
    assert!(dead.is_empty(), "no dead letters under the pause policy");
}
