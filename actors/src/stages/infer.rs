//! The infer stage: batches of up to `model.max_batch_size` events, waiting at most
//! `model.max_wait_ms` for a fuller batch, sent to the model; failures past the retry budget (or a
//! non-retryable 4xx) dead-letter the batch's events as `inference_failed`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::clients::aws::CredentialsProvider;
use crate::clients::breaker::CircuitBreaker;
use crate::clients::model::ModelClient;
use crate::config::{Config, ModelConfig};
use crate::error::{ErrorKind, Failure, Stage};
use crate::features::Features;
use crate::record::Record;
use crate::stage::{Outcome, StageHealth, StageLogic};
use crate::stats::Stats;
use crate::trace;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The infer stage.
pub struct Infer {
    config: ModelConfig,
    client: Option<ModelClient>,
    stats: Arc<Stats>,
    breaker: Arc<CircuitBreaker>,
    credentials: Arc<CredentialsProvider>,
    health: Recipient<StageHealth>,
}

impl Infer {
    /// An infer stage; its HTTP client is built when the actor starts, on the actor's thread.
    pub fn new(
        config: &Config,
        stats: Arc<Stats>,
        breaker: Arc<CircuitBreaker>,
        credentials: Arc<CredentialsProvider>,
        health: Recipient<StageHealth>,
    ) -> Self {
        Infer {
            config: config.model.clone(),
            client: None,
            stats,
            breaker,
            credentials,
            health,
        }
    }
}

impl StageLogic for Infer {
    fn name(&self) -> &'static str {
        "infer"
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch_size
    }

    fn max_wait(&self) -> Duration {
        Duration::from_millis(self.config.max_wait_ms)
    }

    fn started(&mut self) {
        self.client = Some(ModelClient::new(
            &self.config,
            self.breaker.clone(),
            self.credentials.clone(),
        ));
    }

    fn process(&mut self, batch: Vec<Record>) -> LocalBoxFuture<'static, Vec<Outcome>> {
        // Every record here went through enrich; one without features cannot be scored.
        let (mut batch, unfeatured): (Vec<Record>, Vec<Record>) =
            batch.into_iter().partition(|r| r.features.is_some());
        let mut outcomes: Vec<Outcome> = unfeatured
            .into_iter()
            .map(|r| {
                Outcome::Fail(
                    r,
                    Failure::new(
                        ErrorKind::InferenceFailed,
                        Stage::Infer,
                        "record has no features",
                    ),
                )
            })
            .collect();
        let client = self
            .client
            .get_or_insert_with(|| {
                ModelClient::new(&self.config, self.breaker.clone(), self.credentials.clone())
            })
            .clone();
        let stats = self.stats.clone();
        let health = self.health.clone();
        async move {
            if batch.is_empty() {
                return outcomes;
            }
            let result = {
                let instances: Vec<&Features> =
                    batch.iter().filter_map(|r| r.features.as_ref()).collect();
                stats.model_batches.fetch_add(1, Ordering::Relaxed);
                stats.model_batch_size.observe(instances.len() as f64);
                // Health changes are rare transitions; they must not be lost to a full mailbox.
                let report = |problem: Option<String>| {
                    health.do_send(StageHealth {
                        stage: "infer",
                        problem,
                    })
                };
                // A traced batch gets one client span for the call; its context goes on the request.
                let call = trace::batch_span("POST /invocations", &batch);
                let headers = call
                    .as_ref()
                    .map(trace::context_headers)
                    .unwrap_or_default();
                if let Some(span) = &call {
                    span.set_attribute("http.request.method", "POST");
                    span.set_attribute("url.full", client.invocations_url().to_string());
                }
                let result = client.infer(&instances, &report, &headers).await;
                if let (Some(span), Err(e)) = (&call, &result) {
                    trace::fail(span, &e.error.message);
                }
                result
            };
            match result {
                Ok(predictions) => {
                    stats
                        .model_events
                        .fetch_add(predictions.len() as u64, Ordering::Relaxed);
                    for (r, p) in batch.iter_mut().zip(predictions) {
                        r.prediction = Some(p);
                    }
                    outcomes.extend(batch.into_iter().map(Outcome::Forward));
                    outcomes
                }
                Err(e) => {
                    tracing::error!(error = %e.error, attempts = e.attempts, records = batch.len(),
                        "model call failed for good");
                    let failure = Failure::after(
                        ErrorKind::InferenceFailed,
                        Stage::Infer,
                        e.error.message,
                        e.attempts,
                    );
                    outcomes.extend(batch.into_iter().map(|r| Outcome::Fail(r, failure.clone())));
                    outcomes
                }
            }
        }
        .boxed_local()
    }
}
