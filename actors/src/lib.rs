//! The actors of clickpipe and everything they need: the typed configuration, the input event
//! decoder, pure feature computation, the Redis and model clients, and the actor tree itself.
//!
//! ```text
//! ConsumerGroup ─┬─ Partition(topic, p) ── source → lookup → enrich → infer → emit ─┐
//!                ├─ Partition(topic, q) ── …                                          │
//!                └─ …                                 (failures) → Dlq ───────────────┤
//!                                     offsets committed when output or DLQ acked ◄────┘
//! ```

pub mod config;
pub mod error;
pub mod event;
pub mod features;
pub mod session;
