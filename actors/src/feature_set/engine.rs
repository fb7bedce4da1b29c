//! Computing a declared feature set for one event. Pure: the event, the Redis hashes its lookups
//! address, its session snapshot and the aggregates the store computed for its stateful features
//! (session sums and distinct counts, windows) go in; the ordered feature values come out.

use std::collections::HashMap;

use chrono::{Datelike, Timelike};
use chrono_tz::Tz;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::plan::Declared;
use super::spec::{FeatureSpec, Kind, OnMissing, SessionFunction, TimePart, ValueType};
use super::FeatureSet;
use crate::event::Event;
use crate::session::SessionSnapshot;

/// One feature's value, serialised as today's features are (integers without a fraction, floats
/// with one, `null` for an absent value).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An unsigned integer (counts, clock parts, one-hot 0/1).
    UInt(u64),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// A string.
    Str(String),
    /// No value (e.g. seconds since the previous event, for a session's first).
    Null,
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::UInt(v) => s.serialize_u64(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Float(v) => s.serialize_f64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Str(v) => s.serialize_str(v),
            Value::Null => s.serialize_unit(),
        }
    }
}

/// The computed features of one event, in model-instance order (`output = false` ones left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Computed(pub Vec<(String, Value)>);

impl Serialize for Computed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// What the store knew for one event (borrowed from its record: nothing is copied per event).
#[derive(Debug, Default, Clone, Copy)]
pub struct Known<'a> {
    /// The Redis hashes its lookups address and its window aggregates (None: nothing known).
    pub declared: Option<&'a Declared>,
    /// The event's session after it.
    pub session: Option<&'a SessionSnapshot>,
}

impl Known<'_> {
    /// The fields of the hash at `key` (None: no such hash).
    fn hash(&self, key: &str) -> Option<&HashMap<String, String>> {
        self.declared?.hashes.get(key).map(|h| &**h)
    }

    /// The stateful aggregate of feature `name` (None: nothing to aggregate, e.g. `avg` of no
    /// value).
    fn aggregate(&self, name: &str) -> Option<f64> {
        self.declared?.aggregates.get(name).copied().flatten()
    }
}

/// Why an event cannot have its features: a feature with `on_missing = "dead_letter"` could not
/// be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature `{feature}` cannot be computed: {reason}")]
pub struct Uncomputable {
    /// The feature.
    pub feature: String,
    /// Why.
    pub reason: String,
}

/// An event field as text (None when absent).
pub fn field_text(event: &Event, column: &str) -> Option<String> {
    match column {
        "event_id" => Some(event.event_id.clone()),
        "user_id" => Some(event.user_id.clone()),
        "session_id" => Some(event.session_id.clone()),
        "timestamp" => Some(event.timestamp.to_rfc3339()),
        "event_type" => Some(event.event_type.clone()),
        "page" => event.page.clone(),
        "referrer" => event.referrer.clone(),
        "zip" => event.zip.clone(),
        "device" => event.device.clone(),
        "price" => event.price.map(|p| p.to_string()),
        _ => None,
    }
}

/// `template` with each `{field}` replaced by the event's value; None when one is absent.
pub fn render(template: &str, event: &Event) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        out.push_str(&field_text(event, &after[..close])?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// `text` as a value of `t` (None when it does not parse; floats must be finite).
fn typed(text: &str, t: ValueType) -> Option<Value> {
    let v = text.trim();
    match t {
        ValueType::Float => v
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float),
        ValueType::Int => v.parse::<i64>().ok().map(Value::Int),
        ValueType::Bool => match v {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        ValueType::String => Some(Value::Str(text.to_string())),
    }
}

/// A feature's configured `default` as a value.
fn default_of(f: &FeatureSpec) -> Value {
    match &f.default {
        Some(toml::Value::Float(v)) => Value::Float(*v),
        Some(toml::Value::Integer(v)) => Value::Int(*v),
        Some(toml::Value::Boolean(v)) => Value::Bool(*v),
        Some(toml::Value::String(v)) => Value::Str(v.clone()),
        _ => Value::Null,
    }
}

impl FeatureSet {
    /// The features of `event` given what the store knew.
    pub fn compute(&self, event: &Event, known: &Known<'_>) -> Result<Computed, Uncomputable> {
        let mut all: HashMap<&str, Value> = HashMap::new();
        let mut out = Vec::with_capacity(self.outputs.len());
        for f in &self.file.features {
            let mut produced = self.compute_one(f, event, known, &all)?;
            if let Some((_, v)) = produced.first() {
                all.insert(f.name.as_str(), v.clone());
            }
            if f.output {
                out.append(&mut produced);
            }
        }
        Ok(Computed(out))
    }

    fn compute_one(
        &self,
        f: &FeatureSpec,
        event: &Event,
        known: &Known<'_>,
        earlier: &HashMap<&str, Value>,
    ) -> Result<Vec<(String, Value)>, Uncomputable> {
        let missing = |reason: String| match f.on_missing {
            OnMissing::Default => Ok(default_of(f)),
            OnMissing::DeadLetter => Err(Uncomputable {
                feature: f.name.clone(),
                reason,
            }),
        };
        let one = |v: Value| vec![(f.name.clone(), v)];
        Ok(match &f.kind {
            Kind::LocalTime {
                part,
                timezone_from,
            } => {
                let tz: Option<Tz> =
                    timezone_from
                        .as_deref()
                        .and_then(|from| match earlier.get(from) {
                            Some(Value::Str(s)) => s.trim().parse().ok(),
                            _ => None,
                        });
                one(clock_part(event, tz, *part))
            }
            Kind::Lookup {
                key,
                field,
                value_type,
                known: flag,
            } => {
                let found = render(key, event)
                    .and_then(|k| known.hash(&k))
                    .and_then(|h| h.get(field))
                    .and_then(|text| typed(text, *value_type));
                let is_known = found.is_some();
                let value = match found {
                    Some(v) => v,
                    None => missing(format!(
                        "`{field}` of `{key}` is absent or not a {value_type:?}"
                    ))?,
                };
                let mut v = one(value);
                if let Some(flag) = flag {
                    v.push((flag.clone(), Value::Bool(is_known)));
                }
                v
            }
            Kind::Session { function, .. } => {
                let s = known.session;
                one(match function {
                    SessionFunction::Count => Value::UInt(s.map_or(1, |s| s.count)),
                    SessionFunction::SecondsSincePrev => match s.and_then(|s| s.prev_ms) {
                        Some(p) => Value::Float(
                            event.timestamp.timestamp_millis().saturating_sub(p).max(0) as f64
                                / 1000.0,
                        ),
                        None => Value::Null,
                    },
                    SessionFunction::DurationS => Value::Float(s.map_or(0.0, |s| {
                        s.last_ms.saturating_sub(s.first_ms).max(0) as f64 / 1000.0
                    })),
                    SessionFunction::CountDistinct | SessionFunction::Sum => {
                        match known.aggregate(&f.name) {
                            Some(v) => Value::Float(v),
                            None => missing("no session aggregate".into())?,
                        }
                    }
                })
            }
            Kind::Window { .. } => match known.aggregate(&f.name) {
                Some(v) => one(Value::Float(v)),
                None => one(missing("nothing in the window to aggregate".into())?),
            },
            Kind::OneHot { column, values } => {
                let v = field_text(event, column).unwrap_or_default();
                let hit = values.contains(&v);
                values
                    .iter()
                    .map(|x| (format!("{}_{x}", f.name), Value::UInt(u64::from(*x == v))))
                    .chain(std::iter::once((
                        format!("{}_other", f.name),
                        Value::UInt(u64::from(!hit)),
                    )))
                    .collect()
            }
            Kind::Field { column, value_type } => {
                match field_text(event, column).and_then(|t| typed(&t, *value_type)) {
                    Some(v) => one(v),
                    None => one(missing(format!(
                        "event field `{column}` is absent or not a {value_type:?}"
                    ))?),
                }
            }
        })
    }
}

/// A part of `event`'s time in `tz` (UTC without one).
fn clock_part(event: &Event, tz: Option<Tz>, part: TimePart) -> Value {
    let t = event.timestamp;
    let (hour, minute, weekday, day, month) = match tz {
        Some(tz) => {
            let l = t.with_timezone(&tz);
            (l.hour(), l.minute(), l.weekday(), l.day(), l.month())
        }
        None => (t.hour(), t.minute(), t.weekday(), t.day(), t.month()),
    };
    let dow = weekday.num_days_from_monday();
    match part {
        TimePart::Hour => Value::UInt(hour.into()),
        TimePart::DayOfWeek => Value::UInt(dow.into()),
        TimePart::IsWeekend => Value::Bool(dow >= 5),
        TimePart::MinuteOfDay => Value::UInt((hour * 60 + minute).into()),
        TimePart::DayOfMonth => Value::UInt(day.into()),
        TimePart::Month => Value::UInt(month.into()),
        TimePart::Known => Value::Bool(tz.is_some()),
    }
}
