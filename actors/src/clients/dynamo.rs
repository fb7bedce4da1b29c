//! The DynamoDB fallback of ZIP data (`redis.fallback = "dynamodb"`): the table `dynamodb.table`
//! with partition key `zip` (S) and attributes `median_income` (N) and `timezone` (S), read with
//! `BatchGetItem` (one call per 100 ZIPs, unprocessed keys asked again).
//!
//! The client is built on first use, on the thread of the lookup actor that uses it, so its
//! connections live on that thread's runtime.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use tokio::sync::OnceCell;

use crate::clients::sdk::{https_client, sdk_config};
use crate::config::DynamoConfig;
use crate::error::ClientError;
use crate::features::ZipInfo;

/// The most keys one `BatchGetItem` asks for.
const BATCH_GET: usize = 100;
/// The most items one `BatchWriteItem` writes.
const BATCH_WRITE: usize = 25;

/// The ZIP table.
pub struct ZipTable {
    config: DynamoConfig,
    timeout: Duration,
    client: OnceCell<aws_sdk_dynamodb::Client>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::transient(format!("dynamodb {what}: {e}"))
}

impl ZipTable {
    /// The fallback table of `config` when `redis.fallback = "dynamodb"`; each call is bounded
    /// by `redis.timeout_ms`.
    pub fn for_lookups(config: &crate::config::Config) -> Option<Self> {
        (config.redis.fallback == crate::config::LookupFallback::Dynamodb)
            .then(|| ZipTable::new(&config.dynamodb, config.redis.timeout_ms.get()))
    }

    /// The table of `config`; each call is bounded by `timeout`.
    pub fn new(config: &DynamoConfig, timeout: Duration) -> Self {
        ZipTable {
            config: config.clone(),
            timeout,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_dynamodb::Client {
        self.client
            .get_or_init(|| async {
                let shared = sdk_config(&self.config.region).await;
                let mut b =
                    aws_sdk_dynamodb::config::Builder::from(&shared).http_client(https_client());
                let url = self.config.endpoint_url.trim();
                if !url.is_empty() {
                    b = b.endpoint_url(url);
                }
                aws_sdk_dynamodb::Client::from_conf(b.build())
            })
            .await
    }

    /// The ZIP data of `zips` the table has (absent ones are left out).
    pub async fn get(&self, zips: &[&str]) -> Result<HashMap<String, ZipInfo>, ClientError> {
        let client = self.client().await;
        let mut found = HashMap::new();
        for chunk in zips.chunks(BATCH_GET) {
            let keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|z| HashMap::from([("zip".to_string(), AttributeValue::S((*z).to_string()))]))
                .collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                // `timezone` is a reserved word in DynamoDB expressions.
                .projection_expression("#z, #i, #t")
                .expression_attribute_names("#z", "zip")
                .expression_attribute_names("#i", "median_income")
                .expression_attribute_names("#t", "timezone")
                .build()
                .map_err(|e| failed("request", e))?;
            // Unprocessed keys (throttling) are asked again, a few times.
            for _ in 0..4 {
                let call = client
                    .batch_get_item()
                    .request_items(&self.config.table, request.clone())
                    .send();
                let out = tokio::time::timeout(self.timeout, call)
                    .await
                    .map_err(|_| failed("BatchGetItem", "timed out"))?
                    .map_err(|e| {
                        failed(
                            "BatchGetItem",
                            aws_sdk_dynamodb::error::DisplayErrorContext(e),
                        )
                    })?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.config.table))
                    .into_iter()
                    .flatten()
                {
                    let Some(AttributeValue::S(zip)) = item.get("zip") else {
                        continue;
                    };
                    let income = match item.get("median_income") {
                        Some(AttributeValue::N(n)) => Some(n.as_str()),
                        _ => None,
                    };
                    let tz = match item.get("timezone") {
                        Some(AttributeValue::S(s)) => Some(s.as_str()),
                        _ => None,
                    };
                    found.insert(zip.clone(), ZipInfo::from_fields(income, tz));
                }
                match out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.config.table))
                    .filter(|k| !k.keys().is_empty())
                {
                    Some(rest) => request = rest.clone(),
                    None => break,
                }
            }
        }
        Ok(found)
    }

    /// Writes `rows` (zip, median income, time zone) to the table, 25 per call.
    pub async fn put(&self, rows: &[(String, String, String)]) -> Result<usize, ClientError> {
        let client = self.client().await;
        let mut written = 0;
        for chunk in rows.chunks(BATCH_WRITE) {
            let mut requests = Vec::with_capacity(chunk.len());
            for (zip, income, tz) in chunk {
                let mut item = HashMap::from([("zip".to_string(), AttributeValue::S(zip.clone()))]);
                if !income.trim().is_empty() {
                    item.insert(
                        "median_income".to_string(),
                        AttributeValue::N(income.trim().to_string()),
                    );
                }
                if !tz.trim().is_empty() {
                    item.insert(
                        "timezone".to_string(),
                        AttributeValue::S(tz.trim().to_string()),
                    );
                }
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| failed("request", e))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = requests;
            for attempt in 0..8u32 {
                let out = client
                    .batch_write_item()
                    .request_items(&self.config.table, pending.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            "BatchWriteItem",
                            aws_sdk_dynamodb::error::DisplayErrorContext(e),
                        )
                    })?;
                let left: Vec<WriteRequest> = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.config.table))
                    .cloned()
                    .unwrap_or_default();
                written += pending.len() - left.len();
                if left.is_empty() {
                    break;
                }
                pending = left;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
        }
        Ok(written)
    }
}
