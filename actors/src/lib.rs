//! The actors of clickpipe and everything they need: the typed configuration, the input event
//! decoder, pure feature computation, the Redis and model clients, and the actor tree itself.
//!
//! ```text
//! ConsumerGroup ─┬─ PartitionActor(p0): source → lookup → enrich → infer → emit ─┐
//!                ├─ PartitionActor(p1): …                                         │
//!                └─ …            any stage's failures → DlqActor ─────────────────┤
//!                    offsets committed once the output or dead letter is acked ◄──┘
//! ```
//!
//! Module map: [`group`] (consumer group, rebalances) → [`partition`] (source, offsets) →
//! [`stages`] (lookup, enrich, infer, emit) run by [`stage`]; [`dlq`] for dead letters;
//! [`pipeline`] starts and stops the tree.

pub mod clients;
pub mod config;
pub mod deps;
pub mod dlq;
pub mod error;
pub mod event;
#[cfg(feature = "fault-injection")]
pub mod fault_injection;
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
