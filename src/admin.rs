//! The admin HTTP API (actix-web on `admin.listen`). This first cut serves liveness and a status
//! summary; readiness, metrics and replay build on it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpResponse};
use clickpipe_actors::stats::Stats;
use clickpipe_actors::status::StatusBoard;
use serde_json::json;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The pipeline's counters.
    pub stats: Arc<Stats>,
    /// Per-partition state and the circuit breaker.
    pub status: Arc<StatusBoard>,
    /// When the service started.
    pub started: Instant,
}

/// Registers the routes; the app is built by a function so tests need no socket.
pub fn routes(state: AdminState) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(state))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/status", web::get().to(status))
            .default_service(web::to(not_found));
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready unless a partition failed (restart intensity exceeded). Checks of Redis, the model and
/// assignment come with the full admin API.
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let reasons = state.status.not_ready_reasons();
    if reasons.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "not_ready", "reasons": reasons}))
    }
}

async fn status(state: web::Data<AdminState>) -> HttpResponse {
    let s = &state.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "partitions": state.status.partitions(),
        "circuit_breaker": state.status.breaker.state().as_str(),
        "policies": &state.status.policies,
        "root_restarts_in_window": state.status.root_restarts(),
        "counters": {
            "records_in": load(&s.records_in),
            "outputs": load(&s.outputs),
            "dead_letters": {
                "invalid_event": load(&s.invalid_event),
                "lookup_failed": load(&s.lookup_failed),
                "inference_failed": load(&s.inference_failed),
                "output_failed": load(&s.output_failed),
            },
            "model_batches": load(&s.model_batches),
            "model_events": load(&s.model_events),
        }
    }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "no such endpoint"}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};

    #[actix_web::test]
    async fn live_answers_ok_and_unknown_paths_get_a_json_404() {
        let breaker = Arc::new(clickpipe_actors::clients::breaker::CircuitBreaker::new(
            1,
            std::time::Duration::from_secs(1),
        ));
        let state = AdminState {
            stats: Arc::new(Stats::default()),
            status: Arc::new(StatusBoard::new(
                breaker,
                clickpipe_actors::status::Policies {
                    model_unavailable: "pause",
                    redis_unavailable: "pause",
                },
            )),
            started: Instant::now(),
        };
        let app = test::init_service(App::new().configure(routes(state))).await;
        let resp = test::call_service(
            &app,
            test::TestRequest::get().uri("/health/live").to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body, json!({"status": "ok"}));
        let resp =
            test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
        assert_eq!(resp.status(), 404);
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert!(body.get("error").is_some());
    }
}
