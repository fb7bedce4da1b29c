//! The AWS paths, against local stand-ins that verify SigV4 with their own implementation (HMAC
//! and SHA-256 from OpenSSL, following AWS's signing steps), with credentials fetched from a
//! local ECS container-credentials endpoint:
//! - `model.kind = "sagemaker"`: the pipeline calls a local InvokeEndpoint server;
//! - `kafka.auth = "msk_iam"`: the OAUTHBEARER token librdkafka gets is a presigned
//!   `kafka-cluster:Connect` URL whose signature checks out.

#![cfg(feature = "aws")]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::*;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};

/// The tests set the process's AWS_* variables: one at a time.
static ENV: Mutex<()> = Mutex::new(());

const ACCESS_KEY: &str = "ASIATESTCLICKPIPE";
const SECRET_KEY: &str = "c2VjcmV0LWtleS1mb3ItY2xpY2twaXBlLXRlc3Rz";
const SESSION_TOKEN: &str = "session-token-from-the-container-endpoint";
const CONTAINER_AUTH: &str = "container-auth-token";
const REGION: &str = "eu-west-1";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(&hash(MessageDigest::sha256(), b).expect("sha256"))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let key = PKey::hmac(key).expect("key");
    let mut s = Signer::new(MessageDigest::sha256(), &key).expect("signer");
    s.update(data.as_bytes()).expect("update");
    s.sign_to_vec().expect("hmac")
}

/// Verifies a request's SigV4 `Authorization` header; Err says what does not match.
fn verify(req: &HttpRequest, body: &[u8], secret: &str) -> Result<(), String> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no authorization header")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let parts: BTreeMap<&str, &str> = rest.split(", ").filter_map(|p| p.split_once('=')).collect();
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let signed_headers = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let signature = parts.get("Signature").ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != ACCESS_KEY || scope[2] != REGION || scope[3] != "sagemaker" {
        return Err(format!("unexpected credential scope {credential}"));
    }
    let header = |name: &str| -> Result<String, String> {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .ok_or(format!("signed header {name} missing"))
    };
    let amz_date = header("x-amz-date")?;
    if header("x-amz-security-token")? != SESSION_TOKEN {
        return Err("wrong security token".into());
    }
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        canonical_headers.push_str(&format!("{name}:{}\n", header(name)?));
    }
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
        sha256(body)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope[1..].join("/"),
        sha256(canonical.as_bytes())
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), scope[1]);
    for part in &scope[2..] {
        key = hmac(&key, part);
    }
    let expected = hex(&hmac(&key, &to_sign));
    if &expected != signature {
        return Err(format!(
            "signature mismatch (canonical request:\n{canonical})"
        ));
    }
    Ok(())
}

struct FakeAws {
    url: String,
    invocations: Arc<AtomicUsize>,
    rejected: Arc<Mutex<Vec<String>>>,
    _server: (actix_web::dev::ServerHandle, std::thread::JoinHandle<()>),
}

/// The container-credentials endpoint (`/creds`) and a SageMaker runtime
/// (`/endpoints/{name}/invocations`) verifying signatures made with `secret`.
fn fake_aws(secret: &'static str) -> FakeAws {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let invocations = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let (calls, refusals) = (invocations.clone(), rejected.clone());
    let server = serve_in_thread(move || {
        HttpServer::new(move || {
            let calls = calls.clone();
            let refusals = refusals.clone();
            App::new()
                .route(
                    "/creds",
                    web::get().to(|req: HttpRequest| async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok());
                        if auth != Some(CONTAINER_AUTH) {
                            return HttpResponse::Unauthorized().finish();
                        }
                        let expires = chrono::Utc::now() + chrono::Duration::hours(6);
                        HttpResponse::Ok().json(json!({
                            "AccessKeyId": ACCESS_KEY,
                            "SecretAccessKey": SECRET_KEY,
                            "Token": SESSION_TOKEN,
                            "Expiration": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        }))
                    }),
                )
                .route(
                    "/endpoints/{name}/invocations",
                    web::post().to(move |req: HttpRequest, body: web::Bytes| {
                        let calls = calls.clone();
                        let refusals = refusals.clone();
                        async move {
                            if req.match_info().get("name") != Some("clicks-propensity") {
                                return HttpResponse::NotFound().finish();
                            }
                            if let Err(why) = verify(&req, &body, secret) {
                                refusals.lock().expect("refusals").push(why);
                                return HttpResponse::Forbidden().json(json!({
                                    "message": "The request signature we calculated does not match"
                                }));
                            }
                            calls.fetch_add(1, Ordering::SeqCst);
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let n = v["instances"].as_array().map_or(0, Vec::len);
                            HttpResponse::Ok().json(json!({
                                "predictions": vec![json!({"score": 0.25}); n],
                                "model_version": "sagemaker-test-1",
                            }))
                        }
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run()
    });
    FakeAws {
        url,
        invocations,
        rejected,
        _server: server,
    }
}

/// The test config with the model at a SageMaker endpoint served from `url`.
fn sagemaker_config(names: &Names, url: &str) -> clickpipe::service::config::Config {
    let mut cfg = config(names, "http://127.0.0.1:1");
    cfg.model.kind = clickpipe_actors::config::ModelKind::Sagemaker;
    cfg.model.sagemaker_endpoint = "clicks-propensity".into();
    cfg.model.region = REGION.into();
    cfg.model.sagemaker_url = url.to_string();
    cfg.validate().expect("valid sagemaker config");
    cfg
}

/// Points the process's AWS credentials at the container-credentials endpoint of the fake at
/// `aws_url`, as on ECS: no static keys in the environment.
fn container_credentials_from(aws_url: &str) {
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    std::env::set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{aws_url}/creds"),
    );
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_AUTH);
}

#[test]
fn signed_invocations_with_container_credentials_score_events_and_a_bad_signature_is_refused() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let aws = fake_aws(SECRET_KEY);
    // This test binary is its own process: the pipeline reads these as it would on ECS.
    container_credentials_from(&aws.url);

    let names = Names::new("sagemaker", 1);
    let running = run_pipeline(sagemaker_config(&names, &aws.url));
    produce(&names.input, &events("sm", 20, 3));
    let out = consume(&names.output, 20, Duration::from_secs(60));
    assert_eq!(out.len(), 20, "every event scored by the signed endpoint");
    assert!(out
        .iter()
        .all(|m| json(m)["prediction"]["model_version"] == "sagemaker-test-1"));
    assert!(aws.invocations.load(Ordering::SeqCst) > 0);
    assert!(
        aws.rejected.lock().expect("refusals").is_empty(),
        "{:?}",
        aws.rejected.lock().expect("refusals")
    );
    drop(running);

    // A server that expects another secret refuses the signature: 403 is not retried, the
    // events are dead-lettered as inference_failed with the answer.
    let strict = fake_aws("a-different-secret");
    container_credentials_from(&strict.url);
    let names = Names::new("sagemaker-refused", 1);
    let _running = run_pipeline(sagemaker_config(&names, &strict.url));
    produce(&names.input, &events("bad", 3, 1));
    let dead = consume(&names.dlq, 3, Duration::from_secs(60));
    assert_eq!(dead.len(), 3);
    for m in &dead {
        assert_eq!(
            header(m, "clickpipe.error.kind").as_deref(),
            Some("inference_failed")
        );
        assert!(header(m, "clickpipe.error.message")
            .unwrap_or_default()
            .contains("403"));
    }
    assert!(strict
        .rejected
        .lock()
        .expect("refusals")
        .iter()
        .all(|why| why.starts_with("signature mismatch")));
}

fn base64url_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes() {
        let v = T.iter().position(|&t| t == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn the_msk_iam_token_is_a_presigned_connect_url_with_a_valid_signature() {
    use rdkafka::client::ClientContext as _;
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let aws = fake_aws(SECRET_KEY);
    container_credentials_from(&aws.url);

    let names = Names::without_topics("msk-iam");
    let mut cfg = config(&names, "http://127.0.0.1:1");
    cfg.kafka.auth = clickpipe_actors::config::KafkaAuth::MskIam;
    cfg.kafka.region = REGION.into();
    cfg.validate().expect("valid msk_iam config");
    let producer_config = clickpipe_actors::kafka::client::pipeline_producer(&cfg.kafka);
    assert_eq!(producer_config.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(producer_config.get("sasl.mechanism"), Some("OAUTHBEARER"));

    // What librdkafka calls on its own thread: a blocking fetch of the container credentials.
    let credentials = Arc::new(clickpipe_actors::clients::aws::CredentialsProvider::default());
    let context = clickpipe_actors::kafka::auth::AuthContext::new(
        clickpipe_actors::kafka::auth::MskAuth::for_config(&cfg.kafka, credentials),
    );
    let token = context.generate_oauth_token(None).expect("token");
    let now_ms = chrono::Utc::now().timestamp_millis();
    assert!((now_ms + 890_000..=now_ms + 901_000).contains(&token.lifetime_ms));

    let url = String::from_utf8(base64url_decode(&token.token)).expect("utf-8");
    let (base, query) = url.split_once('?').expect("query");
    assert_eq!(base, format!("https://kafka.{REGION}.amazonaws.com/"));
    let params: BTreeMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    assert_eq!(params["Action"], "kafka-cluster%3AConnect");
    assert_eq!(params["X-Amz-Expires"], "900");
    assert!(params["X-Amz-Credential"].starts_with(&format!("{ACCESS_KEY}%2F")));
    assert!(params["X-Amz-Security-Token"].contains("session-token"));
    // Verify the signature: canonical query of the signed parameters, host header, empty body.
    let canonical_query = params
        .iter()
        .filter(|(k, _)| **k != "X-Amz-Signature" && **k != "User-Agent")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!(
        "GET\n/\n{canonical_query}\nhost:kafka.{REGION}.amazonaws.com\n\nhost\n{}",
        sha256(b"")
    );
    let date = params["X-Amz-Date"];
    let scope = format!("{}/{REGION}/kafka-cluster/aws4_request", &date[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha256(canonical.as_bytes())
    );
    let mut key = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), &date[..8]);
    for part in [REGION, "kafka-cluster", "aws4_request"] {
        key = hmac(&key, part);
    }
    assert_eq!(
        params["X-Amz-Signature"],
        hex(&hmac(&key, &to_sign)),
        "{canonical}"
    );
}
