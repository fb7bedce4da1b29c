//! The model client: `POST {url}/invocations` with `{"instances": [...]}` (the SageMaker container
//! convention), per-request timeout, retries of transient failures (connect errors, timeouts, 429,
//! 5xx) with exponential backoff and full jitter within a time budget, never retrying other 4xx.
//!
//! `awc::Client` is not `Send`: every inference actor builds its own on its own thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clients::aws::{self, CredentialsProvider};
use crate::clients::backoff;
use crate::clients::breaker::{Admission, CircuitBreaker};
use crate::config::{ModelConfig, ModelKind, UnavailablePolicy};
use crate::error::{ClientError, Retry};
use crate::features::FeatureValues;

/// A model answer for one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The score the model gave.
    pub score: f64,
    /// The version of the model that gave it.
    pub model_version: String,
}

/// A failed batch, with the number of attempts made.
#[derive(Debug)]
pub struct InferError {
    /// The last error.
    pub error: ClientError,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// The model is up and refused this input: a non-retryable answer (4xx, malformed or
    /// miscounted response), or HTTP 500 while `GET /ping` answers. A batch failing so may hold
    /// one bad instance, so the caller splits it rather than fail every record.
    pub input_suspect: bool,
}

/// When a call of one scoring (a batch and its halves) last succeeded: proof that the model
/// works, so an instance it keeps answering with HTTP 500 is at fault, not the model.
pub type Evidence = std::cell::Cell<Option<Instant>>;

/// A failed call: the error, and whether the model answered it with HTTP 500.
struct CallFailure {
    error: ClientError,
    internal_error: bool,
}

impl From<ClientError> for CallFailure {
    fn from(error: ClientError) -> Self {
        CallFailure {
            error,
            internal_error: false,
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    instances: &'a [&'a FeatureValues],
}

#[derive(Deserialize)]
struct Response {
    predictions: Vec<Score>,
    model_version: String,
}

#[derive(Deserialize)]
struct Score {
    score: f64,
}

/// The client; cheap to clone (shares the awc client).
#[derive(Clone)]
pub struct ModelClient {
    http: awc::Client,
    invocations: String,
    ping: String,
    timeout: Duration,
    budget: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    breaker: Arc<CircuitBreaker>,
    policy: UnavailablePolicy,
    sagemaker: Option<SageMaker>,
}

/// What calling a SageMaker endpoint needs besides the URL.
#[derive(Clone)]
struct SageMaker {
    region: String,
    credentials: Arc<CredentialsProvider>,
}

/// Told when the model becomes unavailable (`Some(reason)`) and available again (`None`).
pub type HealthReport<'a> = &'a dyn Fn(Option<String>);

impl ModelClient {
    /// A client for `cfg.url` (or, with `model.kind = sagemaker`, the SageMaker endpoint), sharing
    /// `breaker` and `credentials` with the other partitions. Must be called on the thread that
    /// will use it.
    pub fn new(
        cfg: &ModelConfig,
        breaker: Arc<CircuitBreaker>,
        credentials: Arc<CredentialsProvider>,
    ) -> Self {
        let (invocations, ping, sagemaker) = match cfg.kind {
            ModelKind::Http => {
                let base = cfg.url.trim_end_matches('/');
                (format!("{base}/invocations"), format!("{base}/ping"), None)
            }
            ModelKind::Sagemaker => (
                format!(
                    "{}/endpoints/{}/invocations",
                    cfg.sagemaker_base(),
                    cfg.sagemaker_endpoint
                ),
                String::new(),
                Some(SageMaker {
                    region: cfg.region.clone(),
                    credentials,
                }),
            ),
        };
        let timeout = cfg.timeout_ms.get();
        ModelClient {
            http: awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .finish(),
            invocations,
            ping,
            timeout,
            budget: cfg.retry_budget_ms.get(),
            backoff_initial: cfg.backoff_initial_ms.get(),
            backoff_max: cfg.backoff_max_ms.get(),
            breaker,
            policy: cfg.on_unavailable,
            sagemaker,
        }
    }

    /// The URL scored batches are posted to.
    pub fn invocations_url(&self) -> &str {
        &self.invocations
    }

    /// `GET /ping`: Ok when the model answers 200. A SageMaker endpoint has no such call for its
    /// callers: Ok when AWS credentials are at hand.
    pub async fn ping(&self) -> Result<(), ClientError> {
        if let Some(sm) = &self.sagemaker {
            return sm.credentials.get().await.map(|_| ());
        }
        let resp = self
            .http
            .get(&self.ping)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ClientError::transient(format!("model ping: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ClientError::transient(format!(
                "model ping: HTTP {}",
                resp.status()
            )))
        }
    }

    /// Scores `instances`. Transient failures are retried with backoff: within the retry budget
    /// under the `dead_letter` policy, for as long as it takes under `pause` (the circuit breaker
    /// then spaces the attempts and probes `GET /ping`). A non-retryable answer (4xx other than
    /// 429, a malformed response) fails at once. `headers` go on every request (trace context).
    ///
    /// HTTP 500 can be the model failing on one input rather than an outage. The call then fails
    /// as [`InferError::input_suspect`] — under either policy — after a second such answer for a
    /// batch of several instances (so the caller can split it), and, for a single instance, once
    /// it has had them for the retry budget while `evidence` shows another call of the same
    /// scoring succeeded (the model works, but not on this input). Without that evidence a 500
    /// is an outage like any other: waited out under `pause`. Successes are recorded in
    /// `evidence`.
    pub async fn infer(
        &self,
        instances: &[&FeatureValues],
        health: HealthReport<'_>,
        headers: &[(String, String)],
        evidence: &Evidence,
    ) -> Result<Vec<Prediction>, InferError> {
        let body = serde_json::to_vec(&Request { instances }).map_err(|e| InferError {
            error: ClientError::permanent(format!("cannot encode request: {e}")),
            attempts: 0,
            input_suspect: true,
        })?;
        let body = bytes::Bytes::from(body);
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut unavailable = false;
        // HTTP 500 answers to this call, and when the first came.
        let mut refusals = 0u32;
        let mut refusing_since: Option<Instant> = None;
        loop {
            // Held across the call when this attempt is the half-open probe: dropped at the end
            // of the iteration, or with the future, it gives the probe back.
            let mut probe = None;
            match self.breaker.admit() {
                Admission::Call => {}
                Admission::Probe(guard) => {
                    if let Err(e) = self.ping().await {
                        self.breaker.failure();
                        tracing::debug!(error = %e.message, "model probe failed");
                        continue;
                    }
                    probe = Some(guard);
                }
                Admission::Wait(d) => {
                    if self.policy == UnavailablePolicy::DeadLetter {
                        return Err(InferError {
                            error: ClientError::transient("model: circuit breaker open"),
                            attempts: attempt,
                            input_suspect: false,
                        });
                    }
                    if !unavailable {
                        unavailable = true;
                        health(Some("model unavailable: circuit breaker open".into()));
                    }
                    actix_rt::time::sleep(d.min(self.backoff_max)).await;
                    continue;
                }
            }
            attempt += 1;
            let failure = match self.call_once(body.clone(), instances.len(), headers).await {
                Ok(p) => {
                    self.breaker.success();
                    if unavailable {
                        health(None);
                    }
                    evidence.set(Some(Instant::now()));
                    return Ok(p);
                }
                Err(e) => e,
            };
            let error = failure.error;
            if failure.internal_error {
                refusals += 1;
                refusing_since.get_or_insert_with(Instant::now);
            }
            if error.retry == Retry::Never {
                if probe.is_some() {
                    // The endpoint answered (a 4xx, a malformed body): it is up. This batch
                    // fails on its own; the circuit closes for the others.
                    self.breaker.success();
                    if unavailable {
                        health(None);
                    }
                }
                return Err(InferError {
                    error,
                    attempts: attempt,
                    input_suspect: true,
                });
            }
            self.breaker.failure();
            let wait = backoff(attempt - 1, self.backoff_initial, self.backoff_max);
            // HTTP 500 may be this input's fault: a batch of several is handed back to be split
            // after its second such answer (cheap, and the good half proves the model works); a
            // single instance once it has had them for the retry budget while another call of
            // the same scoring succeeded.
            let suspect = failure.internal_error
                && if instances.len() > 1 {
                    refusals >= 2
                } else {
                    evidence.get().is_some()
                        && refusing_since.is_some_and(|t| t.elapsed() + wait >= self.budget)
                };
            if suspect {
                return Err(InferError {
                    error,
                    attempts: attempt,
                    input_suspect: true,
                });
            }
            match self.policy {
                UnavailablePolicy::DeadLetter if started.elapsed() + wait >= self.budget => {
                    return Err(InferError {
                        error,
                        attempts: attempt,
                        input_suspect: false,
                    });
                }
                UnavailablePolicy::DeadLetter => {}
                UnavailablePolicy::Pause => {
                    if !unavailable {
                        unavailable = true;
                        health(Some(format!("model unavailable: {}", error.message)));
                    }
                }
            }
            tracing::debug!(attempt, error = %error.message, ?wait, "model call failed; retrying");
            actix_rt::time::sleep(wait).await;
        }
    }

    async fn call_once(
        &self,
        body: bytes::Bytes,
        n: usize,
        headers: &[(String, String)],
    ) -> Result<Vec<Prediction>, CallFailure> {
        let mut request = self
            .http
            .post(&self.invocations)
            .timeout(self.timeout)
            .insert_header(("content-type", "application/json"));
        for (name, value) in headers {
            request = request.insert_header((name.as_str(), value.as_str()));
        }
        if let Some(sm) = &self.sagemaker {
            let credentials = sm.credentials.get().await?;
            let unsigned = aws::Unsigned {
                method: "POST",
                url: &self.invocations,
                headers: &[("content-type", "application/json")],
                body: &body,
            };
            let signed = aws::sign_headers(
                &credentials,
                &sm.region,
                "sagemaker",
                &unsigned,
                std::time::SystemTime::now(),
            )?;
            for (name, value) in &signed {
                request = request.insert_header((name.as_str(), value.as_str()));
            }
            request = request.insert_header(("accept", "application/json"));
        }
        let mut resp = request
            .send_body(body)
            .await
            .map_err(|e| ClientError::transient(format!("model: {e}")))?;
        let status = resp.status();
        let payload = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| ClientError::transient(format!("model: reading response: {e}")))?;
        // SageMaker answers throttling with 400 ThrottlingException; retry it like a 429.
        let throttled = self.sagemaker.is_some()
            && status.as_u16() == 400
            && String::from_utf8_lossy(&payload).contains("Throttling");
        if status.as_u16() == 429 || status.is_server_error() || throttled {
            return Err(CallFailure {
                error: ClientError::transient(format!(
                    "model: HTTP {status}: {}",
                    snippet(&payload)
                )),
                internal_error: status.as_u16() == 500,
            });
        }
        if !status.is_success() {
            return Err(ClientError::permanent(format!(
                "model: HTTP {status}: {}",
                snippet(&payload)
            ))
            .into());
        }
        let parsed: Response = serde_json::from_slice(&payload)
            .map_err(|e| ClientError::permanent(format!("model: malformed response: {e}")))?;
        if parsed.predictions.len() != n {
            return Err(ClientError::permanent(format!(
                "model: {} predictions for {n} instances",
                parsed.predictions.len()
            ))
            .into());
        }
        Ok(parsed
            .predictions
            .into_iter()
            .map(|s| Prediction {
                score: s.score,
                model_version: parsed.model_version.clone(),
            })
            .collect())
    }
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]);
    s.replace('\n', " ")
}
