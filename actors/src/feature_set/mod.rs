//! Declared features: the feature-set file format (`spec`), its start-up checks (`validate`), the
//! per-batch Redis requests (`plan`), the window rule (`window`), the per-event computation
//! (`engine`) and the online store (`materialize`). The shipped sets: `config/features/default.toml`
//! (the built-in features, name for name) and `example.toml` (with windows).

pub mod engine;
pub mod explain;
pub mod materialize;
pub mod plan;
pub mod spec;
pub mod validate;
pub mod window;

use std::path::Path;

pub use spec::FeatureSetFile;
pub use validate::{validate, FeatureSetError};

/// The event fields a feature may read (the fields of [`crate::event::Event`]).
pub const EVENT_FIELDS: [&str; 10] = [
    "event_id",
    "user_id",
    "session_id",
    "timestamp",
    "event_type",
    "page",
    "referrer",
    "zip",
    "device",
    "price",
];

/// The built-in set: today's features, in today's order.
pub const DEFAULT_SET: &str = include_str!("../../../config/features/default.toml");

/// A checked feature set.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// As written.
    pub file: FeatureSetFile,
    /// The names sent to the model and written out, in model-instance order.
    pub outputs: Vec<String>,
    /// `version`, shared by every output record.
    pub version: std::sync::Arc<str>,
    /// Per feature (by index), its window in milliseconds (0 for other kinds): parsed once here,
    /// not per event.
    window_ms: Vec<i64>,
    /// The most events an entity's window state keeps (`features.max_window_events`).
    pub max_window_events: usize,
}

impl FeatureSet {
    /// Parses and checks the text of a feature-set file.
    pub fn parse(text: &str) -> Result<FeatureSet, FeatureSetError> {
        let raw: spec::RawFile = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            FeatureSetError {
                feature: None,
                key: message.split('`').nth(1).unwrap_or("(file)").to_string(),
                problem: message,
            }
        })?;
        let features = raw
            .feature
            .into_iter()
            .enumerate()
            .map(|(i, table)| spec::FeatureSpec::from_table(i, table))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(feature, key, problem)| FeatureSetError {
                feature: Some(feature),
                key,
                problem,
            })?;
        let file = FeatureSetFile {
            version: raw.version,
            features,
            materialize: raw.materialize,
        };
        let outputs = validate(&file)?;
        let version = file.version.as_str().into();
        let window_ms = file
            .features
            .iter()
            .map(|f| match &f.kind {
                spec::Kind::Window { window, .. } => validate::parse_duration(window)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                _ => 0,
            })
            .collect();
        Ok(FeatureSet {
            file,
            outputs,
            version,
            window_ms,
            max_window_events: window::DEFAULT_MAX_EVENTS,
        })
    }

    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<FeatureSet, FeatureSetError> {
        let text = std::fs::read_to_string(path).map_err(|e| FeatureSetError {
            feature: None,
            key: "(file)".into(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Every feature the set produces, in model-instance order: (name, kind, value type,
    /// whether it is output). For `clickpipe features check`.
    pub fn describe(&self) -> Vec<(String, &'static str, &'static str, bool)> {
        use spec::{Kind, SessionFunction, TimePart, ValueType};
        let type_name = |t: ValueType| match t {
            ValueType::Float => "float",
            ValueType::Int => "int",
            ValueType::String => "string",
            ValueType::Bool => "bool",
        };
        let mut rows = Vec::new();
        for f in &self.file.features {
            let mut row = |name: String, kind: &'static str, t: &'static str| {
                rows.push((name, kind, t, f.output));
            };
            match &f.kind {
                Kind::LocalTime { part, .. } => row(
                    f.name.clone(),
                    "local_time",
                    match part {
                        TimePart::IsWeekend | TimePart::Known => "bool",
                        _ => "int",
                    },
                ),
                Kind::Lookup {
                    value_type, known, ..
                } => {
                    row(f.name.clone(), "lookup", type_name(*value_type));
                    if let Some(flag) = known {
                        row(flag.clone(), "lookup (known)", "bool");
                    }
                }
                Kind::Session { function, .. } => row(
                    f.name.clone(),
                    "session",
                    match function {
                        SessionFunction::Count => "int",
                        _ => "float",
                    },
                ),
                Kind::Window { .. } => row(f.name.clone(), "window", "float"),
                Kind::OneHot { values, .. } => {
                    for v in values.iter().map(String::as_str).chain(["other"]) {
                        row(format!("{}_{v}", f.name), "one_hot", "int");
                    }
                }
                Kind::Field { value_type, .. } => {
                    row(f.name.clone(), "field", type_name(*value_type))
                }
            }
        }
        rows
    }

    /// The built-in set as written in `config/features/default.toml`.
    pub fn builtin() -> Result<FeatureSet, FeatureSetError> {
        Self::parse(DEFAULT_SET)
    }

    /// The built-in set for a configuration: ZIP hashes under `zip_prefix` (`redis.zip_prefix`)
    /// and `default_income` (`features.default_zip_median_income`) for an unknown ZIP.
    pub fn builtin_for(
        zip_prefix: &str,
        default_income: f64,
    ) -> Result<FeatureSet, FeatureSetError> {
        let mut set = Self::builtin()?;
        for f in &mut set.file.features {
            if let spec::Kind::Lookup { key, field, .. } = &mut f.kind {
                if key == "zip:{zip}" {
                    *key = format!("{zip_prefix}{{zip}}");
                }
                if field == "median_income" {
                    f.default = Some(toml::Value::Float(default_income));
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests;
