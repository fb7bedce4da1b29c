//! What the sink writes for a batch of records: Parquet columns, or JSON lines.
//!
//! Predictions (the output topic) become the columns `event_id`, `user_id`, `session_id`,
//! `event_time` (timestamp), `features_version`, one column per feature (numbers `double`, flags
//! `boolean`, text `string`; a feature named like a fixed column is written as
//! `feature_{name}`), `score`, `model_version`, `processed_at` (timestamp), `kafka_partition`
//! and `kafka_offset`. Feature columns come in the order the features first appear, after the
//! fixed columns before them, so a set that gains features only appends columns.
//!
//! Dead letters become `event_time`, `kind`, `message`, `stage`, `attempts`, `failed_at`,
//! `source_topic`, `source_partition`, `source_offset`, `payload` (the event as text),
//! `kafka_partition` and `kafka_offset`.

use chrono::DateTime;
use serde_json::Value;

use super::batch::Row;
use super::parquet::{Cell, Column, ColumnType};

/// Which topic a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The output topic: predictions.
    Predictions,
    /// The dead-letter topic.
    DeadLetters,
}

/// The fixed columns of predictions before the features, and after them.
const HEAD: [(&str, ColumnType); 5] = [
    ("event_id", ColumnType::Utf8),
    ("user_id", ColumnType::Utf8),
    ("session_id", ColumnType::Utf8),
    ("event_time", ColumnType::TimestampMillis),
    ("features_version", ColumnType::Utf8),
];
const TAIL: [(&str, ColumnType); 5] = [
    ("score", ColumnType::Double),
    ("model_version", ColumnType::Utf8),
    ("processed_at", ColumnType::TimestampMillis),
    ("kafka_partition", ColumnType::Int32),
    ("kafka_offset", ColumnType::Int64),
];

/// An RFC 3339 time as epoch milliseconds.
pub fn millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

fn text(v: Option<&Value>) -> Option<Cell> {
    v?.as_str().map(|s| Cell::Str(s.to_string()))
}

fn time(v: Option<&Value>) -> Option<Cell> {
    millis(v?.as_str()?).map(Cell::I64)
}

/// A feature value's column type (None for null).
fn kind_of(v: &Value) -> Option<ColumnType> {
    match v {
        Value::Number(_) => Some(ColumnType::Double),
        Value::Bool(_) => Some(ColumnType::Bool),
        Value::String(_) => Some(ColumnType::Utf8),
        _ => None,
    }
}

fn feature_cell(v: Option<&Value>, kind: ColumnType) -> Option<Cell> {
    match (v?, kind) {
        (Value::Number(n), ColumnType::Double) => n.as_f64().map(Cell::F64),
        (Value::Bool(b), ColumnType::Bool) => Some(Cell::Bool(*b)),
        (Value::String(s), ColumnType::Utf8) => Some(Cell::Str(s.clone())),
        _ => None,
    }
}

fn column(name: &str, kind: ColumnType, cells: Vec<Option<Cell>>) -> Column {
    Column {
        name: name.to_string(),
        kind,
        cells,
    }
}

/// The column type of each feature: its values' type; for a feature null in every record of an
/// object, the type its values had when last seen, else the one the feature set declares, else
/// double. So an all-null column does not contradict the column's type in other objects (Athena
/// fails a query over a Parquet column whose type differs from the table's).
#[derive(Debug, Default)]
pub struct FeatureTypes {
    declared: std::collections::HashMap<String, ColumnType>,
    seen: std::collections::HashMap<String, ColumnType>,
}

impl FeatureTypes {
    /// The types of `set`'s output features (`features check`'s value types).
    pub fn declared_by(set: &clickpipe_actors::feature_set::FeatureSet) -> Self {
        let declared = set
            .describe()
            .into_iter()
            .filter(|(_, _, _, output)| *output)
            .map(|(name, _, kind, _)| {
                let t = match kind {
                    "bool" => ColumnType::Bool,
                    "string" => ColumnType::Utf8,
                    _ => ColumnType::Double,
                };
                (name, t)
            })
            .collect();
        FeatureTypes {
            declared,
            seen: Default::default(),
        }
    }

    /// The type of feature `name` whose first non-null value in this object has type `found`.
    fn resolve(&mut self, name: &str, found: Option<ColumnType>) -> ColumnType {
        match found {
            Some(t) => {
                self.seen.insert(name.to_string(), t);
                t
            }
            None => self
                .seen
                .get(name)
                .or_else(|| self.declared.get(name))
                .copied()
                .unwrap_or(ColumnType::Double),
        }
    }
}

/// The Parquet columns of `rows` of `partition` from `source`, feature columns typed by `types`.
pub fn columns(
    source: Source,
    partition: i32,
    rows: &[Row],
    types: &mut FeatureTypes,
) -> Vec<Column> {
    let values: Vec<Option<Value>> = rows
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.value).ok())
        .collect();
    let mut out = match source {
        Source::Predictions => predictions(&values, types),
        Source::DeadLetters => dead_letters(rows, &values),
    };
    out.push(column(
        "kafka_partition",
        ColumnType::Int32,
        rows.iter().map(|_| Some(Cell::I32(partition))).collect(),
    ));
    out.push(column(
        "kafka_offset",
        ColumnType::Int64,
        rows.iter().map(|r| Some(Cell::I64(r.offset))).collect(),
    ));
    out
}

fn predictions(values: &[Option<Value>], types: &mut FeatureTypes) -> Vec<Column> {
    let get = |v: &Option<Value>, k: &str| v.as_ref().and_then(|v| v.get(k)).cloned();
    let mut out: Vec<Column> = HEAD
        .iter()
        .map(|(name, kind)| {
            let cells = values
                .iter()
                .map(|v| {
                    let x = get(v, name);
                    match kind {
                        ColumnType::TimestampMillis => time(x.as_ref()),
                        _ => text(x.as_ref()),
                    }
                })
                .collect();
            column(name, *kind, cells)
        })
        .collect();

    // Features: in order of first appearance, typed by their first non-null value.
    let mut features: Vec<(String, Option<ColumnType>)> = Vec::new();
    for v in values.iter().flatten() {
        if let Some(Value::Object(map)) = v.get("features") {
            for (name, value) in map {
                match features.iter_mut().find(|(n, _)| n == name) {
                    Some((_, kind @ None)) => *kind = kind_of(value),
                    Some(_) => {}
                    None => features.push((name.clone(), kind_of(value))),
                }
            }
        }
    }
    let fixed = |n: &str| HEAD.iter().chain(TAIL.iter()).any(|(f, _)| *f == n);
    for (name, kind) in features {
        let kind = types.resolve(&name, kind);
        let cells = values
            .iter()
            .map(|v| {
                let f = v.as_ref().and_then(|v| v.get("features")?.get(&name));
                feature_cell(f, kind)
            })
            .collect();
        let column_name = if fixed(&name) {
            format!("feature_{name}")
        } else {
            name
        };
        out.push(column(&column_name, kind, cells));
    }

    let prediction = |v: &Option<Value>, k: &str| {
        v.as_ref()
            .and_then(|v| v.get("prediction")?.get(k))
            .cloned()
    };
    out.push(column(
        "score",
        ColumnType::Double,
        values
            .iter()
            .map(|v| {
                prediction(v, "score")
                    .and_then(|s| s.as_f64())
                    .map(Cell::F64)
            })
            .collect(),
    ));
    out.push(column(
        "model_version",
        ColumnType::Utf8,
        values
            .iter()
            .map(|v| text(prediction(v, "model_version").as_ref()))
            .collect(),
    ));
    out.push(column(
        "processed_at",
        ColumnType::TimestampMillis,
        values
            .iter()
            .map(|v| time(get(v, "processed_at").as_ref()))
            .collect(),
    ));
    out
}

/// The headers of a dead letter the sink keeps, by column.
pub const DEAD_LETTER_HEADERS: [(&str, &str); 7] = [
    ("kind", "clickpipe.error.kind"),
    ("message", "clickpipe.error.message"),
    ("stage", "clickpipe.error.stage"),
    ("attempts", "clickpipe.attempts"),
    ("failed_at", "clickpipe.failed_at"),
    ("source_topic", "clickpipe.source.topic"),
    ("source_partition", "clickpipe.source.partition"),
];
const SOURCE_OFFSET: &str = "clickpipe.source.offset";

fn header<'a>(row: &'a Row, name: &str) -> Option<&'a str> {
    row.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn dead_letters(rows: &[Row], _values: &[Option<Value>]) -> Vec<Column> {
    let mut out = vec![column(
        "event_time",
        ColumnType::TimestampMillis,
        rows.iter()
            .map(|r| Some(Cell::I64(r.event_time_ms)))
            .collect(),
    )];
    for (name, key) in DEAD_LETTER_HEADERS {
        let (kind, parse): (ColumnType, fn(&str) -> Option<Cell>) = match name {
            "attempts" | "source_partition" => {
                (ColumnType::Int32, |s| s.trim().parse().ok().map(Cell::I32))
            }
            "failed_at" => (ColumnType::TimestampMillis, |s| millis(s).map(Cell::I64)),
            _ => (ColumnType::Utf8, |s| Some(Cell::Str(s.to_string()))),
        };
        out.push(column(
            name,
            kind,
            rows.iter()
                .map(|r| header(r, key).and_then(parse))
                .collect(),
        ));
    }
    out.push(column(
        "source_offset",
        ColumnType::Int64,
        rows.iter()
            .map(|r| {
                header(r, SOURCE_OFFSET)
                    .and_then(|s| s.trim().parse().ok())
                    .map(Cell::I64)
            })
            .collect(),
    ));
    out.push(column(
        "payload",
        ColumnType::Utf8,
        rows.iter()
            .map(|r| Some(Cell::Str(String::from_utf8_lossy(&r.value).into_owned())))
            .collect(),
    ));
    out
}

/// The event time of a record: predictions' `event_time`; a dead letter's event `timestamp`
/// (or `@timestamp`) when its payload has one; else the record's broker timestamp (0 without).
pub fn event_time(source: Source, value: &[u8], broker_ms: Option<i64>) -> i64 {
    let parsed: Option<Value> = serde_json::from_slice(value).ok();
    let from_value = parsed.as_ref().and_then(|v| {
        let field = match source {
            Source::Predictions => v.get("event_time"),
            Source::DeadLetters => v.get("timestamp").or_else(|| v.get("@timestamp")),
        };
        millis(field?.as_str()?)
    });
    from_value.or(broker_ms).unwrap_or(0)
}

/// One JSON line per row: a prediction as it was written (compacted); a dead letter as an object
/// of the dead-letter columns with `payload` the event as text. A value that is not JSON is
/// kept as `{"_raw": text}`.
pub fn json_lines(source: Source, partition: i32, rows: &[Row]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        let line = match source {
            Source::Predictions => serde_json::from_slice::<Value>(&r.value).unwrap_or_else(
                |_| serde_json::json!({ "_raw": String::from_utf8_lossy(&r.value) }),
            ),
            Source::DeadLetters => {
                let mut m = serde_json::Map::new();
                for (name, key) in DEAD_LETTER_HEADERS {
                    if let Some(v) = header(r, key) {
                        m.insert(name.into(), Value::String(v.into()));
                    }
                }
                if let Some(v) = header(r, SOURCE_OFFSET) {
                    m.insert("source_offset".into(), Value::String(v.into()));
                }
                m.insert(
                    "payload".into(),
                    Value::String(String::from_utf8_lossy(&r.value).into_owned()),
                );
                m.insert("kafka_partition".into(), partition.into());
                m.insert("kafka_offset".into(), r.offset.into());
                Value::Object(m)
            }
        };
        // Serialising a Value cannot fail.
        out.extend(serde_json::to_vec(&line).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: i64, features: serde_json::Value) -> Row {
        Row {
            offset,
            event_time_ms: 0,
            value: serde_json::to_vec(&serde_json::json!({ "features": features })).expect("json"),
            headers: Vec::new(),
            appended_ms: None,
        }
    }

    fn kind(columns: &[Column], name: &str) -> ColumnType {
        columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.kind)
            .unwrap_or_else(|| panic!("no column {name}"))
    }

    #[test]
    fn a_feature_null_in_a_whole_object_keeps_the_type_it_had_or_was_declared() {
        let set = clickpipe_actors::feature_set::FeatureSet::builtin().expect("built-in set");
        let mut types = FeatureTypes::declared_by(&set);
        // Seen as text first, then null throughout an object: still text.
        let first = columns(
            Source::Predictions,
            0,
            &[row(0, serde_json::json!({"page": "/home"}))],
            &mut types,
        );
        assert_eq!(kind(&first, "page"), ColumnType::Utf8);
        let nulls = columns(
            Source::Predictions,
            0,
            &[row(
                1,
                serde_json::json!({"page": null, "is_weekend": null}),
            )],
            &mut types,
        );
        assert_eq!(kind(&nulls, "page"), ColumnType::Utf8);
        // Never seen, but declared by the feature set as a flag.
        assert_eq!(kind(&nulls, "is_weekend"), ColumnType::Bool);
        // Neither seen nor declared: double, as before.
        let unknown = columns(
            Source::Predictions,
            0,
            &[row(2, serde_json::json!({"mystery": null}))],
            &mut types,
        );
        assert_eq!(kind(&unknown, "mystery"), ColumnType::Double);
        // Values decide when there are any, whatever was declared (nothing is nulled).
        let typed = columns(
            Source::Predictions,
            0,
            &[row(3, serde_json::json!({"is_weekend": 1}))],
            &mut types,
        );
        assert_eq!(kind(&typed, "is_weekend"), ColumnType::Double);
    }
}
