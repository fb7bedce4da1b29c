//! The unit of work flowing through a partition's stages: one input record and what the stages
//! have learnt about it so far. The type says how far a record got — [`Record<Event>`] leaves the
//! source, [`Record<LookedUp>`] the lookup stage, [`Record<Enriched>`] enrich, [`Record<Scored>`]
//! infer and [`Record<Emitted>`] emit — so a stage is handed exactly what the one before it
//! produced and has no "missing part" to check. The [`Input`] (key and payload unchanged) rides
//! along so a dead letter can carry it from any stage.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use crate::clients::model::Prediction;
use crate::event::{rfc3339, Event};
use crate::features::{FeatureValues, ZipInfo};
use crate::kafka::transaction::Permit;
use crate::session::SessionSnapshot;
use crate::trace::RecordTrace;

/// An input record as it was read, with where it came from: what every stage keeps and what a
/// dead letter carries.
#[derive(Debug)]
pub struct Input {
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
    /// The record's trace, when it is traced or carries its producer's trace context.
    pub trace: Option<Box<RecordTrace>>,
    /// Exactly-once mode: the transaction epoch its partition read it in (a record of an epoch
    /// since aborted is never written). Always 0 in at-least-once mode.
    pub epoch: u64,
}

/// One input record in flight, with what the stages so far made of it (`T`).
#[derive(Debug)]
pub struct Record<T> {
    /// The record as read.
    pub input: Input,
    /// What the stages so far produced.
    pub data: T,
}

impl<T> Record<T> {
    /// The same record one stage further: `data` replaces what it carried.
    pub fn advance<U>(self, data: U) -> Record<U> {
        Record {
            input: self.input,
            data,
        }
    }
}

/// What the lookup stage adds to a decoded event.
#[derive(Debug)]
pub struct LookedUp {
    /// The decoded event.
    pub event: Event,
    /// ZIP data; None when the event has no ZIP or Redis does not know it.
    pub zip: Option<Arc<ZipInfo>>,
    /// The session right after this event was applied.
    pub session: SessionSnapshot,
    /// With a declared feature set: what Redis said for its lookups and windows.
    pub declared: Option<Box<crate::feature_set::plan::Declared>>,
}

/// A record with its features: what the model is asked about.
#[derive(Debug)]
pub struct Enriched {
    /// The decoded event.
    pub event: Event,
    /// The features computed from the event and its lookups.
    pub features: FeatureValues,
    /// The declared feature set's `version` (None with the built-in features).
    pub features_version: Option<Arc<str>>,
}

/// A record with the model's answer: everything its output record is made of.
#[derive(Debug)]
pub struct Scored {
    /// The decoded event.
    pub event: Event,
    /// The features the model was given.
    pub features: FeatureValues,
    /// The declared feature set's `version`, copied into the output record.
    pub features_version: Option<Arc<str>>,
    /// The model's answer.
    pub prediction: Prediction,
}

/// A record whose output the broker acknowledged: only its offset matters now. In exactly-once
/// mode it holds its share of the transaction its output is in until its partition has counted it
/// finished.
#[derive(Debug)]
pub struct Emitted(pub Option<Permit>);

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
    /// The declared feature set's `version` (absent with the built-in features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_version: Option<&'a str>,
    /// Every feature, by name.
    pub features: &'a FeatureValues,
    /// The model's answer.
    pub prediction: &'a Prediction,
    /// When the output was built, RFC 3339 UTC.
    pub processed_at: String,
}

impl Scored {
    /// The output record value.
    pub fn output_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let event = &self.event;
        serde_json::to_vec(&OutputRecord {
            event_id: &event.event_id,
            user_id: &event.user_id,
            session_id: &event.session_id,
            event_time: rfc3339(event.timestamp),
            features_version: self.features_version.as_deref(),
            features: &self.features,
            prediction: &self.prediction,
            processed_at: rfc3339(Utc::now()),
        })
    }
}
