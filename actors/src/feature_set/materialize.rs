//! The online store (`[[materialize]] entity = "user_id" ttl = "1h"`): the latest feature vector
//! of each entity, kept in the Redis hash `features:{entity}:{value}` for other services to read
//! what the model saw.
//!
//! The hash holds each output feature by name (numbers as JSON writes them, flags `true` /
//! `false`, strings as they are; a feature without a value is left out) and three fields of its
//! own: `_event_id`, `_event_time_ms` and `_features_version`. "Latest" is by event time: an
//! event older than the one stored leaves the hash alone (ties: the later write wins), so events
//! arriving out of order or redelivered never roll the vector back. Each write replaces the whole
//! hash and renews its TTL.

use super::engine::{field_text, Computed, Value};
use super::validate::parse_duration;
use super::FeatureSet;
use crate::event::Event;

/// One write to the online store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreWrite {
    /// `features:{entity}:{value}`.
    pub key: String,
    /// The event's time, epoch milliseconds.
    pub ts_ms: i64,
    /// The hash's time to live, milliseconds.
    pub ttl_ms: i64,
    /// Field, value pairs.
    pub fields: Vec<(String, String)>,
}

/// The online store's hash of `entity`'s `value`.
pub fn store_key(entity: &str, value: &str) -> String {
    format!("features:{entity}:{value}")
}

/// A value as the online store writes it (None: left out).
fn text(v: &Value) -> Option<String> {
    Some(match v {
        Value::UInt(x) => x.to_string(),
        Value::Int(x) => x.to_string(),
        Value::Float(x) => serde_json::to_string(x).ok()?,
        Value::Bool(x) => x.to_string(),
        Value::Str(s) => s.clone(),
        Value::Null => return None,
    })
}

impl FeatureSet {
    /// Whether the set keeps an online store.
    pub fn materializes(&self) -> bool {
        !self.file.materialize.is_empty()
    }

    /// The online-store writes of one event's computed features: one per `[[materialize]]`
    /// entity the event has.
    pub fn store_writes(&self, event: &Event, computed: &Computed) -> Vec<StoreWrite> {
        if !self.materializes() {
            return Vec::new();
        }
        let mut fields: Vec<(String, String)> = computed
            .0
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect();
        fields.push(("_event_id".into(), event.event_id.clone()));
        fields.push(("_features_version".into(), self.version.to_string()));
        self.file
            .materialize
            .iter()
            .filter_map(|m| {
                let value = field_text(event, &m.entity)?;
                let ttl = parse_duration(&m.ttl)?;
                Some(StoreWrite {
                    key: store_key(&m.entity, &value),
                    ts_ms: event.timestamp.timestamp_millis(),
                    ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
                    fields: fields.clone(),
                })
            })
            .collect()
    }
}

/// The script's `KEYS` and `ARGV` for `writes`.
pub fn store_args(writes: &[StoreWrite]) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::with_capacity(writes.len());
    let mut argv = Vec::new();
    for w in writes {
        keys.push(w.key.clone());
        argv.push(w.ts_ms.to_string());
        argv.push(w.ttl_ms.to_string());
        argv.push(w.fields.len().to_string());
        for (k, v) in &w.fields {
            argv.push(k.clone());
            argv.push(v.clone());
        }
    }
    (keys, argv)
}

/// Redis script applying a batch of [`StoreWrite`]s in order. `KEYS`: per write its hash;
/// `ARGV`: per write event time (ms), TTL (ms), the number of fields, then field, value pairs.
/// A write whose event time is older than the stored `_event_time_ms` is skipped. Returns the
/// number of writes applied.
pub const STORE_SCRIPT: &str = r#"
local a, applied = 1, 0
for i, key in ipairs(KEYS) do
  local ts_s, ttl, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local stored = redis.call('HGET', key, '_event_time_ms')
  if not stored or not tonumber(stored) or tonumber(stored) <= tonumber(ts_s) then
    redis.call('DEL', key)
    local args = { '_event_time_ms', ts_s }
    for j = 1, 2 * n do args[#args + 1] = ARGV[a + 2 + j] end
    redis.call('HSET', key, unpack(args))
    redis.call('PEXPIRE', key, ttl)
    applied = applied + 1
  end
  a = a + 3 + 2 * n
end
return applied
"#;
