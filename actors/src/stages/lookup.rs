//! The lookup stage: one Redis round trip per batch for ZIP data and session state, retried with
//! backoff within `redis.retry_budget_ms`; records of a batch that still fails are dead-lettered as
//! `lookup_failed` (or wait, under `redis.on_unavailable = "pause"`). With `redis.fallback =
//! "dynamodb"` a batch Redis cannot serve within the budget goes on degraded instead: ZIP data
//! from the cache or the DynamoDB table, each session as if new, declared lookups and windows
//! unknown (their defaults).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use deadpool_redis::Pool;
use futures::FutureExt;

use crate::clients::backoff;
use crate::clients::dynamo::ZipTable;
use crate::clients::redis::{LookupClient, LookupItem};
use crate::clients::zip_cache::ZipCache;
use crate::config::{Config, UnavailablePolicy};
use crate::error::{ErrorKind, Failure, Retry, Stage};
use crate::event::Event;
use crate::feature_set::FeatureSet;
use crate::record::{LookedUp, Record};
use crate::stage::{Outcome, Outcomes, StageHealth, StageLogic};
use crate::stats::Stats;
use crate::trace;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The lookup stage.
pub struct Lookup {
    client: LookupClient,
    /// A declared feature set (`features.set`): its lookups and windows join the round trip.
    set: Option<Arc<FeatureSet>>,
    budget: Duration,
    policy: UnavailablePolicy,
    health: Recipient<StageHealth>,
    stats: Arc<Stats>,
    /// The last batch went on degraded: the next ones try Redis once before they do too.
    degraded: Rc<Cell<bool>>,
}

impl Lookup {
    /// A lookup stage; builds its client on the calling thread.
    pub fn new(
        config: &Config,
        pool: Pool,
        cache: Arc<ZipCache>,
        set: Option<Arc<FeatureSet>>,
        health: Recipient<StageHealth>,
        stats: Arc<Stats>,
    ) -> Self {
        Lookup {
            set,
            client: LookupClient::new(
                pool,
                cache,
                &config.redis,
                Duration::from_secs(config.features.session_gap_s),
            )
            .with_fallback(ZipTable::for_lookups(config)),
            budget: config.redis.retry_budget_ms.get(),
            policy: config.redis.on_unavailable,
            health,
            stats,
            degraded: Rc::new(Cell::new(false)),
        }
    }
}

impl StageLogic for Lookup {
    type In = Event;
    type Out = LookedUp;

    const STAGE: Stage = Stage::Lookup;

    fn process(&mut self, batch: Vec<Record<Event>>) -> Outcomes<LookedUp> {
        let client = self.client.clone();
        let budget = self.budget;
        let policy = self.policy;
        let health = self.health.clone();
        let stats = self.stats.clone();
        let degraded = self.degraded.clone();
        let set = self.set.clone();
        async move {
            if batch.is_empty() {
                return Vec::new();
            }
            let plan = set.map(|set| {
                let events: Vec<&Event> = batch.iter().map(|r| &r.data).collect();
                set.plan(&events)
            });
            // A traced batch gets one client span for its Redis round trips.
            let call = trace::batch_span(
                "redis lookup",
                batch.len(),
                batch.iter().filter_map(|r| r.input.trace.as_deref()),
            );
            if let Some(span) = &call {
                span.set_attribute("db.system.name", "redis");
            }
            let started = Instant::now();
            let mut attempt = 0u32;
            let mut unavailable = false;
            let report = |problem: Option<String>| {
                // Health changes are rare transitions; they must not be lost to a full mailbox.
                health.do_send(StageHealth { stage: Stage::Lookup, problem });
            };
            let result = loop {
                attempt += 1;
                let items: Vec<LookupItem<'_>> = batch
                    .iter()
                    .map(|r| &r.data)
                    .map(|e| LookupItem {
                        zip: e.zip.as_deref(),
                        session_id: &e.session_id,
                        event_id: &e.event_id,
                        ts_ms: e.timestamp.timestamp_millis(),
                    })
                    .collect();
                match client.lookup_with(&items, plan.as_ref()).await {
                    Ok(answers) => {
                        degraded.set(false);
                        if unavailable {
                            report(None);
                        }
                        break Ok(answers);
                    }
                    Err(e) if e.retry == Retry::Never => break Err(e),
                    Err(e) => {
                        let wait = backoff(attempt, Duration::from_millis(20), Duration::from_secs(1));
                        let fallback_budget = if degraded.get() { Duration::ZERO } else { budget };
                        if client.has_fallback() && started.elapsed() + wait >= fallback_budget {
                            degraded.set(true);
                            if unavailable {
                                report(None);
                            }
                            tracing::warn!(error = %e, records = items.len(), "redis unavailable past its budget; the batch goes on degraded (fallback ZIP data, new sessions)");
                            stats.lookup_degraded.fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            let answers = client.degraded(&items).await;
                            let declared = Vec::new();
                            break Ok((answers, declared));
                        }
                        match policy {
                            UnavailablePolicy::DeadLetter if started.elapsed() + wait >= budget => {
                                break Err(e);
                            }
                            UnavailablePolicy::DeadLetter => {}
                            UnavailablePolicy::Pause if !unavailable => {
                                unavailable = true;
                                report(Some(format!("redis unavailable: {}", e.message)));
                            }
                            UnavailablePolicy::Pause => {}
                        }
                        tracing::warn!(error = %e, attempt, "redis lookup failed; retrying");
                        actix_rt::time::sleep(wait).await;
                    }
                }
            };
            if let Some(span) = &call {
                span.set_attribute("clickpipe.attempts", i64::from(attempt));
                if let Err(e) = &result {
                    trace::fail(span, &e.message);
                }
            }
            drop(call);
            match result {
                Ok((answers, declared)) => {
                    let mut declared = declared.into_iter();
                    batch
                    .into_iter()
                    .zip(answers)
                    .map(|(r, a)| {
                        let event = r.data;
                        let found = LookedUp {
                            event,
                            zip: a.zip,
                            session: a.session,
                            declared: declared.next().map(Box::new),
                        };
                        Outcome::Forward(Record {
                            input: r.input,
                            data: found,
                        })
                    })
                    .collect()
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "redis lookup failed for good");
                    let failure = Failure::after(ErrorKind::LookupFailed, Stage::Lookup, e.message, attempt);
                    batch
                        .into_iter()
                        .map(|r| Outcome::Fail(r.input, failure.clone()))
                        .collect()
                }
            }
        }
        .boxed_local()
    }
}
