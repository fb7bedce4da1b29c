//! The stages of a partition, in record order: `lookup` (Redis) → `enrich` (features) → `infer`
//! (model) → `emit` (output topic). Decoding happens in the partition's source, before `lookup`.

pub mod emit;
pub mod enrich;
pub mod infer;
pub mod lookup;
