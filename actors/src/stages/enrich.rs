//! The enrich stage: pure feature computation from the event and what Redis said. It cannot fail:
//! a record reaches it with its event and session, so every record goes on.

#[cfg(feature = "fault-injection")]
use std::sync::Arc;

use futures::FutureExt;

use crate::config::Config;
use crate::error::Stage;
#[cfg(feature = "fault-injection")]
use crate::fault_injection::{FaultHooks, PANIC_EVENT_TYPE};
use crate::features::{compute, FeatureValues};
use crate::record::{Enriched, LookedUp, Record};
use crate::stage::{Outcome, Outcomes, StageLogic};

/// The enrich stage.
pub struct Enrich {
    default_income: f64,
    #[cfg(feature = "fault-injection")]
    hooks: Arc<FaultHooks>,
}

impl Enrich {
    /// An enrich stage.
    pub fn new(config: &Config) -> Self {
        Enrich {
            default_income: config.features.default_zip_median_income,
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
        let out = batch
            .into_iter()
            .map(|r| {
                let LookedUp {
                    event,
                    zip,
                    session,
                } = &r.data;
                let features =
                    FeatureValues::Builtin(compute(event, zip.as_deref(), session, income));
                let Record { input, data } = r;
                Outcome::Forward(Record {
                    input,
                    data: Enriched {
                        event: data.event,
                        features,
                        features_version: None,
                    },
                })
            })
            .collect();
        futures::future::ready(out).boxed_local()
    }
}
