//! The unit of work flowing through a partition's stages: one input record and everything learnt
//! about it so far. Stages fill in their part; the original key and payload stay untouched so a
//! dead letter can carry them unchanged.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::clients::model::Prediction;
use crate::event::{rfc3339, Event};
use crate::features::{Features, ZipInfo};
use crate::session::SessionSnapshot;
use crate::trace::RecordTrace;

/// One input record in flight.
#[derive(Debug, Clone)]
pub struct Record {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record key, kept for the output and dead-letter records.
    pub key: Option<Vec<u8>>,
    /// Record value, unchanged.
    pub payload: Vec<u8>,
    /// Record timestamp (epoch ms), when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Times this record was replayed from the dead-letter topic (its `clickpipe.replay.count`
    /// header); carried into a new dead letter so the replay loop guard sees it.
    pub replay_count: u32,
    /// When clickpipe read the record.
    pub received: Instant,
    /// The decoded event (set by the source).
    pub event: Option<Event>,
    /// ZIP data (set by the lookup stage; None when unknown or absent).
    pub zip: Option<Arc<ZipInfo>>,
    /// Session snapshot (set by the lookup stage).
    pub session: Option<SessionSnapshot>,
    /// Features (set by the enrich stage).
    pub features: Option<Features>,
    /// Model answer (set by the infer stage).
    pub prediction: Option<Prediction>,
    /// The record's trace, when it is traced or carries its producer's trace context.
    pub trace: Option<Box<RecordTrace>>,
}

/// The value of an output record.
#[derive(Debug, Serialize)]
pub struct OutputRecord<'a> {
    /// From the event.
    pub event_id: &'a str,
    /// From the event.
    pub user_id: &'a str,
    /// From the event.
    pub session_id: &'a str,
    /// Event time, RFC 3339 UTC.
    pub event_time: String,
    /// Every feature, by name.
    pub features: &'a Features,
    /// The model's answer.
    pub prediction: &'a Prediction,
    /// When the output was built, RFC 3339 UTC.
    pub processed_at: String,
}

impl Record {
    /// The output record value, or None when a stage has not filled its part.
    pub fn output_json(&self) -> Option<Vec<u8>> {
        let event = self.event.as_ref()?;
        let out = OutputRecord {
            event_id: &event.event_id,
            user_id: &event.user_id,
            session_id: &event.session_id,
            event_time: rfc3339(event.timestamp),
            features: self.features.as_ref()?,
            prediction: self.prediction.as_ref()?,
            processed_at: rfc3339(Utc::now()),
        };
        serde_json::to_vec(&out).ok()
    }
}
