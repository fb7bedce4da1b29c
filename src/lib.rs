//! clickpipe's binary-side library. The actors (the pipeline itself) live in the
//! `clickpipe-actors` crate; this crate holds what runs them and what surrounds them.
//!
//! Layout:
//!
//! - [`service`]: the service (`clickpipe run`): [`service::run`] starts the pipeline, the admin
//!   API ([`service::admin`]) and the EMF metrics task ([`service::emf`]) and stops them when a
//!   given future completes; the configuration ([`service::settings`]) and logging / trace set-up
//!   ([`service::telemetry`]).
//! - [`ingest`]: a second service (`clickpipe ingest`): the Elasticsearch / OpenSearch tailer.
//! - [`sink`]: a third (`clickpipe sink s3`): the output and dead-letter topics kept in S3.
//! - [`tools`]: developer tools: the load generator, the reference model server, Redis seeding,
//!   the mock broker and the admin API's command-line client.
//! - [`server`]: the HTTP listener set-up and the stop signal the services share.
//!
//! `src/main.rs` is the command line only: it parses arguments and calls these.

pub mod ingest;
pub mod server;
pub mod service;
#[cfg(feature = "aws")]
pub mod sink;

/// What a build without the `aws` feature says when asked for S3 or DynamoDB.
pub const NO_AWS: &str =
    "this build of clickpipe has no AWS SDK service clients (S3, DynamoDB): build it with the `aws` feature (on by default)";
pub mod tools;

/// Log target of the lines that `main.rs` wrote before they moved into the library (`clickpipe
/// running`, `stopped`, `model server listening`, …): the binary crate's root, `clickpipe`. Kept
/// so that log filters and queries on it still match.
pub(crate) const CLI_LOG_TARGET: &str = "clickpipe";
