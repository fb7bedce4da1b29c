//! The admin API's partition control on a running pipeline over the real broker: pause stops
//! consumption, resume brings it back, seek by offset and by timestamp replays what was read.

mod common;

use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::test as web_test;
use actix_web::App;
use clickpipe::service::admin::routes;
use common::*;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "test-admin-token";

/// Outputs per event id among the collected messages.
fn counts(c: &Collector) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for msg in &c.messages {
        let id = json(msg)["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

#[test]
fn pause_resume_and_seek_change_what_is_consumed() {
    let names = Names::new("admin-control", 1);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.admin.token = Some(TOKEN.into());
    let running = run_pipeline(cfg.clone());
    let deadline = Instant::now() + WAIT;
    while running.status.partitions().is_empty() {
        assert!(Instant::now() < deadline, "partition 0 never assigned");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = admin_state(&running, cfg);
    let mut out = Collector::new(&names.output);
    let (group, input) = (names.group.clone(), names.input.clone());

    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        let post = |uri: &str, body: Option<&str>| {
            let mut r = web_test::TestRequest::post()
                .uri(uri)
                .insert_header(("Authorization", format!("Bearer {TOKEN}")));
            if let Some(b) = body {
                r = r
                    .insert_header(("Content-Type", "application/json"))
                    .set_payload(b.to_string());
            }
            r.to_request()
        };

        let first = events("a", 10, 3);
        produce(&names.input, &first);
        assert_eq!(out.event_ids(10, WAIT).len(), 10, "the first 10 come out");

        // Paused: nothing more is consumed.
        let resp = web_test::call_service(&app, post("/partitions/0/pause", None)).await;
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = web_test::read_body_json(resp).await;
        assert_eq!(body["status"]["paused"], true, "{body}");
        let second = events("b", 10, 3);
        produce(&names.input, &second);
        let leaked = out.until(Duration::from_secs(4), |m| m.len() > 10);
        assert!(
            !leaked,
            "records were consumed while the partition was paused"
        );

        // Resumed: the 10 held back come out.
        let resp = web_test::call_service(&app, post("/partitions/0/resume", None)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(out.event_ids(20, WAIT).len(), 20, "resume brings the rest");

        // Seek to offset 0: all 20 are processed again.
        let resp =
            web_test::call_service(&app, post("/partitions/0/seek", Some(r#"{"offset": 0}"#)))
                .await;
        assert_eq!(resp.status(), 200);
        assert!(
            out.until(WAIT, |m| m.len() >= 40),
            "seek to 0 replays everything"
        );
        assert!(counts(&out).values().all(|n| *n == 2), "each event twice");

        // Seek by timestamp (before every record): everything again.
        let resp = web_test::call_service(
            &app,
            post(
                "/partitions/0/seek",
                Some(r#"{"timestamp": "2000-01-01T00:00:00Z"}"#),
            ),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert!(
            out.until(WAIT, |m| m.len() >= 60),
            "seek by timestamp replays"
        );

        // Past the end: refused, naming the range; nothing is read again.
        let resp = web_test::call_service(
            &app,
            post("/partitions/0/seek", Some(r#"{"offset": 1000000000000}"#)),
        )
        .await;
        assert_eq!(resp.status(), 400);
        let body: serde_json::Value = web_test::read_body_json(resp).await;
        assert_eq!(body["field"], "offset", "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("past the end") && e.contains("0 to 20")),
            "{body}"
        );
        assert!(
            !out.until(Duration::from_secs(3), |m| m.len() > 60),
            "a refused seek replays nothing"
        );

        // A partition this instance does not own.
        let resp = web_test::call_service(&app, post("/partitions/7/pause", None)).await;
        assert_eq!(resp.status(), 404);
    });
    running.stop();
    model.stop();
    assert_eq!(
        committed_offsets(&brokers(), &group, &input),
        vec![Some(20)],
        "the refused offset is not committed"
    );
}

/// Starts a replay and waits for it to end; evaluates to its report.
macro_rules! replay {
    ($app:expr, $body:expr) => {{
        let (code, started) = call!($app, Method::POST, "/replay", Some($body));
        assert_eq!(code, 202, "{started}");
        let id = started["id"].as_str().expect("job id").to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, report) = call!($app, Method::GET, &format!("/replay/{id}"), None);
            assert_eq!(code, 200, "{report}");
            if report["state"] != "running" {
                break report;
            }
            assert!(Instant::now() < deadline, "replay never ended: {report}");
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// Config for replay tests: dead-letter after a short retry budget when the model fails.
fn replay_config(names: &Names, model: &ModelServer) -> clickpipe::service::config::Config {
    let mut cfg = config(names, &model.url);
    cfg.admin.token = Some(TOKEN.into());
    cfg.model.on_unavailable = clickpipe_actors::config::UnavailablePolicy::DeadLetter;
    cfg.model.retry_budget_ms = Millis(300);
    cfg.model.circuit_open_ms = Millis(200);
    cfg
}

#[test]
fn dead_letters_of_a_failed_model_are_replayed_into_predictions() {
    let names = Names::new("admin-replay", 2);
    let model = ModelServer::start(0);
    model
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cfg = replay_config(&names, &model);
    let running = run_pipeline(cfg.clone());
    let mut dlq = Collector::new(&names.dlq);
    let mut out = Collector::new(&names.output);
    let sent = events("r", 12, 4);
    produce(&names.input, &sent);
    assert!(
        dlq.until(WAIT, |m| m.len() >= 12),
        "all 12 dead-lettered while the model fails"
    );
    assert!(dlq
        .messages
        .iter()
        .all(|m| header(m, "clickpipe.error.kind").as_deref() == Some("inference_failed")));
    model
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);

    let state = admin_state(&running, cfg);
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        // A dry run counts without publishing.
        let dry = replay!(
            app,
            serde_json::json!({"kinds": ["inference_failed"], "dry_run": true})
        );
        assert_eq!(dry["state"], "done", "{dry}");
        assert_eq!(dry["replayed"], 12, "{dry}");
        let none = replay!(app, serde_json::json!({"kinds": ["invalid_event"]}));
        assert_eq!(
            (none["scanned"].as_u64(), none["replayed"].as_u64()),
            (Some(12), Some(0))
        );
        let report = replay!(app, serde_json::json!({"kinds": ["inference_failed"]}));
        assert_eq!(report["state"], "done", "{report}");
        assert_eq!(report["replayed"], 12, "{report}");
        assert_eq!(report["skipped"], 0, "{report}");
        let (code, _) = call!(app, Method::GET, "/replay/replay-unknown", None);
        assert_eq!(code, 404);
    });
    let ids = out.event_ids(12, WAIT);
    let want: std::collections::HashSet<String> = (0..12).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, want, "every dead-lettered event now has a prediction");
    assert!(out
        .messages
        .iter()
        .all(|m| json(m)["prediction"]["score"].is_number()));
    running.stop();
    model.stop();
}

#[test]
fn the_loop_guard_stops_a_record_that_keeps_failing() {
    let names = Names::new("admin-guard", 1);
    let model = ModelServer::start(usize::MAX);
    let mut cfg = replay_config(&names, &model);
    cfg.admin.replay_max_count = 2;
    let running = run_pipeline(cfg.clone());
    let mut dlq = Collector::new(&names.dlq);
    produce(&names.input, &events("g", 1, 1));
    assert!(dlq.until(WAIT, |m| !m.is_empty()), "first dead letter");

    let state = admin_state(&running, cfg);
    actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        let mut since = "2000-01-01T00:00:00Z".to_string();
        for round in 1..=3u64 {
            let now = chrono::Utc::now().to_rfc3339();
            let report = replay!(app, serde_json::json!({"since": since}));
            since = now;
            if round < 3 {
                assert_eq!(report["replayed"], 1, "round {round}: {report}");
                let want = round as usize + 1;
                assert!(
                    dlq.until(WAIT, |m| m.len() >= want),
                    "round {round}: the replayed record failed again"
                );
                let last = dlq.messages.last().expect("dead letter");
                assert_eq!(
                    header(last, "clickpipe.replay.count"),
                    Some(round.to_string()),
                    "the new dead letter carries the replay count"
                );
            } else {
                assert_eq!(report["replayed"], 0, "{report}");
                assert_eq!(report["skipped"], 1, "{report}");
            }
        }
        assert!(
            !dlq.until(Duration::from_secs(3), |m| m.len() > 3),
            "no fourth dead letter"
        );
    });
    running.stop();
    model.stop();
}

/// Connections Redis has accepted since it started (`INFO stats`).
fn redis_connections_received() -> u64 {
    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut conn)
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received")
}

#[test]
fn a_flood_of_readiness_probes_costs_one_dependency_probe_a_second() {
    let names = Names::new("admin-ready-flood", 1);
    let model = ModelServer::start(0);
    let cfg = config(&names, &model.url);
    let running = run_pipeline(cfg.clone());
    let state = admin_state(&running, cfg);
    let model_pings = model.pings.clone();
    let (before, pings, took) = actix_rt::System::new().block_on(async move {
        let app = web_test::init_service(App::new().configure(routes(state))).await;
        // Warm: the pool's first connection.
        let get = || {
            web_test::TestRequest::get()
                .uri("/health/ready")
                .to_request()
        };
        web_test::call_service(&app, get()).await;
        let before = redis_connections_received();
        let pings = model_pings.load(std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        for _ in 0..300 {
            let resp = web_test::call_service(&app, get()).await;
            assert!(resp.status() == 200 || resp.status() == 503);
        }
        let pings = model_pings.load(std::sync::atomic::Ordering::SeqCst) - pings;
        (before, pings, started.elapsed())
    });
    let opened = redis_connections_received() - before;
    running.stop();
    // One probe a second at most (plus other tests' connections on the shared Redis).
    let seconds = took.as_secs() as usize + 2;
    assert!(
        opened < 20 + seconds as u64,
        "{opened} Redis connections in {took:?}"
    );
    assert!(pings <= seconds, "{pings} model pings in {took:?}");
}
