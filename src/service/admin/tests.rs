//! Tests of the admin API's routes, without a socket.

use super::*;
use actix_web::http::StatusCode;
use actix_web::{test, App};
use serde_json::json;
use std::sync::atomic::Ordering;

fn state(token: Option<&str>) -> AdminState {
    let breaker = Arc::new(clickpipe_actors::clients::breaker::CircuitBreaker::new(
        1,
        std::time::Duration::from_secs(1),
    ));
    let mut config = crate::service::settings::load_from(
        None,
        figment::providers::Env::prefixed("CLICKPIPE_ADMIN_TEST_UNUSED__"),
    )
    .expect("defaults");
    config.admin.token = token.map(str::to_string);
    AdminState {
        stats: Arc::new(Stats::default()),
        status: Arc::new(StatusBoard::new(
            breaker,
            clickpipe_actors::status::Policies {
                model_unavailable: "pause",
                redis_unavailable: "pause",
            },
        )),
        started: Instant::now(),
        config: Arc::new(config),
        instance_id: "test-1".into(),
        pipeline: None,
        replays: Arc::new(replay::ReplayJobs::default()),
    }
}

/// [`call`] on an app whose `admin.token` is `t0ken`.
async fn call_with_token(req: test::TestRequest) -> (StatusCode, serde_json::Value) {
    call(state(Some("t0ken")), req).await
}

/// A POST to `uri` carrying the bearer token of [`call_with_token`]'s app.
fn authorized_post(uri: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri(uri)
        .insert_header(("Authorization", "Bearer t0ken"))
}

/// GET `uri` on an app over `state`: the status, the content type and the body as text.
async fn get_text(state: AdminState, uri: &str) -> (StatusCode, Option<String>, String) {
    let app = test::init_service(App::new().configure(routes(state))).await;
    let resp = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).expect("utf-8");
    (status, content_type, text)
}

async fn call(state: AdminState, req: test::TestRequest) -> (StatusCode, serde_json::Value) {
    let app = test::init_service(App::new().configure(routes(state))).await;
    let resp = test::call_service(&app, req.to_request()).await;
    let status = resp.status();
    let body = test::read_body(resp).await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[actix_web::test]
async fn live_answers_ok_and_unknown_paths_get_a_json_404() {
    let (code, body) = call(state(None), test::TestRequest::get().uri("/health/live")).await;
    assert_eq!(code, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let (code, body) = call(state(None), test::TestRequest::get().uri("/nope")).await;
    assert_eq!(code, 404);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("/nope")));
}

#[actix_web::test]
async fn status_shows_instance_config_and_latency_without_secrets() {
    let st = state(Some("very-secret-token"));
    st.stats
        .end_to_end
        .observe_duration(std::time::Duration::from_millis(3));
    let (code, body) = call(st, test::TestRequest::get().uri("/status")).await;
    assert_eq!(code, 200);
    assert_eq!(body["instance_id"], "test-1");
    assert_eq!(body["config"]["input_topic"], "clicks");
    assert_eq!(body["config"]["admin_token_set"], true);
    assert_eq!(body["latency_ms"]["end_to_end_p50"], 5.0);
    assert!(!body.to_string().contains("very-secret-token"));
}

#[actix_web::test]
async fn the_openapi_document_covers_every_route() {
    let (code, doc) = call(state(None), test::TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (path, method) in [
        ("/", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/status", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/partitions/{partition}/pause", "post"),
        ("/partitions/{partition}/resume", "post"),
        ("/partitions/{partition}/seek", "post"),
        ("/replay", "post"),
        ("/replay/{id}", "get"),
        ("/replay/{id}", "delete"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    for (schema, fields) in [
        (
            "StatusResponse",
            [
                "instance_id",
                "partitions",
                "counters",
                "latency_ms",
                "config",
            ],
        ),
        (
            "PartitionStatus",
            [
                "committed_offset",
                "position",
                "high_watermark",
                "lag",
                "in_flight",
            ],
        ),
    ] {
        let properties = &doc["components"]["schemas"][schema]["properties"];
        for field in fields {
            assert!(properties[field].is_object(), "{schema}.{field}");
        }
    }
}

#[actix_web::test]
async fn the_status_page_is_self_contained_html() {
    let (code, _, html) = get_text(state(None), "/").await;
    assert_eq!(code, 200);
    assert!(html.contains("<canvas"), "charts");
    assert!(html.contains("fetch(\"status\")"), "reads /status");
    for external in ["http://", "https://", "//cdn"] {
        assert!(
            !html.contains(external),
            "loads nothing from elsewhere ({external})"
        );
    }
}

#[actix_web::test]
async fn replay_requests_are_authorized_and_validated() {
    let (code, _) = call(state(None), test::TestRequest::post().uri("/replay")).await;
    assert_eq!(code, 403);
    let (code, _) = call_with_token(test::TestRequest::post().uri("/replay")).await;
    assert_eq!(code, 401);
    for (payload, field) in [
        (r#"{"kinds": ["inference_failed", 3]}"#, "kinds[1]"),
        (r#"{"kinds": ["nope"]}"#, "kinds"),
    ] {
        let (code, body) = call_with_token(authorized_post("/replay").set_payload(payload)).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let (code, _) = call(state(None), test::TestRequest::get().uri("/replay/none")).await;
    assert_eq!(code, 404);
    let (code, _) = call(state(None), test::TestRequest::delete().uri("/replay/none")).await;
    assert_eq!(code, 403);
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let st = state(None);
    st.stats.outputs.fetch_add(7, Ordering::Relaxed);
    st.stats.model_batch_size.observe(16.0);
    let (code, ct, text) = get_text(st, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        ct.as_deref().is_some_and(|ct| ct.starts_with("text/plain")),
        "{ct:?}"
    );
    assert!(text.contains("clickpipe_processed_total 7\n"), "{text}");
    assert!(text.contains("clickpipe_dead_letters_total{kind=\"invalid_event\"} 0\n"));
    assert!(text.contains("clickpipe_model_batch_size_bucket{le=\"16\"} 1\n"));
    assert!(text.contains("# TYPE clickpipe_end_to_end_latency_seconds histogram\n"));
    assert!(text.contains("clickpipe_stage_batch_duration_seconds_count{stage=\"emit\"} 0\n"));
    assert!(text.contains("clickpipe_circuit_breaker_state{state=\"closed\"} 1\n"));
    // Every line is a comment or `name{labels} value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
}

#[actix_web::test]
async fn mutating_endpoints_need_the_token_and_are_forbidden_without_one() {
    let (code, body) = call(
        state(None),
        test::TestRequest::post().uri("/partitions/0/pause"),
    )
    .await;
    assert_eq!(code, 403);
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("admin.token")));
    let (code, _) = call_with_token(test::TestRequest::post().uri("/partitions/0/pause")).await;
    assert_eq!(code, 401);
    let (code, _) = call_with_token(
        test::TestRequest::post()
            .uri("/partitions/0/resume")
            .insert_header(("Authorization", "Bearer wrong")),
    )
    .await;
    assert_eq!(code, 401);
    // Authorized, but no pipeline behind this test app.
    let (code, _) = call_with_token(authorized_post("/partitions/0/resume")).await;
    assert_eq!(code, 503);
}

#[actix_web::test]
async fn bad_seek_requests_get_a_400_naming_the_field() {
    let authorized = |body: &str| {
        authorized_post("/partitions/0/seek")
            .insert_header(("Content-Type", "application/json"))
            .set_payload(body.to_string())
    };
    for (body, field) in [
        (r#"{"ofset": 5}"#, "ofset"),
        (r#"{"offset": "five"}"#, "offset"),
        (
            r#"{"offset": 5, "timestamp": "2026-01-01T00:00:00Z"}"#,
            "offset",
        ),
        (r#"{}"#, "offset"),
        (r#"{"offset": -1}"#, "offset"),
        (r#"{"timestamp": "yesterday"}"#, "timestamp"),
    ] {
        let (code, resp) = call_with_token(authorized(body)).await;
        assert_eq!(code, 400, "{body}: {resp}");
        assert_eq!(resp["field"], field, "{body}: {resp}");
    }
    let (code, resp) = call_with_token(authorized("{not json")).await;
    assert_eq!(code, 400, "{resp}");
    let (code, resp) = call_with_token(authorized_post("/partitions/zero/pause")).await;
    assert_eq!(code, 400, "{resp}");
    assert_eq!(resp["field"], "partition");
    let big = format!(
        r#"{{"offset": 1, "pad": "{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let (code, _) = call_with_token(authorized(&big)).await;
    assert_eq!(code, 413);
}
