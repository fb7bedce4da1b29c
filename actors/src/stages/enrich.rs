//! The enrich stage: pure feature computation from the event and what Redis said. With the
//! built-in features it cannot fail; a declared feature set may dead-letter an event as
//! `invalid_event` when a feature with `on_missing = "dead_letter"` cannot be computed.
//!
//! A declared set with `[[materialize]]` also writes each batch's feature vectors to the online
//! store (one script call), retried within `redis.retry_budget_ms`; a write still failing is
//! counted (`clickpipe_feature_store_failures_total`) and logged, and the records go on: the
//! store is a copy of what the model saw, not part of the delivery. Writes run beside the
//! pipeline, up to [`MAX_PENDING_WRITES`] batches per stage (the script keeps the latest vector
//! by event time, so their order does not matter); beyond that the stage waits for its write.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::clients::backoff;
use crate::clients::redis::LookupClient;
use crate::config::Config;
use crate::error::{ErrorKind, Failure, Stage};
#[cfg(feature = "fault-injection")]
use crate::fault_injection::{FaultHooks, PANIC_EVENT_TYPE};
use crate::feature_set::engine::Known;
use crate::feature_set::materialize::StoreWrite;
use crate::feature_set::FeatureSet;
use crate::features::{compute, FeatureValues};
use crate::record::{Enriched, LookedUp, Record};
use crate::stage::{Outcome, Outcomes, StageLogic};
use crate::stats::Stats;

/// Where the online store is written (a declared set with `[[materialize]]`).
pub struct Store {
    /// The Redis client (built on the stage's thread).
    pub client: LookupClient,
    /// How long a failing write is retried.
    pub budget: Duration,
    /// Counts the writes given up.
    pub stats: Arc<Stats>,
}

/// Online-store writes a stage lets run beside the pipeline before it waits for its own.
pub const MAX_PENDING_WRITES: usize = 4;

/// The enrich stage.
pub struct Enrich {
    default_income: f64,
    set: Option<Arc<FeatureSet>>,
    store: Option<Store>,
    /// Online-store writes running beside the pipeline.
    pending: Rc<Cell<usize>>,
    #[cfg(feature = "fault-injection")]
    hooks: Arc<FaultHooks>,
}

impl Enrich {
    /// An enrich stage; `store` is used when `set` materializes.
    pub fn new(config: &Config, set: Option<Arc<FeatureSet>>, store: Option<Store>) -> Self {
        let store = store.filter(|_| set.as_ref().is_some_and(|s| s.materializes()));
        Enrich {
            default_income: config.features.default_zip_median_income,
            set,
            store,
            pending: Rc::new(Cell::new(0)),
            #[cfg(feature = "fault-injection")]
            hooks: Arc::new(FaultHooks::default()),
        }
    }

    /// The stage with the tests' fault-injection hooks.
    #[cfg(feature = "fault-injection")]
    pub fn with_hooks(mut self, hooks: Arc<FaultHooks>) -> Self {
        self.hooks = hooks;
        self
    }
}

impl StageLogic for Enrich {
    type In = LookedUp;
    type Out = Enriched;

    const STAGE: Stage = Stage::Enrich;

    fn process(&mut self, batch: Vec<Record<LookedUp>>) -> Outcomes<Enriched> {
        let income = self.default_income;
        #[cfg(feature = "fault-injection")]
        {
            let armed = batch
                .iter()
                .any(|r| r.data.event.event_type == PANIC_EVENT_TYPE);
            if armed && self.hooks.take_enrich_panic() {
                panic!("injected panic in enrich (test hook)");
            }
        }
        let set = self.set.clone();
        let mut writes = Vec::new();
        let out: Vec<Outcome<Enriched>> = batch
            .into_iter()
            .map(|r| match &set {
                None => builtin(r, income),
                Some(set) => declared(r, set, self.store.is_some().then_some(&mut writes)),
            })
            .collect();
        match &self.store {
            Some(store) if !writes.is_empty() => {
                let client = store.client.clone();
                let budget = store.budget;
                let stats = store.stats.clone();
                if self.pending.get() < MAX_PENDING_WRITES {
                    let pending = self.pending.clone();
                    pending.set(pending.get() + 1);
                    actix_rt::spawn(async move {
                        write_store(&client, &writes, budget, &stats).await;
                        pending.set(pending.get().saturating_sub(1));
                    });
                    futures::future::ready(out).boxed_local()
                } else {
                    async move {
                        write_store(&client, &writes, budget, &stats).await;
                        out
                    }
                    .boxed_local()
                }
            }
            _ => futures::future::ready(out).boxed_local(),
        }
    }
}

/// Writes a batch's online-store entries, retrying within `budget`; counts them as failed after.
async fn write_store(
    client: &LookupClient,
    writes: &[StoreWrite],
    budget: Duration,
    stats: &Stats,
) {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match client.store(writes).await {
            Ok(()) => return,
            Err(e) => {
                let wait = backoff(attempt, Duration::from_millis(20), Duration::from_secs(1));
                if started.elapsed() + wait >= budget {
                    stats
                        .store_failures
                        .fetch_add(writes.len() as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, writes = writes.len(), "online feature store write given up");
                    return;
                }
                tracing::warn!(error = %e, attempt, "online feature store write failed; retrying");
                actix_rt::time::sleep(wait).await;
            }
        }
    }
}

/// The built-in features.
fn builtin(r: Record<LookedUp>, income: f64) -> Outcome<Enriched> {
    let LookedUp {
        event,
        zip,
        session,
        ..
    } = &r.data;
    let features = FeatureValues::Builtin(compute(event, zip.as_deref(), session, income));
    let Record { input, data } = r;
    Outcome::Forward(Record {
        input,
        data: Enriched {
            event: data.event,
            features,
            features_version: None,
        },
    })
}

/// A declared feature set's features, or the event's dead letter when one that must be computed
/// cannot be.
fn declared(
    r: Record<LookedUp>,
    set: &FeatureSet,
    writes: Option<&mut Vec<StoreWrite>>,
) -> Outcome<Enriched> {
    let computed = {
        let known = Known {
            declared: r.data.declared.as_deref(),
            session: Some(&r.data.session),
        };
        set.compute(&r.data.event, &known)
    };
    let Record { input, data } = r;
    match computed {
        Ok(values) => {
            if let Some(writes) = writes {
                writes.extend(set.store_writes(&data.event, &values));
            }
            Outcome::Forward(Record {
                input,
                data: Enriched {
                    event: data.event,
                    features: FeatureValues::Declared(values),
                    features_version: Some(set.version.clone()),
                },
            })
        }
        Err(e) => Outcome::Fail(
            input,
            Failure::new(ErrorKind::InvalidEvent, Stage::Enrich, e.to_string()),
        ),
    }
}
