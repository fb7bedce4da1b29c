//! The feature-set file as written: `version`, `[[feature]]` tables (one per feature, tagged by
//! `kind`) and `[[materialize]]` tables. Unknown keys are refused, so a misspelt key is an error
//! naming it rather than a feature silently computed another way.

use serde::Deserialize;

/// A whole feature-set file.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSetFile {
    /// Copied into every output record as `features_version`.
    pub version: String,
    /// The features, in model-instance order.
    pub features: Vec<FeatureSpec>,
    /// Entities whose latest feature vector is kept in Redis.
    pub materialize: Vec<Materialize>,
}

/// The file's top level; each `[[feature]]` table is read on its own ([`FeatureSpec::from_table`])
/// so that its problems name it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) version: String,
    #[serde(default)]
    pub(super) feature: Vec<toml::Table>,
    #[serde(default)]
    pub(super) materialize: Vec<Materialize>,
}

/// One `[[feature]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Unique: the key in the model instance and the output's `features`.
    pub name: String,
    /// What is computed, with the kind's own keys.
    pub kind: Kind,
    /// `false`: computed for other features only, neither sent to the model nor written out.
    pub output: bool,
    /// What to do when the feature cannot be computed for an event.
    pub on_missing: OnMissing,
    /// The value taken when it cannot be computed (`on_missing = "default"`).
    pub default: Option<toml::Value>,
}

/// The keys every kind has.
#[derive(Debug, Deserialize)]
struct Common {
    #[serde(default = "yes")]
    output: bool,
    #[serde(default)]
    on_missing: OnMissing,
    #[serde(default)]
    default: Option<toml::Value>,
}

impl FeatureSpec {
    /// Reads feature number `index` (for a message when it has no name) from its table. On
    /// failure: (the feature's name, the key at fault, what is wrong).
    pub(super) fn from_table(
        index: usize,
        mut table: toml::Table,
    ) -> Result<FeatureSpec, (String, String, String)> {
        let name = match table.remove("name") {
            Some(toml::Value::String(n)) => n,
            Some(_) => {
                return Err((
                    format!("#{}", index + 1),
                    "name".into(),
                    "must be a string".into(),
                ))
            }
            None => {
                return Err((
                    format!("#{}", index + 1),
                    "name".into(),
                    "is missing".into(),
                ))
            }
        };
        let mut common = toml::Table::new();
        for key in ["output", "on_missing", "default"] {
            if let Some(v) = table.remove(key) {
                common.insert(key.into(), v);
            }
        }
        let fail = |e: toml::de::Error, table: &toml::Table| {
            let message = e.message().to_string();
            (name.clone(), key_at_fault(&message, table), message)
        };
        let c: Common = toml::Value::Table(common.clone())
            .try_into()
            .map_err(|e| fail(e, &common))?;
        let kind: Kind = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e| fail(e, &table))?;
        Ok(FeatureSpec {
            name,
            kind,
            output: c.output,
            on_missing: c.on_missing,
            default: c.default,
        })
    }
}

/// The key a deserialisation message is about: the field it names (unknown or missing), else the
/// key whose value is the variant it refuses, else `kind`.
fn key_at_fault(message: &str, table: &toml::Table) -> String {
    let quoted = message.split('`').nth(1).unwrap_or_default();
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return quoted.to_string();
    }
    table
        .iter()
        .find(|(_, v)| v.as_str() == Some(quoted))
        .map_or_else(|| "kind".to_string(), |(k, _)| k.clone())
}

fn yes() -> bool {
    true
}

/// When a feature cannot be computed for an event (missing column, wrong type).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Take the feature's `default`.
    #[default]
    Default,
    /// Dead-letter the event as `invalid_event`.
    DeadLetter,
}

/// The kinds of feature and their keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// A part of the event time in a local time zone.
    LocalTime {
        /// Which part.
        part: TimePart,
        /// A `lookup` feature of type `string` holding an IANA zone; UTC when unknown or absent.
        #[serde(default)]
        timezone_from: Option<String>,
    },
    /// A field of a Redis hash addressed by a template over event fields.
    Lookup {
        /// e.g. `"zip:{zip}"`.
        key: String,
        /// The hash field.
        field: String,
        /// The value's type.
        #[serde(rename = "type")]
        value_type: ValueType,
        /// Also produce this flag feature: whether the value was found (and parsed).
        #[serde(default)]
        known: Option<String>,
    },
    /// A figure of the event's session (per `session_id`, `features.session_gap_s`).
    Session {
        /// Which figure.
        function: SessionFunction,
        /// The event field of `count_distinct` and `sum`.
        #[serde(default)]
        column: Option<String>,
    },
    /// An aggregation per entity over a sliding event-time window.
    Window {
        /// The event field naming the entity (e.g. `user_id`).
        entity: String,
        /// The window, e.g. `"10m"` (30 s to 24 h).
        window: String,
        /// The aggregation.
        function: WindowFunction,
        /// The event field aggregated (all functions but `count`).
        #[serde(default)]
        column: Option<String>,
        /// Only events whose fields match every entry (a value or a list of values).
        #[serde(default, rename = "where")]
        filter: Option<toml::Table>,
    },
    /// `{name}_{value}` for each value, and `{name}_other`.
    OneHot {
        /// The event field.
        column: String,
        /// The values with a column of their own.
        values: Vec<String>,
    },
    /// An event field copied.
    Field {
        /// The event field.
        column: String,
        /// The value's type.
        #[serde(rename = "type")]
        value_type: ValueType,
    },
}

/// The parts of `local_time`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimePart {
    /// 0–23.
    Hour,
    /// 0 = Monday … 6 = Sunday.
    DayOfWeek,
    /// Saturday or Sunday.
    IsWeekend,
    /// 0–1439.
    MinuteOfDay,
    /// 1–31.
    DayOfMonth,
    /// 1–12.
    Month,
    /// Whether the time zone was known (else the clock is UTC).
    Known,
}

/// Value types of `lookup` and `field`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A 64-bit float.
    Float,
    /// A 64-bit integer.
    Int,
    /// A string.
    String,
    /// A boolean.
    Bool,
}

/// The functions of `session`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionFunction {
    /// 1-based index of the event in its session.
    Count,
    /// Seconds from the session's first to its latest event.
    DurationS,
    /// Seconds since the previous event (null for the first).
    SecondsSincePrev,
    /// Distinct values of `column` in the session.
    CountDistinct,
    /// Sum of `column` over the session.
    Sum,
}

/// The functions of `window`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowFunction {
    /// Events in the window.
    Count,
    /// Sum of `column`.
    Sum,
    /// Mean of `column`.
    Avg,
    /// Least `column`.
    Min,
    /// Greatest `column`.
    Max,
    /// Distinct values of `column`.
    CountDistinct,
    /// `column` of the latest event by event time.
    Last,
}

impl WindowFunction {
    /// Every function.
    pub const ALL: [WindowFunction; 7] = [
        WindowFunction::Count,
        WindowFunction::Sum,
        WindowFunction::Avg,
        WindowFunction::Min,
        WindowFunction::Max,
        WindowFunction::CountDistinct,
        WindowFunction::Last,
    ];
}

/// One `[[materialize]]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Materialize {
    /// The event field naming the entity.
    pub entity: String,
    /// How long the hash lives after its last write, e.g. `"1h"`.
    pub ttl: String,
}
