//! `[s3]`: the S3 sink (`clickpipe sink s3`), which keeps the output topic (and, when asked, the
//! dead-letter topic) in S3 as Parquet or gzip JSON lines, partitioned by event hour.

use serde::{Deserialize, Serialize};

use clickpipe_actors::config::{bad, non_empty, positive, ConfigError, Millis};

/// The object format (`s3.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    /// Apache Parquet, one typed column per field and feature (snappy-compressed).
    #[default]
    Parquet,
    /// One JSON record per line, gzip-compressed.
    Jsonl,
}

impl ObjectFormat {
    /// The objects' file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ObjectFormat::Parquet => "parquet",
            ObjectFormat::Jsonl => "jsonl.gz",
        }
    }
}

/// The S3 sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The sink's own consumer group (a new group starts from the earliest record).
    pub group_id: String,
    /// Also keep the dead-letter topic, under `dead_letter_prefix`.
    pub include_dead_letters: bool,
    /// The bucket (required by `clickpipe sink s3`).
    pub bucket: String,
    /// Key prefix of the predictions' objects (no leading or trailing `/`).
    pub prefix: String,
    /// Key prefix of the dead letters' objects (empty: `{prefix}-dead-letters`).
    pub dead_letter_prefix: String,
    /// `parquet` or `jsonl` (gzip).
    pub format: ObjectFormat,
    /// Flush a partition's records once it holds this many.
    pub max_records: usize,
    /// Flush a partition's records once their values add up to this many bytes.
    pub max_bytes: usize,
    /// Flush a partition's records once the oldest has waited this long.
    pub max_interval_ms: Millis,
    /// The region (empty: the AWS chain's: `AWS_REGION`, profile, instance metadata).
    pub region: String,
    /// An S3-compatible endpoint instead of AWS's (e.g. `http://127.0.0.1:5000`).
    pub endpoint_url: String,
    /// Path-style addressing (`{endpoint}/{bucket}/{key}`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Address of the sink's HTTP endpoint (`/health/live`, `/health/ready`, `/status`,
    /// `/metrics`).
    pub listen: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            group_id: "clickpipe-s3-sink".into(),
            include_dead_letters: false,
            bucket: String::new(),
            prefix: "predictions".into(),
            dead_letter_prefix: String::new(),
            format: ObjectFormat::Parquet,
            max_records: 100_000,
            max_bytes: 64 << 20,
            max_interval_ms: Millis(60_000),
            region: String::new(),
            endpoint_url: String::new(),
            force_path_style: false,
            listen: "127.0.0.1:9095".into(),
        }
    }
}

/// A key prefix must be non-empty and have no leading, trailing or doubled `/`.
fn prefix_ok(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.starts_with('/') || value.ends_with('/') || value.contains("//") {
        return Err(bad(
            key,
            format!("`{value}` must be non-empty, without a leading, trailing or doubled `/`"),
        ));
    }
    Ok(())
}

impl S3Config {
    /// Checks this section's values; the first problem is returned with its key. The bucket may
    /// be empty here (other commands do not need it): see [`S3Config::require_bucket`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_empty(&[("s3.group_id", &self.group_id)])?;
        prefix_ok("s3.prefix", &self.prefix)?;
        if !self.dead_letter_prefix.is_empty() {
            prefix_ok("s3.dead_letter_prefix", &self.dead_letter_prefix)?;
            if self.dead_letter_prefix == self.prefix {
                return Err(bad("s3.dead_letter_prefix", "must differ from s3.prefix"));
            }
        }
        if !(1..=10_000_000).contains(&self.max_records) {
            return Err(bad("s3.max_records", "must be between 1 and 10000000"));
        }
        if !((1 << 10)..=(4 << 30)).contains(&self.max_bytes) {
            return Err(bad("s3.max_bytes", "must be between 1 KiB and 4 GiB"));
        }
        positive("s3.max_interval_ms", self.max_interval_ms)?;
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("s3.listen", "must be an ip:port address"));
        }
        let url = self.endpoint_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "s3.endpoint_url",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        Ok(())
    }

    /// The bucket, required by the sink.
    pub fn require_bucket(&self) -> Result<&str, ConfigError> {
        match self.bucket.trim() {
            "" => Err(bad("s3.bucket", "is required by `clickpipe sink s3`")),
            b => Ok(b),
        }
    }

    /// The dead letters' key prefix.
    pub fn dead_letters_prefix(&self) -> String {
        match self.dead_letter_prefix.as_str() {
            "" => format!("{}-dead-letters", self.prefix),
            p => p.to_string(),
        }
    }
}
