//! Developer tools around the service: the load generator, the reference model server, Redis
//! seeding, an in-memory Kafka broker, the command-line client of the admin API, and
//! `features explain`.

pub mod admin_client;
pub mod explain;
pub mod loadgen;
pub mod mock_broker;
pub mod model_server;
pub mod seed;
