//! Replay's memory and bounds over the real broker: a second job does not re-publish what an
//! earlier one replayed (even from a fresh process), concurrent jobs are capped (429), a job
//! stops at its deadline and says so, and the list of finished jobs stays bounded.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::test as web_test;
use actix_web::App;
use clickpipe::service::admin::replay::{replay_group, ReplayJobs, KEEP_FINISHED};
use clickpipe::service::admin::{routes, AdminState};
use clickpipe::service::config::Config;
use common::*;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "test-admin-token";

/// Waits until job `$id` is no longer running (at most `$within`); evaluates to its report.
macro_rules! ended {
    ($app:expr, $id:expr, $within:expr) => {{
        let deadline = Instant::now() + $within;
        loop {
            let (code, report) = call!($app, Method::GET, &format!("/replay/{}", $id), None);
            assert_eq!(code, 200, "{report}");
            if report["state"] != "running" {
                break report;
            }
            assert!(
                Instant::now() < deadline,
                "replay still running after {:?}: {report}",
                $within
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

/// Starts a replay; evaluates to its id.
macro_rules! start {
    ($app:expr, $body:expr) => {{
        let (code, started) = call!($app, Method::POST, "/replay", Some($body));
        assert_eq!(code, 202, "{started}");
        started["id"].as_str().expect("job id").to_string()
    }};
}

/// Starts a replay and waits for it to end; evaluates to its report.
macro_rules! replay {
    ($app:expr, $body:expr) => {{
        let id = start!($app, $body);
        ended!($app, id, WAIT)
    }};
}

/// The admin API state of an instance whose pipeline is not running: replay needs only the
/// configuration (and this process's job list, fresh here as after a restart).
fn replay_only_state(cfg: Config) -> AdminState {
    let breaker = Arc::new(clickpipe_actors::clients::breaker::CircuitBreaker::new(
        1,
        Duration::from_secs(1),
    ));
    AdminState {
        stats: Default::default(),
        status: Arc::new(clickpipe_actors::status::StatusBoard::new(
            breaker,
            clickpipe_actors::status::Policies {
                model_unavailable: "pause",
                redis_unavailable: "pause",
            },
        )),
        started: Instant::now(),
        config: Arc::new(cfg),
        instance_id: clickpipe::service::admin::instance_id(),
        pipeline: None,
        replays: Arc::new(ReplayJobs::default()),
    }
}

/// A config with the admin token, for `names`.
fn replay_config(names: &Names) -> Config {
    // No model is called: replay reads and writes Kafka only.
    let mut cfg = config(names, "http://127.0.0.1:9");
    cfg.admin.token = Some(TOKEN.into());
    cfg
}

/// Writes `n` dead letters of `kind` to `topic` as the pipeline would (kind, time), payloads
/// `{prefix}{i}`.
fn write_dead_letters(topic: &str, prefix: &str, n: usize, kind: &str) {
    let p = producer();
    let failed_at = chrono::Utc::now().to_rfc3339();
    for i in 0..n {
        let payload = format!("{prefix}{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "clickpipe.error.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "clickpipe.failed_at",
                value: Some(failed_at.as_str()),
            });
        p.send(
            BaseRecord::to(topic)
                .key(payload.as_bytes())
                .payload(payload.as_bytes())
                .headers(headers),
        )
        .unwrap_or_else(|(e, _)| panic!("queue dead letter: {e}"));
    }
    p.flush(Duration::from_secs(30))
        .expect("dead letters written");
}

/// How many times each payload is on `topic`, once `want` records are there and nothing more
/// comes for a second.
fn payload_counts(topic: &str, want: usize) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in consume_settled(topic, want, WAIT, Duration::from_secs(1)) {
        let p = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

#[test]
fn two_replay_jobs_in_a_row_publish_each_dead_letter_once() {
    let started = Instant::now();
    let names = Names::without_topics("replay-once");
    create_topics(&[(&names.input, 2), (&names.output, 2), (&names.dlq, 2)]);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.admin.token = Some(TOKEN.into());
    // A replayed poison record fails again with count 1: the guard refuses it from then on, so
    // the only way a payload reaches the input topic again is a dead letter replayed twice.
    cfg.admin.replay_max_count = 1;
    let running = run_pipeline(cfg.clone());
    let poison: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("key-{i}"), format!("poison-{i}").into_bytes()))
        .collect();
    produce(&names.input, &poison);
    let mut dlq = Collector::new(&names.dlq);
    assert!(
        dlq.until(WAIT, |m| m.len() >= 6),
        "6 invalid_event dead letters"
    );

    let first_process = admin_state(&running, cfg.clone());
    let input = names.input.clone();
    let group = replay_group(&cfg);
    let dlq_topic = names.dlq.clone();
    let restarted = admin_state(&running, cfg);
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(first_process))).await;
        // A dry run remembers nothing.
        let dry = replay!(app, serde_json::json!({"dry_run": true}));
        assert_eq!(
            (dry["state"].as_str(), dry["replayed"].as_u64()),
            (Some("done"), Some(6)),
            "{dry}"
        );
        let first = replay!(app, serde_json::json!({}));
        assert_eq!(first["state"], "done", "{first}");
        assert_eq!(first["replayed"], 6, "the dry run moved nothing: {first}");
        assert_eq!(first["already_replayed"], 0, "{first}");
        assert!(
            dlq.until(WAIT, |m| m.len() >= 12),
            "the replayed poison failed again"
        );

        // A new process (fresh job list): what the first replayed is not published again.
        let app = web_test::init_service(App::new().configure(routes(restarted))).await;
        let second = replay!(app, serde_json::json!({}));
        assert_eq!(second["state"], "done", "{second}");
        assert_eq!(second["replayed"], 0, "nothing replayed twice: {second}");
        assert_eq!(second["scanned"], 6, "starts after the first job: {second}");
        assert_eq!(
            second["skipped"], 6,
            "the new dead letters hit the guard: {second}"
        );
        // Kept in the replay group: its offsets are past all 12 (6 replayed, 6 refused).
        let committed: i64 = committed_offsets(&brokers(), &group, &dlq_topic)
            .into_iter()
            .map(|o| o.unwrap_or(0))
            .sum();
        assert_eq!(committed, 12, "group {group}");
        let counts = payload_counts(&input, 12);
        assert_eq!(counts.len(), 6, "{counts:?}");
        assert!(
            counts.values().all(|n| *n == 2),
            "each poison record: the original and one replay, {counts:?}"
        );

        // On purpose: everything again.
        let again = replay!(app, serde_json::json!({"from": "beginning"}));
        assert_eq!(again["state"], "done", "{again}");
        assert_eq!(again["replayed"], 6, "{again}");
        assert_eq!(again["already_replayed"], 0, "{again}");
        let counts = payload_counts(&input, 18);
        assert!(counts.values().all(|n| *n == 3), "{counts:?}");
        let (code, bad) = call!(
            app,
            Method::POST,
            "/replay",
            Some(serde_json::json!({"from": "yesterday"}))
        );
        assert_eq!((code, bad["field"].as_str()), (400, Some("from")), "{bad}");
    });
    running.stop();
    model.stop();
    eprintln!("two_replay_jobs_in_a_row: {:?}", started.elapsed());
}

/// The test's topics and a [`replay_config`] whose producer holds deliveries for a minute: its
/// jobs stay running until cancelled or stopped by their deadline.
fn lingering_replay_setup(test: &str) -> (Names, Config) {
    let names = Names::new(test, 1);
    let mut cfg = replay_config(&names);
    cfg.kafka
        .producer
        .insert("linger.ms".into(), "60000".into());
    (names, cfg)
}

#[test]
fn replay_requests_beyond_replay_max_jobs_get_a_429() {
    let started = Instant::now();
    // Deliveries wait a minute in the producer: the jobs stay running until cancelled.
    let (names, mut cfg) = lingering_replay_setup("replay-cap");
    cfg.admin.replay_max_jobs = 2;
    write_dead_letters(&names.dlq, "held-", 2, "inference_failed");
    let state = replay_only_state(cfg);
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        let one = start!(app, serde_json::json!({}));
        let two = start!(app, serde_json::json!({"kinds": ["inference_failed"]}));
        let (code, body) = call!(app, Method::POST, "/replay", Some(serde_json::json!({})));
        assert_eq!(code, 429, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("admin.replay_max_jobs") && error.contains('2'),
            "{body}"
        );
        let (code, body) = call!(
            app,
            Method::POST,
            "/replay",
            Some(serde_json::json!({"dry_run": true}))
        );
        assert_eq!(code, 429, "a dry run counts too: {body}");

        // Cancelling frees the slots quickly: what was not sent is withdrawn.
        for id in [&one, &two] {
            let (code, body) = call!(app, Method::DELETE, &format!("/replay/{id}"), None);
            assert_eq!(code, 202, "{body}");
        }
        for id in [&one, &two] {
            let report = ended!(app, id, Duration::from_secs(10));
            assert_eq!(report["state"], "cancelled", "{report}");
            assert_eq!(report["replayed"], 0, "nothing was published: {report}");
        }
        let three = start!(app, serde_json::json!({"dry_run": true}));
        let report = ended!(app, three, Duration::from_secs(10));
        assert_eq!(
            report["replayed"], 2,
            "the cancelled jobs remembered nothing: {report}"
        );
    });
    assert!(
        consume(&names.input, 1, Duration::from_secs(1)).is_empty(),
        "cancelled before anything was sent"
    );
    eprintln!(
        "replay_requests_beyond_replay_max_jobs: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_replay_job_past_its_deadline_stops_and_says_so() {
    let started = Instant::now();
    // Its deliveries would wait a minute: the deadline comes first.
    let (names, mut slow) = lingering_replay_setup("replay-deadline");
    slow.admin.replay_timeout_s = 1;
    let fast = replay_config(&names);
    write_dead_letters(&names.dlq, "late-", 3, "lookup_failed");
    let (slow, fast) = (replay_only_state(slow), replay_only_state(fast));
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(slow))).await;
        let t0 = Instant::now();
        let id = start!(app, serde_json::json!({}));
        let report = ended!(app, id, Duration::from_secs(10));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "stopped before its deadline: {took:?}"
        );
        assert_eq!(report["state"], "failed", "{report}");
        let error = report["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("deadline") && error.contains("admin.replay_timeout_s = 1"),
            "{report}"
        );
        assert_eq!(report["scanned"], 3, "what it did is reported: {report}");
        assert_eq!(report["replayed"], 0, "nothing was acknowledged: {report}");

        // It remembered nothing: the next job replays all three. (What it read is remembered
        // for the other kinds: a job of another kind has nothing to read.)
        let app = web_test::init_service(App::new().configure(routes(fast))).await;
        let other = replay!(
            app,
            serde_json::json!({"kinds": ["inference_failed"], "dry_run": true})
        );
        assert_eq!(
            (other["scanned"].as_u64(), other["replayed"].as_u64()),
            (Some(0), Some(0)),
            "{other}"
        );
        let next = replay!(app, serde_json::json!({}));
        assert_eq!(next["state"], "done", "{next}");
        assert_eq!(next["replayed"], 3, "{next}");
    });
    let counts = payload_counts(&names.input, 3);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "once each: {counts:?}");
    eprintln!("a_replay_job_past_its_deadline: {:?}", started.elapsed());
}

#[test]
fn the_list_of_finished_replay_jobs_stays_bounded() {
    let started = Instant::now();
    let names = Names::new("replay-prune", 1);
    let mut cfg = replay_config(&names);
    const WAVE: usize = 10;
    cfg.admin.replay_max_jobs = WAVE as u32;
    let state = replay_only_state(cfg);
    let replays = state.replays.clone();
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        // The 5 oldest one after the other, then KEEP_FINISHED more in waves. An empty
        // dead-letter topic: each job ends at once.
        let mut oldest = Vec::new();
        for _ in 0..5 {
            let id = start!(app, serde_json::json!({"dry_run": true}));
            let report = ended!(app, id, Duration::from_secs(10));
            assert_eq!(report["state"], "done", "{report}");
            oldest.push(id);
        }
        let mut newest = Vec::new();
        while newest.len() < KEEP_FINISHED {
            let n = WAVE.min(KEEP_FINISHED - newest.len());
            let mut wave = Vec::new();
            for _ in 0..n {
                wave.push(start!(app, serde_json::json!({"dry_run": true})));
            }
            for id in &wave {
                let report = ended!(app, id, Duration::from_secs(10));
                assert_eq!(report["state"], "done", "{report}");
            }
            newest.extend(wave);
        }
        assert_eq!(replays.len(), KEEP_FINISHED, "only the latest are kept");
        for id in &oldest {
            let (code, body) = call!(app, Method::GET, &format!("/replay/{id}"), None);
            assert_eq!(code, 404, "the oldest are forgotten: {body}");
            assert!(body["error"].is_string(), "{body}");
        }
        for id in &newest {
            let (code, body) = call!(app, Method::GET, &format!("/replay/{id}"), None);
            assert_eq!(code, 200, "{body}");
        }
    });
    eprintln!("the_list_of_finished_replay_jobs: {:?}", started.elapsed());
}

#[test]
fn replay_limits_of_zero_are_configuration_errors() {
    let names = Names::without_topics("replay-config");
    let base = replay_config(&names);
    let mut c = base.clone();
    c.admin.replay_max_jobs = 0;
    let e = c.validate().expect_err("replay_max_jobs = 0");
    assert_eq!(e.key, "admin.replay_max_jobs", "{e}");
    let mut c = base.clone();
    c.admin.replay_timeout_s = 0;
    let e = c.validate().expect_err("replay_timeout_s = 0");
    assert_eq!(e.key, "admin.replay_timeout_s", "{e}");
    assert_eq!(
        (base.admin.replay_max_jobs, base.admin.replay_timeout_s),
        (2, 3600),
        "the defaults"
    );
}

#[test]
fn in_exactly_once_mode_a_replay_job_publishes_and_remembers_inside_transactions() {
    let names = Names::without_topics("replay-eos");
    create_topics(&[(&names.input, 2), (&names.output, 2), (&names.dlq, 2)]);
    let mut cfg = replay_config(&names);
    cfg.kafka.delivery = clickpipe_actors::config::Delivery::ExactlyOnce;
    write_dead_letters(&names.dlq, "eos-", 40, "invalid_event");
    let group = replay_group(&cfg);
    let state = replay_only_state(cfg.clone());
    let again = replay_only_state(cfg);
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        let first = replay!(app, serde_json::json!({}));
        assert_eq!(
            (first["state"].as_str(), first["replayed"].as_u64()),
            (Some("done"), Some(40)),
            "{first}"
        );
        // A fresh process: the memory was committed with the transaction.
        let app = web_test::init_service(App::new().configure(routes(again))).await;
        let second = replay!(app, serde_json::json!({}));
        assert_eq!(second["replayed"], 0, "nothing replayed twice: {second}");
    });
    let mut committed = Collector::read_committed(&brokers(), &names.input);
    assert!(
        committed.until(WAIT, |m| m.len() >= 40),
        "a read_committed reader sees the re-publications"
    );
    let counts = payload_counts(&names.input, 40);
    assert!(
        counts.len() == 40 && counts.values().all(|n| *n == 1),
        "each dead letter once: {counts:?}"
    );
    // Transactional writes leave a commit marker after them in each partition they touched:
    // the partitions hold more offsets than records.
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("consumer");
    let offsets: i64 = (0..2)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(
                &consumer,
                &names.input,
                p,
                Duration::from_secs(10),
            )
            .map(|(low, high)| high - low)
            .expect("watermarks")
        })
        .sum();
    assert!(
        offsets > 40,
        "{offsets} offsets for 40 records: not transactional"
    );
    let remembered: i64 = committed_offsets(&brokers(), &group, &names.dlq)
        .into_iter()
        .map(|o| o.unwrap_or(0))
        .sum();
    assert_eq!(remembered, 40, "the memory in group {group}");
}
