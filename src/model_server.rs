//! The reference model server (`clickpipe model-server`).
//!
//! Speaks the SageMaker container convention:
//!
//! - `GET /ping` → `200 {"status":"ok"}`;
//! - `POST /invocations` with `Content-Type: application/json` and a body
//!   `{"instances": [{feature: value, …}, …]}` → `200 {"predictions": [{"score": s}, …],
//!   "model_version": "…"}`, one prediction per instance, in order.
//!
//! The model is a purchase-propensity logistic regression read from a JSON file (see [`Model`]).
//! Every error is answered with a JSON body `{"error": "…"}` that names the problem: 400 for a
//! malformed request, 413 for a body over 8 MiB, 415 for a non-JSON content type, 404 for an unknown
//! route and 405 for a wrong method.

use clickpipe_actors::event::json_type;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest request body accepted by `/invocations`.
const MAX_BODY_BYTES: usize = 8 << 20;

/// The only model kind this server knows.
const KIND_LOGISTIC_REGRESSION: &str = "logistic_regression";

/// The model parameters file, as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    model_version: String,
    kind: String,
    intercept: f64,
    weights: BTreeMap<String, f64>,
    #[serde(default)]
    scales: BTreeMap<String, Scale>,
}

/// Standardisation of one feature: `(x - center) / scale`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scale {
    center: f64,
    scale: f64,
}

/// One term of the linear predictor.
#[derive(Debug, Clone)]
struct Term {
    name: String,
    weight: f64,
    center: f64,
    scale: f64,
}

/// A purchase-propensity logistic regression.
///
/// `score = sigmoid(intercept + Σ weight · (x − center) / scale)` over the features named in
/// `weights`; `center` and `scale` come from the optional `scales` map (default 0 and 1).
///
/// The parameters file looks like:
///
/// ```json
/// {"model_version": "propensity-lr-2026.11.1", "kind": "logistic_regression",
///  "intercept": -3.1, "weights": {"event_type_purchase": 3.2, "session_event_count": 0.45},
///  "scales": {"session_event_count": {"center": 4.0, "scale": 6.0}}}
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    version: String,
    intercept: f64,
    terms: Vec<Term>,
}

impl Model {
    /// Reads and validates a model parameters file. The error names the file and the problem
    /// (unreadable, not JSON, unknown key, unknown kind, a non-finite weight, a zero scale…).
    pub fn load(path: &Path) -> anyhow::Result<Model> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        Model::parse(&text).with_context(|| format!("invalid model file {}", path.display()))
    }

    /// Parses and validates the JSON text of a parameters file.
    fn parse(text: &str) -> anyhow::Result<Model> {
        let file: ModelFile = serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if file.model_version.trim().is_empty() {
            bail!("`model_version` must not be empty");
        }
        if file.kind != KIND_LOGISTIC_REGRESSION {
            bail!(
                "`kind` is {:?}; only {KIND_LOGISTIC_REGRESSION:?} is supported",
                file.kind
            );
        }
        if !file.intercept.is_finite() {
            bail!("`intercept` must be a finite number");
        }
        if file.weights.is_empty() {
            bail!("`weights` must name at least one feature");
        }
        if let Some(name) = file.scales.keys().find(|k| !file.weights.contains_key(*k)) {
            bail!("`scales` has feature `{name}` that has no weight in `weights`");
        }
        let mut terms = Vec::with_capacity(file.weights.len());
        for (name, weight) in &file.weights {
            if name.is_empty() {
                bail!("`weights` has an empty feature name");
            }
            if !weight.is_finite() {
                bail!("weight of feature `{name}` must be a finite number");
            }
            let scale = file.scales.get(name).copied().unwrap_or(Scale {
                center: 0.0,
                scale: 1.0,
            });
            if !scale.center.is_finite() {
                bail!("`scales.{name}.center` must be a finite number");
            }
            if !scale.scale.is_finite() || scale.scale == 0.0 {
                bail!("`scales.{name}.scale` must be a finite, non-zero number");
            }
            terms.push(Term {
                name: name.clone(),
                weight: *weight,
                center: scale.center,
                scale: scale.scale,
            });
        }
        Ok(Model {
            version: file.model_version,
            intercept: file.intercept,
            terms,
        })
    }

    /// The `model_version` of the parameters file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Scores one instance: the purchase probability in (0, 1).
    ///
    /// Feature values may be numbers, booleans (true = 1, false = 0), numeric strings, or null
    /// (the feature contributes nothing, as if it sat at its center). A feature the model weighs
    /// that is absent from the instance, or a value of any other type, is an error naming the
    /// feature. Features the model does not know are ignored.
    pub fn score(&self, instance: &Map<String, Value>) -> Result<f64, String> {
        let mut z = self.intercept;
        for term in &self.terms {
            let x = match instance.get(&term.name) {
                None => return Err(format!("feature `{}` is missing", term.name)),
                Some(Value::Null) => continue,
                Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                    format!("feature `{}` is not a representable number: {n}", term.name)
                })?,
                Some(Value::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        format!(
                            "feature `{}` must be a number, boolean or null, got the string {s:?}",
                            term.name
                        )
                    })?,
                Some(other) => {
                    return Err(format!(
                        "feature `{}` must be a number, boolean or null, got a {}",
                        term.name,
                        json_type(other)
                    ))
                }
            };
            if !x.is_finite() {
                return Err(format!("feature `{}` is not a finite number", term.name));
            }
            z += term.weight * (x - term.center) / term.scale;
        }
        Ok(sigmoid(z))
    }
}

/// Numerically stable logistic function.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

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
    use super::*;
    use actix_web::http::header::ContentType;
    use actix_web::test as atest;
    use serde_json::json;

    const MODEL_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.json");

    fn shipped() -> Model {
        Model::load(Path::new(MODEL_PATH)).expect("config/model.json loads")
    }

    /// A typical mid-funnel instance with every feature the shipped model weighs.
    fn instance() -> Map<String, Value> {
        let v = json!({
            "hour_of_day": 14, "day_of_week": 2, "is_weekend": false, "local_time_known": true,
            "zip_median_income": 68000.0, "zip_known": true, "session_event_count": 3,
            "seconds_since_prev_event": 25.0, "session_duration_s": 80.0,
            "event_type_page_view": 1, "event_type_product_view": 0, "event_type_search": 0,
            "event_type_add_to_cart": 0, "event_type_remove_from_cart": 0,
            "event_type_checkout": 0, "event_type_purchase": 0, "event_type_other": 0,
            "device_mobile": 1, "device_desktop": 0, "device_tablet": 0, "device_other": 0
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn with(mut m: Map<String, Value>, pairs: &[(&str, Value)]) -> Map<String, Value> {
        for (k, v) in pairs {
            m.insert((*k).to_string(), v.clone());
        }
        m
    }

    #[test]
    fn shipped_model_weighs_every_feature_the_pipeline_computes() {
        use clickpipe_actors::event::{decode, Limits};
        use clickpipe_actors::features::{compute, ZipInfo};
        use clickpipe_actors::session::advance;

        let e = decode(
            br#"{"event_id":"e","user_id":"u","session_id":"s","timestamp":"2026-06-05T20:00:00Z","event_type":"add_to_cart","device":"mobile","zip":"10001"}"#,
            &Limits::new(1 << 20),
            chrono::DateTime::parse_from_rfc3339("2026-06-05T21:00:00Z")
                .expect("time")
                .into(),
        )
        .expect("event");
        let zip = ZipInfo::from_fields(Some("72000"), Some("America/New_York"));
        let snap = advance(None, e.timestamp.timestamp_millis(), 1_800_000).1;
        let features =
            serde_json::to_value(compute(&e, Some(&zip), &snap, 60_000.0)).expect("json");
        let Value::Object(features) = features else {
            panic!("features are an object")
        };

        let model = shipped();
        assert_eq!(model.version(), "propensity-lr-2026.11.1");
        let weighed: Vec<&str> = model.terms.iter().map(|t| t.name.as_str()).collect();
        for name in features.keys() {
            assert!(
                weighed.contains(&name.as_str()),
                "no weight for feature `{name}`"
            );
        }
        for name in &weighed {
            assert!(
                features.contains_key(*name),
                "model weighs unknown feature `{name}`"
            );
        }
        // The pipeline's own feature vector (with a null gap on the first event) scores fine.
        let s = model.score(&features).expect("scores");
        assert!(s > 0.0 && s < 1.0);
    }

    #[test]
    fn scores_move_in_the_expected_direction() {
        let m = shipped();
        let score = |pairs: &[(&str, Value)]| m.score(&with(instance(), pairs)).expect("score");

        let counts: Vec<f64> = [1, 3, 8, 20]
            .iter()
            .map(|c| score(&[("session_event_count", json!(c))]))
            .collect();
        assert!(
            counts.windows(2).all(|w| w[0] < w[1]),
            "session_event_count: {counts:?}"
        );

        let incomes: Vec<f64> = [30_000.0, 60_000.0, 120_000.0]
            .iter()
            .map(|i| score(&[("zip_median_income", json!(i))]))
            .collect();
        assert!(
            incomes.windows(2).all(|w| w[0] < w[1]),
            "income: {incomes:?}"
        );

        let funnel: Vec<f64> = ["page_view", "add_to_cart", "checkout", "purchase"]
            .iter()
            .map(|t| {
                score(&[
                    ("event_type_page_view", json!(0)),
                    (format!("event_type_{t}").as_str(), json!(1)),
                ])
            })
            .collect();
        assert!(funnel.windows(2).all(|w| w[0] < w[1]), "funnel: {funnel:?}");

        let mobile = score(&[]);
        let desktop = score(&[("device_mobile", json!(0)), ("device_desktop", json!(1))]);
        assert!(desktop > mobile);
        assert!(score(&[("is_weekend", json!(true))]) > score(&[("is_weekend", json!(false))]));
        assert!(score(&[("hour_of_day", json!(20))]) > score(&[("hour_of_day", json!(4))]));
    }

    #[test]
    fn feature_values_accept_numbers_bools_nulls_and_numeric_strings() {
        let m = shipped();
        let base = m.score(&instance()).expect("base");
        assert!(base > 0.0 && base < 1.0);
        // bool true == 1, numeric string == number
        let b = m
            .score(&with(instance(), &[("event_type_page_view", json!(true))]))
            .expect("b");
        assert_eq!(b, base);
        let s = m
            .score(&with(instance(), &[("session_event_count", json!(" 3 "))]))
            .expect("s");
        assert_eq!(s, base);
        // null counts as the center: same as passing the center itself.
        let n = m
            .score(&with(instance(), &[("hour_of_day", Value::Null)]))
            .expect("null");
        let c = m
            .score(&with(instance(), &[("hour_of_day", json!(12))]))
            .expect("center");
        assert!((n - c).abs() < 1e-12);
        // unknown extras ignored
        let x = m
            .score(&with(instance(), &[("favourite_colour", json!("blue"))]))
            .expect("x");
        assert_eq!(x, base);

        let mut missing = instance();
        missing.remove("zip_known");
        assert!(m
            .score(&missing)
            .expect_err("missing")
            .contains("`zip_known` is missing"));
        let bad = with(instance(), &[("device_mobile", json!("yes"))]);
        assert!(m
            .score(&bad)
            .expect_err("string")
            .contains("`device_mobile`"));
        let arr = with(instance(), &[("hour_of_day", json!([1]))]);
        assert!(m.score(&arr).expect_err("array").contains("got a array"));
    }

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(1000.0) <= 1.0 && sigmoid(1000.0) > 0.999);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-300);
        assert!(!sigmoid(-1000.0).is_nan());
    }

    #[test]
    fn loading_rejects_bad_files_naming_the_file_and_problem() {
        let cases = [
            ("not json", "expected"),
            (
                r#"{"model_version":"v","kind":"tree","intercept":0,"weights":{"a":1}}"#,
                "`kind`",
            ),
            (
                r#"{"model_version":"","kind":"logistic_regression","intercept":0,"weights":{"a":1}}"#,
                "model_version",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{}}"#,
                "at least one",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"scales":{"a":{"center":0,"scale":0}}}"#,
                "`scales.a.scale`",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"scales":{"b":{"center":0,"scale":1}}}"#,
                "`b`",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1e999}}"#,
                "",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"bias":2}"#,
                "bias",
            ),
        ];
        let dir = std::env::temp_dir().join(format!("clickpipe-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        for (i, (text, needle)) in cases.iter().enumerate() {
            let path = dir.join(format!("bad-{i}.json"));
            std::fs::write(&path, text).expect("write");
            let err = format!("{:#}", Model::load(&path).expect_err(text));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(needle), "case {i}: {err}");
        }
        let missing = dir.join("absent.json");
        let err = format!("{:#}", Model::load(&missing).expect_err("absent"));
        assert!(err.contains("absent.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
