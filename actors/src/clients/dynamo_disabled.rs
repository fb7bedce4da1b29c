//! A build without the `aws` feature has no DynamoDB client: the table cannot exist (the
//! configuration refuses `redis.fallback = "dynamodb"`, naming the key), so the lookup client's
//! fallback is always absent. The same names as the real module keep the callers free of `cfg`.

use std::collections::HashMap;

use crate::error::ClientError;
use crate::features::ZipInfo;

/// No table can be made in this build.
pub enum ZipTable {}

impl ZipTable {
    /// Always None: this build has no DynamoDB client.
    pub fn for_lookups(_: &crate::config::Config) -> Option<Self> {
        None
    }

    /// Never called: no value of this type exists.
    pub async fn get(&self, _: &[&str]) -> Result<HashMap<String, ZipInfo>, ClientError> {
        match *self {}
    }
}
