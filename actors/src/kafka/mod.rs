//! Kafka clients: [`client`] builds every librdkafka configuration (one layering of clickpipe's
//! defaults, the user's `[kafka.*]` sections and authentication), [`consumer`] is the group
//! consumer's context, [`auth`] signs MSK IAM tokens,
//! [`produce`] writes a record until the broker acknowledges it, [`transaction`] runs the
//! exactly-once mode's transactions.

pub mod auth;
pub mod client;
pub mod consumer;
pub mod produce;
pub mod transaction;
