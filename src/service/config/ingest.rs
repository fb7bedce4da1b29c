//! `[ingest]`: the Elasticsearch / OpenSearch tailer (`clickpipe ingest`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use clickpipe_actors::config::{bad, non_empty, positive, ConfigError, Millis};

/// When the tailer pages with a point in time (`ingest.pit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PitMode {
    /// Only when the cluster refuses to sort on `tiebreaker_field`.
    #[default]
    Auto,
    /// Always; start-up fails when the cluster opens none.
    Always,
    /// Never.
    Never,
}

/// Where the tailer begins without a checkpoint (`ingest.start_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The whole index.
    #[default]
    Earliest,
    /// Only documents indexed from now on.
    Now,
}

/// The Elasticsearch / OpenSearch tailer: reads an index in `timestamp_field` order and writes
/// every document to `kafka.input_topic`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Base URL of the cluster, e.g. `http://localhost:9200` or `https://search-…:443`.
    pub url: String,
    /// Index (or alias, or pattern) to tail.
    pub index: String,
    /// Milliseconds between polls once caught up.
    pub poll_interval_ms: Millis,
    /// The date field documents are ordered by.
    pub timestamp_field: String,
    /// A unique field to order documents with equal timestamps, when no point in time is used
    /// (`_id` works on OpenSearch; Elasticsearch 8 refuses to sort on `_id`: use a keyword field
    /// such as `event_id`, or a point in time).
    pub tiebreaker_field: String,
    /// Point in time for each poll's paging: `auto` (only when the cluster refuses to sort on
    /// `tiebreaker_field`), `always`, `never`.
    pub pit: PitMode,
    /// Documents per search request.
    pub page_size: usize,
    /// How far behind the newest timestamp sent each poll looks again, for documents that became
    /// visible late (refresh, slow ingest); documents sent already are skipped by id.
    pub overlap_ms: Millis,
    /// Where to begin with no checkpoint: `earliest` (the whole index) or `now`.
    pub start_from: StartFrom,
    /// The Redis key holding the checkpoint (cursor and the ids inside the overlap window).
    pub checkpoint_key: String,
    /// Basic auth user (with `password`).
    pub username: Option<String>,
    /// Basic auth password. Secret.
    pub password: Option<String>,
    /// API key (`Authorization: ApiKey …`, the base64 `id:key` form). Secret.
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the cluster's certificate (default: the system's roots).
    pub tls_ca_file: Option<String>,
    /// Skip certificate verification (testing only).
    pub tls_insecure: bool,
    /// Per-request timeout in milliseconds.
    pub timeout_ms: Millis,
    /// Address of the tailer's own HTTP endpoint (`/health/live`, `/status`, `/metrics`).
    pub listen: String,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            url: "http://127.0.0.1:9200".into(),
            index: "clicks".into(),
            poll_interval_ms: Millis(250),
            timestamp_field: "@timestamp".into(),
            tiebreaker_field: "_id".into(),
            pit: PitMode::Auto,
            page_size: 1000,
            overlap_ms: Millis(2000),
            start_from: StartFrom::Earliest,
            checkpoint_key: "clickpipe:ingest:checkpoint".into(),
            username: None,
            password: None,
            api_key: None,
            tls_ca_file: None,
            tls_insecure: false,
            timeout_ms: Millis(10_000),
            listen: "127.0.0.1:9091".into(),
        }
    }
}

impl IngestConfig {
    /// Checks this section's values; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "ingest.url",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        non_empty(&[
            ("ingest.index", &self.index),
            ("ingest.timestamp_field", &self.timestamp_field),
            ("ingest.tiebreaker_field", &self.tiebreaker_field),
            ("ingest.checkpoint_key", &self.checkpoint_key),
        ])?;
        positive("ingest.poll_interval_ms", self.poll_interval_ms)?;
        if !(1..=10_000).contains(&self.page_size) {
            return Err(bad("ingest.page_size", "must be between 1 and 10000"));
        }
        positive("ingest.timeout_ms", self.timeout_ms)?;
        if self.username.is_some() != self.password.is_some() {
            return Err(bad("ingest.username", "username and password go together"));
        }
        if self.username.is_some() && self.api_key.is_some() {
            return Err(bad(
                "ingest.api_key",
                "use either an API key or username/password",
            ));
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("ingest.listen", "must be an ip:port address"));
        }
        Ok(())
    }
}
