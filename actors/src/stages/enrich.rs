//! The enrich stage: pure feature computation from the event and what Redis said. With the
//! built-in features it cannot fail; a declared feature set may dead-letter an event as
//! `invalid_event` when a feature with `on_missing = "dead_letter"` cannot be computed.

use std::sync::Arc;

use futures::FutureExt;

use crate::config::Config;
use crate::error::{ErrorKind, Failure, Stage};
#[cfg(feature = "fault-injection")]
use crate::fault_injection::{FaultHooks, PANIC_EVENT_TYPE};
use crate::feature_set::engine::Known;
use crate::feature_set::FeatureSet;
use crate::features::{compute, FeatureValues};
use crate::record::{Enriched, LookedUp, Record};
use crate::stage::{Outcome, Outcomes, StageLogic};

/// The enrich stage.
pub struct Enrich {
    default_income: f64,
    set: Option<Arc<FeatureSet>>,
    #[cfg(feature = "fault-injection")]
    hooks: Arc<FaultHooks>,
}

impl Enrich {
    /// An enrich stage.
    pub fn new(config: &Config, set: Option<Arc<FeatureSet>>) -> Self {
        Enrich {
            default_income: config.features.default_zip_median_income,
            set,
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
        let out = batch
            .into_iter()
            .map(|r| match &set {
                None => builtin(r, income),
                Some(set) => declared(r, set),
            })
            .collect();
        futures::future::ready(out).boxed_local()
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
fn declared(r: Record<LookedUp>, set: &FeatureSet) -> Outcome<Enriched> {
    let computed = {
        let known = Known {
            declared: r.data.declared.as_deref(),
            session: Some(&r.data.session),
        };
        set.compute(&r.data.event, &known)
    };
    let Record { input, data } = r;
    match computed {
        Ok(values) => Outcome::Forward(Record {
            input,
            data: Enriched {
                event: data.event,
                features: FeatureValues::Declared(values),
                features_version: Some(set.version.clone()),
            },
        }),
        Err(e) => Outcome::Fail(
            input,
            Failure::new(ErrorKind::InvalidEvent, Stage::Enrich, e.to_string()),
        ),
    }
}
