//! The infer stage: batches of up to `model.max_batch_size` events, waiting at most
//! `model.max_wait_ms` for a fuller batch (the partition sets this batching), sent to the model; failures past the retry budget (or a
//! non-retryable 4xx) dead-letter the events as `inference_failed`. A batch the model refuses as
//! input (a 4xx, or HTTP 500 it keeps answering) is split in halves until the bad instance fails
//! alone, so one bad event never costs its batch-mates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Recipient;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::clients::aws::CredentialsProvider;
use crate::clients::breaker::CircuitBreaker;
use crate::clients::model::{Evidence, HealthReport, InferError, ModelClient, Prediction};
use crate::config::{Config, ModelConfig};
use crate::error::{ErrorKind, Failure, Stage};
use crate::features::FeatureValues;
use crate::record::{Enriched, Record, Scored};
use crate::stage::{Outcome, Outcomes, StageHealth, StageLogic};
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
    type In = Enriched;
    type Out = Scored;

    const STAGE: Stage = Stage::Infer;

    fn started(&mut self) {
        self.client = Some(ModelClient::new(
            &self.config,
            self.breaker.clone(),
            self.credentials.clone(),
        ));
    }

    fn process(&mut self, batch: Vec<Record<Enriched>>) -> Outcomes<Scored> {
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
                return Vec::new();
            }
            let results = {
                let instances: Vec<&FeatureValues> =
                    batch.iter().map(|r| &r.data.features).collect();
                // Health changes are rare transitions; they must not be lost to a full mailbox.
                let report = |problem: Option<String>| {
                    health.do_send(StageHealth {
                        stage: Stage::Infer,
                        problem,
                    })
                };
                // A traced batch gets one client span for the call; its context goes on the request.
                let call = trace::batch_span(
                    "POST /invocations",
                    batch.len(),
                    batch.iter().filter_map(|r| r.input.trace.as_deref()),
                );
                let headers = call
                    .as_ref()
                    .map(trace::context_headers)
                    .unwrap_or_default();
                if let Some(span) = &call {
                    span.set_attribute("http.request.method", "POST");
                    span.set_attribute(
                        "url.full",
                        crate::config::mask_url(client.invocations_url()),
                    );
                }
                let scoring = Scoring {
                    client: &client,
                    report: &report,
                    headers: &headers,
                    stats: &stats,
                    evidence: Evidence::default(),
                };
                let results = scoring.score(&instances).await;
                if let Some(span) = &call {
                    if let Some(Err(f)) = results.iter().find(|r| r.is_err()) {
                        trace::fail(span, f.message());
                    }
                }
                results
            };
            let scored = results.iter().filter(|r| r.is_ok()).count();
            stats
                .model_events
                .fetch_add(scored as u64, Ordering::Relaxed);
            if scored < batch.len() {
                tracing::error!(
                    failed = batch.len() - scored,
                    records = batch.len(),
                    "model call failed for good"
                );
            }
            batch
                .into_iter()
                .zip(results)
                .map(|(r, result)| match result {
                    Ok(prediction) => {
                        let Enriched {
                            event,
                            features,
                            features_version,
                        } = r.data;
                        Outcome::Forward(Record {
                            input: r.input,
                            data: Scored {
                                event,
                                features,
                                features_version,
                                prediction,
                            },
                        })
                    }
                    Err(f) => Outcome::Fail(r.input, f),
                })
                .collect()
        }
        .boxed_local()
    }
}

/// One batch's scoring: the model call, and the splitting of a batch the model refuses.
struct Scoring<'a> {
    client: &'a ModelClient,
    report: HealthReport<'a>,
    headers: &'a [(String, String)],
    stats: &'a Stats,
    evidence: Evidence,
}

impl Scoring<'_> {
    /// Scores `instances`; one result per instance, in order. A batch the model refuses as
    /// input ([`InferError::input_suspect`]) is split in halves, each scored on its own, until
    /// every bad instance fails alone: one bad event costs its own dead letter, not its batch's,
    /// and O(log n) extra calls.
    fn score<'s>(
        &'s self,
        instances: &'s [&'s FeatureValues],
    ) -> LocalBoxFuture<'s, Vec<Result<Prediction, Failure>>> {
        async move {
            self.stats.model_batches.fetch_add(1, Ordering::Relaxed);
            self.stats.model_batch_size.observe(instances.len() as f64);
            match self
                .client
                .infer(instances, self.report, self.headers, &self.evidence)
                .await
            {
                Ok(predictions) => predictions.into_iter().map(Ok).collect(),
                Err(e) if e.input_suspect && instances.len() > 1 => {
                    tracing::debug!(error = %e.error, records = instances.len(),
                        "model refused the batch; splitting it");
                    let (left, right) = instances.split_at(instances.len() / 2);
                    let mut out = self.score(left).await;
                    out.extend(self.score(right).await);
                    out
                }
                Err(e) => {
                    let failure = failure(e);
                    vec![Err(failure); instances.len()]
                }
            }
        }
        .boxed_local()
    }
}

fn failure(e: InferError) -> Failure {
    Failure::after(
        ErrorKind::InferenceFailed,
        Stage::Infer,
        e.error.message,
        e.attempts,
    )
}
