//! Where the tailer is: the newest timestamp sent (the cursor) and the ids of the documents sent
//! inside the overlap window behind it. Each poll reads again from `cursor − overlap`, so a
//! document that became visible late (after newer ones were sent) is still found; the ids make
//! sure a document is sent once. Stored in Redis after every acknowledged page, so a restart
//! resumes with no gap; what a killed tailer sent after its last store is sent again (at most one
//! page).

use std::collections::BTreeMap;

use anyhow::Context as _;
use deadpool_redis::redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

/// The tailer's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Newest timestamp sent (epoch ms); None before the first document.
    pub cursor_ms: Option<i64>,
    /// Documents sent with a timestamp at or after `cursor_ms − overlap`: id → timestamp.
    pub seen: BTreeMap<String, i64>,
    /// Sort values of the last document sent (for operators; paging restarts from the cursor).
    #[serde(default)]
    pub last_sort: Vec<serde_json::Value>,
}

impl Checkpoint {
    /// A checkpoint that starts at `ms` (documents older than `ms − overlap` are not read).
    pub fn starting_at(ms: i64) -> Self {
        Checkpoint {
            cursor_ms: Some(ms),
            ..Checkpoint::default()
        }
    }

    /// Where the next poll reads from: `cursor − overlap`, or everything when nothing was sent.
    pub fn floor(&self, overlap_ms: i64) -> Option<i64> {
        self.cursor_ms.map(|c| c.saturating_sub(overlap_ms))
    }

    /// Whether the document `id` is still to be sent.
    pub fn is_new(&self, id: &str) -> bool {
        !self.seen.contains_key(id)
    }

    /// Notes that `id` (at `ts_ms`) was sent and moves the cursor — never past `now_ms`, the time
    /// of the search that found it. "Everything before the cursor was read" cannot hold for a time
    /// that has not come yet: a document from a skewed clock (year 2099, or five minutes ahead)
    /// would otherwise put every document of the present below the cursor, never to be read. A
    /// future document stays remembered by id, so reading it again does not send it again.
    pub fn sent(&mut self, id: &str, ts_ms: i64, now_ms: i64) {
        let ts = ts_ms.min(now_ms);
        self.cursor_ms = Some(self.cursor_ms.map_or(ts, |c| c.max(ts)));
        self.seen.insert(id.to_string(), ts_ms);
    }

    /// A checkpoint stored with its cursor ahead of `now_ms` (by an earlier version) starts at
    /// `now_ms` instead.
    pub fn not_after(mut self, now_ms: i64) -> Self {
        self.cursor_ms = self.cursor_ms.map(|c| c.min(now_ms));
        self
    }

    /// Forgets the ids that fell out of the window: the next poll's range does not reach them.
    pub fn prune(&mut self, overlap_ms: i64) {
        if let Some(floor) = self.floor(overlap_ms) {
            self.seen.retain(|_, ts| *ts >= floor);
        }
    }
}

/// The checkpoint in Redis (one JSON string under `ingest.checkpoint_key`), through a pool built
/// like the pipeline's from `redis.*`; a lost connection is made again on the next call.
pub struct Store {
    pool: deadpool_redis::Pool,
    key: String,
}

impl Store {
    /// A store in the Redis of `cfg` (connects on first use).
    pub fn new(cfg: &clickpipe_actors::config::RedisConfig, key: &str) -> anyhow::Result<Store> {
        let pool = clickpipe_actors::clients::redis::create_pool(cfg)
            .map_err(|e| anyhow::anyhow!("invalid config key `redis.url`: {e}"))?;
        Ok(Store {
            pool,
            key: key.to_string(),
        })
    }

    async fn conn(&self) -> anyhow::Result<deadpool_redis::Connection> {
        self.pool.get().await.context("cannot reach Redis")
    }

    /// The stored checkpoint, if any.
    pub async fn load(&mut self) -> anyhow::Result<Option<Checkpoint>> {
        let text: Option<String> = self
            .conn()
            .await?
            .get(&self.key)
            .await
            .context("reading the checkpoint")?;
        text.map(|t| {
            serde_json::from_str(&t)
                .with_context(|| format!("the checkpoint in Redis key {} is not valid", self.key))
        })
        .transpose()
    }

    /// Stores `checkpoint`.
    pub async fn save(&mut self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let text = serde_json::to_string(checkpoint)?;
        let () = self
            .conn()
            .await?
            .set(&self.key, text)
            .await
            .context("writing the checkpoint")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    #[test]
    fn the_floor_trails_the_cursor_by_the_overlap() {
        let mut c = Checkpoint::default();
        assert_eq!(c.floor(2000), None, "nothing sent: read everything");
        c.sent("a", 10_000, NOW);
        assert_eq!(c.floor(2000), Some(8000));
        c.sent("late", 9_000, NOW);
        assert_eq!(
            c.cursor_ms,
            Some(10_000),
            "an older document does not move the cursor back"
        );
    }

    #[test]
    fn ids_inside_the_window_are_remembered_and_older_ones_forgotten() {
        let mut c = Checkpoint::default();
        c.sent("a", 1_000, NOW);
        c.sent("b", 2_500, NOW);
        c.prune(2000);
        assert!(!c.is_new("a") && !c.is_new("b"));
        c.sent("c", 3_500, NOW);
        c.prune(2000);
        // floor 1,500: `a` can no longer be read again, so it is forgotten.
        assert!(c.is_new("a"));
        assert!(!c.is_new("b") && !c.is_new("c"));
        assert_eq!(c.seen.len(), 2);
    }

    #[test]
    fn a_document_from_the_future_does_not_move_the_cursor_past_now() {
        let mut c = Checkpoint::default();
        c.sent("skewed", NOW + 10 * 365 * 86_400_000, NOW);
        c.sent("ahead", NOW + 60_000, NOW);
        assert_eq!(c.cursor_ms, Some(NOW));
        c.prune(2000);
        assert!(
            !c.is_new("skewed") && !c.is_new("ahead"),
            "still remembered, so not sent again"
        );
        // A second later, a document of the present is at or after the cursor: it is read.
        c.sent("present", NOW + 1000, NOW + 1000);
        assert_eq!(c.cursor_ms, Some(NOW + 1000));
        assert_eq!(
            Checkpoint::starting_at(NOW + 300_000)
                .not_after(NOW)
                .cursor_ms,
            Some(NOW)
        );
    }

    #[test]
    fn a_checkpoint_survives_json() {
        let mut c = Checkpoint::starting_at(5_000);
        c.sent("x", 6_000, NOW);
        c.last_sort = vec![serde_json::json!(6000), serde_json::json!("x")];
        let back: Checkpoint =
            serde_json::from_str(&serde_json::to_string(&c).expect("json")).expect("parse");
        assert_eq!(back, c);
    }
}
