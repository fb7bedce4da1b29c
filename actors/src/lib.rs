//! The actors of clickpipe and everything they need: the pipeline's typed configuration, the input
//! event decoder, pure feature computation, the Redis and model clients, and the actor tree
//! itself. The service around it (admin API, logging, EMF, the tailer, the tools) is the
//! `clickpipe` crate's.
//!
//! ```text
//! ConsumerGroup ─┬─ PartitionActor(p0): source → lookup → enrich → infer → emit ─┐
//!                ├─ PartitionActor(p1): …                                         │
//!                └─ …            any stage's failures → DlqActor ─────────────────┤
//!                    offsets committed once the output or dead letter is acked ◄──┘
//! ```
//!
//! Module map:
//! - the actor tree: [`pipeline`] starts and stops it; [`group`] (consumer group, rebalances) →
//!   [`partition`] (its source, offsets, operator control and one-for-all supervision) →
//!   [`stages`] (lookup, enrich, infer, emit) run by [`stage`], each typed by the [`record`]
//!   state it takes and hands on (`Event` → `LookedUp` → `Enriched` → `Scored` → `Emitted`); [`dlq`] writes dead letters and
//!   names every header clickpipe writes; [`supervision`] holds the restart intensity;
//! - [`kafka`]: the one librdkafka client builder, MSK IAM, the group consumer's context,
//!   delivery until acknowledged; [`clients`]: Redis, ZIP cache, model, circuit breaker, AWS;
//! - pure logic: [`event`] (decoder), [`features`], [`session`], [`error`];
//! - [`config`] (one file per section), [`deps`] (what every partition shares), [`stats`],
//!   [`metrics`], [`status`], [`trace`].
//!
//! No module imports one that imports it back: the group consumer's context reports rebalances
//! through [`kafka::consumer::GroupEvents`] instead of knowing the group.

pub mod clients;
pub mod config;
pub mod deps;
pub mod dlq;
pub mod error;
pub mod event;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
pub mod feature_set;
pub mod features;
pub mod group;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod pipeline;
pub mod record;
pub mod session;
pub mod stage;
pub mod stages;
pub mod stats;
pub mod status;
pub mod supervision;
pub mod trace;
