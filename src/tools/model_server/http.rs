//! The HTTP side of the model server: `/ping` and `/invocations` (the SageMaker container
//! convention), JSON errors, and starting the server on a listener.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clickpipe_actors::event::json_type;
use serde::Serialize;
use serde_json::Value;

use super::model::Model;

/// Largest request body accepted by `/invocations`.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Registers `/ping`, `/invocations` and the JSON 404 default on an app:
/// `App::new().configure(configure(model))`.
pub fn configure(model: Arc<Model>) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(model))
            .service(
                web::resource("/ping")
                    .route(web::get().to(ping))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/invocations")
                    .route(web::post().to(invocations))
                    .default_service(web::to(method_not_allowed)),
            )
            .default_service(web::to(not_found));
    }
}

/// Starts the model server on `listener` (two workers). The caller awaits the returned
/// [`Server`] or spawns it, and may stop it through its handle.
pub fn start(model: Model, listener: TcpListener) -> std::io::Result<Server> {
    start_with_delay(model, listener, Duration::ZERO)
}

/// Time added to every `/invocations` call before it is answered: a slow model, for overload
/// benchmarks (`clickpipe model-server --delay-ms`).
#[derive(Debug, Clone, Copy)]
struct AddedDelay(Duration);

/// [`start`], with `delay` added to every `/invocations` call (a simulated slow model).
pub fn start_with_delay(
    model: Model,
    listener: TcpListener,
    delay: Duration,
) -> std::io::Result<Server> {
    let model = Arc::new(model);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(AddedDelay(delay)))
            .configure(configure(Arc::clone(&model)))
    })
    .workers(2)
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

/// The body of every error response.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: message })
}

async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        &format!("no route for {} {}", req.method(), req.path()),
    )
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let allowed = if req.path() == "/ping" { "GET" } else { "POST" };
    HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED)
        .insert_header(("Allow", allowed))
        .json(ErrorBody {
            error: &format!(
                "method {} is not allowed on {}; use {allowed}",
                req.method(),
                req.path()
            ),
        })
}

/// One prediction in the response.
#[derive(Serialize)]
struct Prediction {
    score: f64,
}

/// The `/invocations` response.
#[derive(Serialize)]
struct InvocationResponse<'a> {
    predictions: Vec<Prediction>,
    model_version: &'a str,
}

async fn invocations(
    req: HttpRequest,
    payload: web::Payload,
    model: web::Data<Model>,
) -> HttpResponse {
    if let Some(AddedDelay(d)) = req
        .app_data::<web::Data<AddedDelay>>()
        .map(|d| *d.get_ref())
    {
        if !d.is_zero() {
            actix_rt::time::sleep(d).await;
        }
    }
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Type must be application/json, got {essence:?}"),
            );
        }
    }
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            )
        }
        Err(_) => return too_large(),
    };
    match predict(&model, &body) {
        Ok(predictions) => HttpResponse::Ok().json(InvocationResponse {
            predictions,
            model_version: model.version(),
        }),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// Decodes an `/invocations` body and scores every instance, or says what is wrong with it.
fn predict(model: &Model, body: &[u8]) -> Result<Vec<Prediction>, String> {
    if body.is_empty() {
        return Err("request body is empty; expected {\"instances\": [...]}".into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "request body is a JSON {}, expected an object with an `instances` array",
            json_type(&value)
        ));
    };
    let instances = match obj.remove("instances") {
        None => return Err("request body has no `instances` field".into()),
        Some(Value::Array(instances)) => instances,
        Some(other) => {
            return Err(format!(
                "`instances` must be an array, got a {}",
                json_type(&other)
            ))
        }
    };
    instances
        .iter()
        .enumerate()
        .map(|(i, instance)| match instance {
            Value::Object(features) => model
                .score(features)
                .map(|score| Prediction { score })
                .map_err(|e| format!("instance {i}: {e}")),
            other => Err(format!(
                "instance {i} is a JSON {}, expected an object of features",
                json_type(other)
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::model::fixtures::{instance, shipped, with};
    use super::*;
    use actix_web::http::header::ContentType;
    use actix_web::test as atest;
    use serde_json::json;

    macro_rules! app {
        () => {
            atest::init_service(App::new().configure(configure(Arc::new(shipped())))).await
        };
    }

    async fn error_of(resp: actix_web::dev::ServiceResponse) -> (StatusCode, String) {
        let status = resp.status();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("application/json"), "content type {ct}");
        let body: Value = atest::read_body_json(resp).await;
        let msg = body["error"].as_str().expect("error field").to_string();
        (status, msg)
    }

    #[actix_web::test]
    async fn ping_answers_ok() {
        let app = app!();
        let resp =
            atest::call_service(&app, atest::TestRequest::get().uri("/ping").to_request()).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = atest::read_body_json(resp).await;
        assert_eq!(body, json!({"status": "ok"}));
    }

    #[actix_web::test]
    async fn invocations_score_every_instance_in_order() {
        let app = app!();
        let m = shipped();
        let a = instance();
        let b = with(
            instance(),
            &[
                ("event_type_page_view", json!(0)),
                ("event_type_purchase", json!(1)),
            ],
        );
        let c = with(instance(), &[("session_event_count", json!(25))]);
        let req = atest::TestRequest::post()
            .uri("/invocations")
            .insert_header(ContentType::json())
            .set_payload(serde_json::to_vec(&json!({"instances": [a, b, c]})).expect("json"))
            .to_request();
        let resp = atest::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = atest::read_body_json(resp).await;
        assert_eq!(body["model_version"], "propensity-lr-2026.11.1");
        let preds = body["predictions"].as_array().expect("predictions");
        assert_eq!(preds.len(), 3);
        for (p, inst) in preds.iter().zip([&a, &b, &c]) {
            let got = p["score"].as_f64().expect("score");
            assert!((got - m.score(inst).expect("score")).abs() < 1e-12);
        }

        let empty = atest::TestRequest::post()
            .uri("/invocations")
            .insert_header(ContentType::json())
            .set_payload(r#"{"instances": []}"#)
            .to_request();
        let body: Value = atest::read_body_json(atest::call_service(&app, empty).await).await;
        assert_eq!(body["predictions"], json!([]));
    }

    #[actix_web::test]
    async fn malformed_requests_get_a_json_error_naming_the_problem() {
        let app = app!();
        let mut missing_feature = instance();
        missing_feature.remove("device_tablet");
        let bad_value = with(instance(), &[("hour_of_day", json!("noon"))]);
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "not valid JSON"),
            ("".into(), "empty"),
            ("[1, 2]".into(), "expected an object"),
            (r#"{"inputs": []}"#.into(), "no `instances`"),
            (
                r#"{"instances": {"a": 1}}"#.into(),
                "`instances` must be an array",
            ),
            (
                json!({"instances": [instance(), 7]}).to_string(),
                "instance 1 is a JSON number",
            ),
            (
                json!({"instances": [instance(), missing_feature]}).to_string(),
                "instance 1: feature `device_tablet` is missing",
            ),
            (
                json!({"instances": [bad_value]}).to_string(),
                "instance 0: feature `hour_of_day`",
            ),
        ];
        for (body, needle) in cases {
            let req = atest::TestRequest::post()
                .uri("/invocations")
                .insert_header(ContentType::json())
                .set_payload(body.clone())
                .to_request();
            let (status, msg) = error_of(atest::call_service(&app, req).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {msg}");
            assert!(msg.contains(needle), "{body}: {msg}");
        }
    }

    #[actix_web::test]
    async fn other_errors_are_json_too() {
        let app = app!();
        let req = atest::TestRequest::get().uri("/nope").to_request();
        let (status, msg) = error_of(atest::call_service(&app, req).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(msg.contains("/nope"));

        let req = atest::TestRequest::get().uri("/invocations").to_request();
        let (status, _) = error_of(atest::call_service(&app, req).await).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let req = atest::TestRequest::post()
            .uri("/invocations")
            .insert_header(ContentType::plaintext())
            .set_payload(r#"{"instances": []}"#)
            .to_request();
        let (status, msg) = error_of(atest::call_service(&app, req).await).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(msg.contains("application/json"));

        let mut big = br#"{"instances": [], "pad": ""#.to_vec();
        big.resize(MAX_BODY_BYTES + 100, b'x');
        big.extend_from_slice(b"\"}");
        let req = atest::TestRequest::post()
            .uri("/invocations")
            .insert_header(ContentType::json())
            .set_payload(big)
            .to_request();
        let (status, msg) = error_of(atest::call_service(&app, req).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("larger than"));
    }

    #[actix_web::test]
    async fn start_serves_on_the_given_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = start(shipped(), listener).expect("start");
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::new();
        let mut resp = client
            .get(format!("http://{addr}/ping"))
            .send()
            .await
            .expect("ping");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["status"], "ok");
        let mut resp = client
            .post(format!("http://{addr}/invocations"))
            .send_json(&json!({"instances": [instance()]}))
            .await
            .expect("invoke");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["predictions"].as_array().map(Vec::len), Some(1));
        handle.stop(true).await;
    }
}
