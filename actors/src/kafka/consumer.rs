//! The group consumer's client context: librdkafka's logs go to `tracing`, MSK IAM tokens come
//! from an [`AuthContext`], input partitions' high watermarks come from librdkafka's statistics,
//! and rebalances are handed to whoever runs the group ([`GroupEvents`]) — this module knows
//! nothing of the actors that handle them.

use std::sync::Arc;

use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, TopicPartitionList};

use super::auth::AuthContext;

/// The pipeline's group consumer.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// What the group's owner does when librdkafka reports on the group.
pub trait GroupEvents: Send + Sync + 'static {
    /// Partitions are being revoked (`lost`: the assignment was lost, so nothing may be
    /// committed); returns once they are drained.
    fn revoked(&self, tpl: &TopicPartitionList, lost: bool);
    /// Partitions were assigned.
    fn assigned(&self, tpl: &TopicPartitionList);
    /// The broker's high watermark of an input partition (from librdkafka's statistics).
    fn high_watermark(&self, partition: i32, offset: i64);
}

/// The group consumer's context.
pub struct GroupContext {
    events: Arc<dyn GroupEvents>,
    auth: AuthContext,
    input_topic: String,
}

impl GroupContext {
    /// A context reporting to `events`, authenticating with `auth`, reading the statistics of
    /// `input_topic`.
    pub fn new(events: Arc<dyn GroupEvents>, auth: AuthContext, input_topic: &str) -> Self {
        GroupContext {
            events,
            auth,
            input_topic: input_topic.to_string(),
        }
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    /// With `kafka.auth = msk_iam`: a fresh MSK IAM token (librdkafka asks before the last one
    /// expires).
    fn generate_oauth_token(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.auth.generate_oauth_token(oauthbearer_config)
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): the input partitions' high
    /// watermarks, for `/status` and `/metrics`. Read from the raw JSON so a field librdkafka
    /// leaves out never costs more than that one value.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            tracing::debug!("unparsable librdkafka statistics");
            return;
        };
        let Some(partitions) = stats
            .get("topics")
            .and_then(|t| t.get(self.input_topic.as_str()))
            .and_then(|t| t.get("partitions"))
            .and_then(|p| p.as_object())
        else {
            return;
        };
        for (id, p) in partitions {
            let (Ok(id), Some(hi)) = (
                id.parse::<i32>(),
                p.get("hi_offset").and_then(serde_json::Value::as_i64),
            ) else {
                continue;
            };
            // -1: the internal "unassigned" partition; a negative offset: not known yet.
            if id >= 0 && hi >= 0 {
                self.events.high_watermark(id, hi);
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.events.revoked(tpl, consumer.assignment_lost()),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(offsets = ?offsets.to_topic_map(), "offsets committed"),
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.events.assigned(tpl);
        }
    }
}
