//! The enrich stage: pure feature computation from the event and what Redis said.

#[cfg(feature = "fault-injection")]
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::config::Config;
use crate::error::{ErrorKind, Failure, Stage};
#[cfg(feature = "fault-injection")]
use crate::fault_injection::{FaultHooks, PANIC_EVENT_TYPE};
use crate::features::compute;
use crate::record::Record;
use crate::stage::{Outcome, StageLogic};

/// The enrich stage.
pub struct Enrich {
    default_income: f64,
    max_batch: usize,
    #[cfg(feature = "fault-injection")]
    hooks: Arc<FaultHooks>,
}

impl Enrich {
    /// An enrich stage.
    pub fn new(config: &Config) -> Self {
        Enrich {
            default_income: config.features.default_zip_median_income,
            max_batch: config.pipeline.max_batch,
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
    fn stage(&self) -> Stage {
        Stage::Enrich
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn process(&mut self, batch: Vec<Record>) -> LocalBoxFuture<'static, Vec<Outcome>> {
        let income = self.default_income;
        #[cfg(feature = "fault-injection")]
        {
            let armed = batch.iter().any(|r| {
                r.event
                    .as_ref()
                    .is_some_and(|e| e.event_type == PANIC_EVENT_TYPE)
            });
            if armed && self.hooks.take_enrich_panic() {
                panic!("injected panic in enrich (test hook)");
            }
        }
        let out = batch
            .into_iter()
            .map(|mut r| match (&r.event, &r.session) {
                (Some(event), Some(session)) => {
                    r.features = Some(compute(event, r.zip.as_deref(), session, income));
                    Outcome::Forward(r)
                }
                _ => Outcome::Fail(
                    r,
                    Failure::new(
                        ErrorKind::InvalidEvent,
                        Stage::Enrich,
                        "record reached enrich without event or session",
                    ),
                ),
            })
            .collect();
        futures::future::ready(out).boxed_local()
    }
}
