//! A model batch that fails because of one instance is split until that instance fails alone:
//! a 4xx dead-letters only the bad event, and an input the model answers with HTTP 500 (while
//! `/ping` answers) is dead-lettered after the retry budget instead of stalling the partition
//! under the `pause` policy. Against a real HTTP model server that refuses instances by their
//! ZIP income (seeded in the real Redis), on the real broker.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use clickpipe::service::config::Config;
use clickpipe_actors::config::UnavailablePolicy;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
/// An instance with this ZIP income gets the batch a 400.
const REFUSED_INCOME: &str = "400";
/// An instance with this ZIP income gets the batch a 500.
const CRASHING_INCOME: &str = "500";

/// A model that answers 400 or 500 to any batch holding a poisoned instance, else scores it.
struct PickyModel {
    url: String,
    calls: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl PickyModel {
    fn start() -> PickyModel {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let (handle, _thread) = serve_in_thread(move || {
            HttpServer::new(move || {
                let counter = counter.clone();
                App::new()
                    .route(
                        "/ping",
                        web::get().to(|| async { HttpResponse::Ok().finish() }),
                    )
                    .route(
                        "/invocations",
                        web::post().to(move |body: web::Json<Value>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            async move { answer(&body) }
                        }),
                    )
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run()
        });
        PickyModel { url, calls, handle }
    }
}

impl Drop for PickyModel {
    fn drop(&mut self) {
        let h = self.handle.clone();
        let _ = std::thread::spawn(move || actix_rt::System::new().block_on(h.stop(false))).join();
    }
}

fn answer(body: &Value) -> HttpResponse {
    let instances = body["instances"].as_array().cloned().unwrap_or_default();
    let income = |i: &Value| i["zip_median_income"].as_f64().unwrap_or(0.0);
    if instances.iter().any(|i| income(i) == 400.0) {
        return HttpResponse::BadRequest().json(json!({"error": "instance refused"}));
    }
    if instances.iter().any(|i| income(i) == 500.0) {
        return HttpResponse::InternalServerError().body("model crashed on an instance");
    }
    let predictions: Vec<Value> = instances.iter().map(|_| json!({"score": 0.5})).collect();
    HttpResponse::Ok().json(json!({"predictions": predictions, "model_version": "picky"}))
}

/// 64 events of one partition, the `bad`-th with the poisoned ZIP `99999`.
fn batch_with_one_bad(bad: usize) -> Vec<(String, Vec<u8>)> {
    (0..64)
        .map(|i| {
            let zip = (i == bad).then_some("99999");
            let ts = format!("2026-06-01T10:{:02}:{:02}Z", i / 60, i % 60);
            (
                "k".to_string(),
                event(&format!("e{i}"), &format!("s{i}"), &ts, "page_view", zip),
            )
        })
        .collect()
}

/// The test's topic, the ZIP `99999` seeded with `income` (what the picky model fails on), the
/// picky model, and a config that sends it one full batch of 64.
fn picky_setup(test: &str, income: &str) -> (Names, PickyModel, Config) {
    let names = Names::new(test, 1);
    seed_zip(&names.zip_prefix, "99999", income, "America/New_York");
    let model = PickyModel::start();
    let mut cfg = config(&names, &model.url);
    cfg.model.max_batch_size = 64;
    cfg.model.max_wait_ms = Millis(2_000);
    (names, model, cfg)
}

#[test]
fn a_4xx_for_one_instance_dead_letters_that_event_alone() {
    let (names, model, cfg) = picky_setup("bisect-4xx", REFUSED_INCOME);
    let running = run_pipeline(cfg);
    produce(&names.input, &batch_with_one_bad(17));
    let out = consume(&names.output, 63, WAIT);
    let dead = consume(&names.dlq, 1, WAIT);
    std::thread::sleep(Duration::from_secs(1));
    running.stop();

    assert_eq!((out.len(), dead.len()), (63, 1));
    assert_eq!(json(&dead[0])["event_id"], "e17");
    assert_eq!(
        header(&dead[0], "clickpipe.error.kind").as_deref(),
        Some("inference_failed")
    );
    assert!(header(&dead[0], "clickpipe.error.message").is_some_and(|m| m.contains("400")));
    // 1 + 2·log2(64) calls at most for one bad instance.
    let calls = model.calls.load(Ordering::SeqCst);
    assert!(calls <= 13, "{calls} model calls");
}

#[test]
fn a_500_for_one_instance_under_pause_dead_letters_it_after_the_budget_instead_of_stalling() {
    let (names, _model, mut cfg) = picky_setup("bisect-5xx", CRASHING_INCOME);
    cfg.model.on_unavailable = UnavailablePolicy::Pause;
    cfg.model.retry_budget_ms = Millis(1_000);
    cfg.model.backoff_initial_ms = Millis(20);
    cfg.model.backoff_max_ms = Millis(100);
    let running = run_pipeline(cfg);
    let started = Instant::now();
    produce(&names.input, &batch_with_one_bad(40));
    let out = consume(&names.output, 63, WAIT);
    let dead = consume(&names.dlq, 1, WAIT);
    let took = started.elapsed();
    let breaker_open = running.status.not_ready_reasons();
    running.stop();

    assert_eq!((out.len(), dead.len()), (63, 1), "after {took:?}");
    assert_eq!(json(&dead[0])["event_id"], "e40");
    assert!(header(&dead[0], "clickpipe.error.message").is_some_and(|m| m.contains("500")));
    assert!(breaker_open.is_empty(), "the model is up: {breaker_open:?}");
}

#[test]
fn a_model_answering_500_to_everything_under_pause_is_waited_out_without_dead_letters() {
    // No call succeeds: nothing proves any one input is at fault, so this is an outage.
    let names = Names::new("bisect-outage", 1);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.model.on_unavailable = UnavailablePolicy::Pause;
    cfg.model.retry_budget_ms = Millis(500);
    cfg.model.backoff_max_ms = Millis(200);
    cfg.model.circuit_open_ms = Millis(300);
    let running = run_pipeline(cfg);
    model.failing.store(true, Ordering::SeqCst);
    produce(&names.input, &events("o", 40, 4));
    std::thread::sleep(Duration::from_secs(4));
    model.failing.store(false, Ordering::SeqCst);
    let out = consume(&names.output, 40, WAIT);
    let dead = settled_after_a_second(&names.dlq);
    running.stop();

    assert_eq!(out.len(), 40);
    assert!(dead.is_empty(), "{} dead letters", dead.len());
}
