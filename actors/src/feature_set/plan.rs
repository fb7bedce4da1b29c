//! What a batch of events needs from Redis for a declared feature set, and how the replies are
//! handed back per event: the hash fields of every `lookup` (each key fetched once per batch),
//! one [`WindowItem`] per event and `window` feature, and each event's values for the session
//! aggregates (`session` features with `sum` or `count_distinct`, applied by the session script),
//! all sent in the lookup stage's one round trip.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::engine::{field_text, render};
use super::spec::{Kind, SessionFunction, WindowFunction};
use super::window::{Entry, WindowItem};
use super::FeatureSet;
use crate::event::Event;
use crate::session::AggFunction;

/// The Redis requests of a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each hash key with the fields read from it.
    pub hashes: Vec<(String, Vec<String>)>,
    /// The window items, in the order the script applies them.
    pub windows: Vec<WindowItem>,
    /// The session aggregates of the set: (feature name, function).
    pub session_aggs: Vec<(String, AggFunction)>,
    /// Per event, its value for each session aggregate (None: absent or, for `sum`, not a
    /// finite number).
    pub session_values: Vec<Vec<Option<String>>>,
    /// Per event: what it reads.
    per_event: Vec<EventRequests>,
}

/// One event's share of a [`Plan`]: the hash keys it reads, and (feature, index in `windows`).
type EventRequests = (Vec<String>, Vec<(String, usize)>);

/// What Redis said for one event's declared features.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Declared {
    /// The fields found in each hash the event's lookups address (shared by the events of a
    /// batch that address the same hash).
    pub hashes: HashMap<String, Arc<HashMap<String, String>>>,
    /// The window and session aggregates, by feature name.
    pub aggregates: HashMap<String, Option<f64>>,
}

/// The state key of a window feature for one entity: a hash tag around it, so its value hash
/// (`{key}:v`) is in the same cluster slot.
pub fn window_key(feature: &str, entity: &str) -> String {
    format!("{{fwin:{feature}:{entity}}}")
}

/// Whether `event` matches a `where` table (every entry; a list matches any of its values).
fn matches(event: &Event, filter: Option<&toml::Table>) -> bool {
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    filter.is_none_or(|t| {
        t.iter().all(|(field, want)| {
            let Some(got) = field_text(event, field) else {
                return false;
            };
            match want {
                toml::Value::Array(values) => values.iter().any(|v| text(v) == got),
                v => text(v) == got,
            }
        })
    })
}

/// The value a window entry keeps: the column as text for `count_distinct`, a finite number for
/// the functions of numbers, nothing for `count`.
fn entry_value(event: &Event, column: Option<&str>, function: WindowFunction) -> Option<String> {
    let text = field_text(event, column?)?;
    match function {
        WindowFunction::Count => None,
        WindowFunction::CountDistinct => Some(text),
        _ => finite(&text),
    }
}

/// `text` as a finite number, written so that it parses back to the same float.
fn finite(text: &str) -> Option<String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v.to_string())
}

impl FeatureSet {
    /// The Redis requests of `events`' declared features.
    pub fn plan(&self, events: &[&Event]) -> Plan {
        let mut fields: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut plan = Plan::default();
        let mut session_columns = Vec::new();
        for f in &self.file.features {
            if let Kind::Session {
                function,
                column: Some(column),
            } = &f.kind
            {
                let function = match function {
                    SessionFunction::Sum => AggFunction::Sum,
                    SessionFunction::CountDistinct => AggFunction::CountDistinct,
                    _ => continue,
                };
                plan.session_aggs.push((f.name.clone(), function));
                session_columns.push((column.as_str(), function));
            }
        }
        for event in events {
            plan.session_values.push(
                session_columns
                    .iter()
                    .map(|(column, function)| {
                        let text = field_text(event, column)?;
                        match function {
                            AggFunction::CountDistinct => Some(text),
                            AggFunction::Sum => finite(&text),
                        }
                    })
                    .collect(),
            );
            let mut keys = Vec::new();
            let mut windows = Vec::new();
            for (f, window_ms) in self.file.features.iter().zip(&self.window_ms) {
                match &f.kind {
                    Kind::Lookup { key, field, .. } => {
                        if let Some(k) = render(key, event) {
                            fields.entry(k.clone()).or_default().insert(field.clone());
                            if !keys.contains(&k) {
                                keys.push(k);
                            }
                        }
                    }
                    Kind::Window {
                        entity,
                        function,
                        column,
                        filter,
                        ..
                    } => {
                        let Some(entity) = field_text(event, entity) else {
                            continue;
                        };
                        windows.push((f.name.clone(), plan.windows.len()));
                        plan.windows.push(WindowItem {
                            key: window_key(&f.name, &entity),
                            entry: Entry {
                                event_id: event.event_id.clone(),
                                ts_ms: event.timestamp.timestamp_millis(),
                                value: entry_value(event, column.as_deref(), *function),
                            },
                            add: matches(event, filter.as_ref()),
                            window_ms: *window_ms,
                            max_events: self.max_window_events,
                            function: *function,
                        });
                    }
                    _ => {}
                }
            }
            plan.per_event.push((keys, windows));
        }
        let mut hashes: Vec<(String, Vec<String>)> = fields
            .into_iter()
            .map(|(k, f)| (k, f.into_iter().collect()))
            .collect();
        hashes.sort();
        plan.hashes = hashes;
        plan
    }
}

impl Plan {
    /// Whether the batch needs nothing from Redis for its declared features.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty() && self.windows.is_empty() && self.session_aggs.is_empty()
    }

    /// Each event's share of the replies: `hashes[i]` answers `self.hashes[i]` (the fields
    /// found), `windows[j]` answers `self.windows[j]`, `sessions[e]` holds event e's session
    /// aggregates in the order of `self.session_aggs`.
    pub fn answers(
        &self,
        hashes: Vec<HashMap<String, String>>,
        windows: &[Option<f64>],
        sessions: &[Vec<Option<f64>>],
    ) -> Vec<Declared> {
        let by_key: HashMap<&str, Arc<HashMap<String, String>>> = self
            .hashes
            .iter()
            .zip(hashes)
            .map(|((k, _), h)| (k.as_str(), Arc::new(h)))
            .collect();
        self.per_event
            .iter()
            .enumerate()
            .map(|(e, (keys, wins))| Declared {
                hashes: keys
                    .iter()
                    .filter_map(|k| Some((k.clone(), by_key.get(k.as_str())?.clone())))
                    .collect(),
                aggregates: wins
                    .iter()
                    .map(|(name, i)| (name.clone(), windows.get(*i).copied().flatten()))
                    .chain(self.session_aggs.iter().enumerate().map(|(j, (name, _))| {
                        let v = sessions.get(e).and_then(|s| s.get(j)).copied().flatten();
                        (name.clone(), v)
                    }))
                    .collect(),
            })
            .collect()
    }
}
