//! clickpipe's binary-side library: configuration loading, the admin API, the reference model
//! server, the load generator, Redis seeding, the Elasticsearch / OpenSearch tailer and logging /
//! trace set-up. The actors live in the
//! `clickpipe-actors` crate.

pub mod admin;
pub mod admin_client;
pub mod emf;
pub mod ingest;
pub mod loadgen;
pub mod model_server;
pub mod seed;
pub mod settings;
pub mod telemetry;
