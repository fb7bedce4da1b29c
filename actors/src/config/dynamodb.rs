//! `[dynamodb]`: the table ZIP data falls back to (`redis.fallback = "dynamodb"`).

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// The DynamoDB table of ZIP data: partition key `zip` (string), attributes `median_income`
/// (number) and `timezone` (string).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamoConfig {
    /// The table (required with `redis.fallback = "dynamodb"`).
    pub table: String,
    /// The region (empty: the AWS chain's).
    pub region: String,
    /// A DynamoDB-compatible endpoint instead of AWS's (e.g. `http://127.0.0.1:8000`).
    pub endpoint_url: String,
}

impl DynamoConfig {
    /// Checks this section's values; `required`: the fallback is on.
    pub fn validate(&self, required: bool) -> Result<(), ConfigError> {
        if required && self.table.trim().is_empty() {
            return Err(bad(
                "dynamodb.table",
                "is required with redis.fallback = \"dynamodb\"",
            ));
        }
        let url = self.endpoint_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "dynamodb.endpoint_url",
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        Ok(())
    }
}
