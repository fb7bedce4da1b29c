//! The sink consumer's context: MSK IAM tokens as the other clients get them, and the partitions
//! a rebalance took away, so their unwritten records are dropped rather than written late.

use std::sync::Mutex;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

use clickpipe_actors::kafka::auth::AuthContext;

/// See the module documentation.
pub struct SinkContext {
    auth: AuthContext,
    revoked: Mutex<Vec<(String, i32)>>,
}

impl SinkContext {
    /// A context authenticating with `auth`.
    pub fn new(auth: AuthContext) -> Self {
        SinkContext {
            auth,
            revoked: Mutex::new(Vec::new()),
        }
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        match self.revoked.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

impl ClientContext for SinkContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(oauthbearer_config)
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let gone = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect::<Vec<_>>();
            match self.revoked.lock() {
                Ok(mut r) => r.extend(gone),
                Err(poisoned) => poisoned.into_inner().extend(gone),
            }
        }
    }
}
