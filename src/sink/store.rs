//! The object store: S3 (or an S3-compatible server at `s3.endpoint_url`) through the AWS SDK,
//! with credentials and region from `aws-config`'s default chain.

use std::io::Write;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use flate2::write::GzEncoder;
use flate2::Compression;
use futures::stream::{self, StreamExt};

use std::sync::Arc;

use super::stats::SinkStats;
use crate::service::config::S3Config;

/// How many objects of a flush are written at once.
pub const PARALLEL_PUTS: usize = 16;

/// Writes objects to one bucket.
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    stats: Arc<SinkStats>,
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data)?;
    Ok(e.finish()?)
}

impl ObjectStore {
    /// A store for `bucket` as `s3` configures it, counting its failures in `stats`.
    pub async fn new(s3: &S3Config, bucket: &str, stats: Arc<SinkStats>) -> Self {
        let shared = clickpipe_actors::clients::sdk::sdk_config(&s3.region).await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if !s3.endpoint_url.trim().is_empty() {
            builder = builder.endpoint_url(s3.endpoint_url.trim());
        }
        builder = builder.force_path_style(s3.force_path_style);
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: bucket.to_string(),
            stats,
        }
    }

    /// Writes one object; the error as text. Counted in the stats either way.
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), String> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)));
        match &result {
            Ok(()) => self.stats.put_succeeded(),
            Err(e) => self.stats.put_failed(e),
        }
        result
    }

    /// Writes every object, [`PARALLEL_PUTS`] at a time, retrying each with backoff until it is
    /// written (a stalled sink is better than a lost object: its lag shows it). Returns true
    /// when all are written.
    pub async fn put_all(&self, objects: &[(String, Vec<u8>)]) -> bool {
        stream::iter(objects)
            .map(|(key, body)| async move {
                let mut attempt = 0u32;
                while let Err(e) = self.put(key, body).await {
                    attempt += 1;
                    let wait = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)));
                    tracing::warn!(error = %e, key, attempt, "s3 sink: writing an object failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            })
            .buffer_unordered(PARALLEL_PUTS)
            .collect::<Vec<()>>()
            .await;
        true
    }

    /// Writes every object once, [`PARALLEL_PUTS`] at a time; false when one failed.
    pub async fn put_all_once(&self, objects: &[(String, Vec<u8>)]) -> bool {
        let results: Vec<bool> = stream::iter(objects)
            .map(|(key, body)| async move {
                match self.put(key, body).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, key, "s3 sink: writing an object failed while stopping; the records are left to the next run");
                        false
                    }
                }
            })
            .buffer_unordered(PARALLEL_PUTS)
            .collect()
            .await;
        results.into_iter().all(|ok| ok)
    }
}
