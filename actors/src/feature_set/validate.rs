//! Start-up checks of a feature-set file: every problem is reported naming the feature and the
//! key, e.g. `feature "views_10m": key "window": "2d" is outside 30s..24h`.

use std::collections::HashSet;
use std::time::Duration;

use super::spec::{FeatureSetFile, FeatureSpec, Kind, OnMissing, SessionFunction, ValueType};
use super::EVENT_FIELDS;

/// The shortest and longest `window`.
pub const WINDOW_RANGE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(24 * 3600));

/// A problem in a feature-set file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}key \"{key}\": {problem}", feature.as_ref().map(|f| format!("feature \"{f}\": ")).unwrap_or_default())]
pub struct FeatureSetError {
    /// The feature's name (None: a top-level key or a `[[materialize]]` table).
    pub feature: Option<String>,
    /// The key.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn bad(feature: &FeatureSpec, key: &str, problem: impl Into<String>) -> FeatureSetError {
    FeatureSetError {
        feature: Some(feature.name.clone()),
        key: key.into(),
        problem: problem.into(),
    }
}

/// Parses a duration such as `"30s"`, `"10m"`, `"1h"` (a whole number and one unit of s, m, h).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// An event field a feature reads must be one events have.
fn event_field(f: &FeatureSpec, key: &str, column: &str) -> Result<(), FeatureSetError> {
    match EVENT_FIELDS.contains(&column) {
        true => Ok(()),
        false => Err(bad(
            f,
            key,
            format!(
                "`{column}` is not an event field (one of {})",
                EVENT_FIELDS.join(", ")
            ),
        )),
    }
}

/// Checks `file`; returns the names the feature set outputs, in model-instance order (flag
/// features after the feature that produces them, one-hot columns expanded).
pub fn validate(file: &FeatureSetFile) -> Result<Vec<String>, FeatureSetError> {
    if file.version.trim().is_empty() {
        return Err(FeatureSetError {
            feature: None,
            key: "version".into(),
            problem: "must not be empty".into(),
        });
    }
    let mut names: HashSet<String> = HashSet::new();
    let mut outputs = Vec::new();
    let mut string_lookups: HashSet<&str> = HashSet::new();
    for f in &file.features {
        if f.name.trim().is_empty() {
            return Err(bad(f, "name", "must not be empty"));
        }
        let produced = produced_names(f);
        for n in &produced {
            if !names.insert(n.clone()) {
                return Err(bad(f, "name", format!("`{n}` is produced twice")));
            }
        }
        check_kind(f, &string_lookups)?;
        if let Kind::Lookup {
            value_type: ValueType::String,
            ..
        } = f.kind
        {
            string_lookups.insert(f.name.as_str());
        }
        if f.on_missing == OnMissing::Default && f.default.is_none() && needs_default(&f.kind) {
            return Err(bad(
                f,
                "default",
                "must be set with on_missing = \"default\"",
            ));
        }
        if f.output {
            outputs.extend(produced);
        }
    }
    if !file.materialize.is_empty() {
        if let Some(n) = outputs.iter().find(|n| n.starts_with('_')) {
            return Err(FeatureSetError {
                feature: Some(n.clone()),
                key: "name".into(),
                problem: "names starting with `_` are the online store's own fields".into(),
            });
        }
    }
    let mut entities = HashSet::new();
    for m in &file.materialize {
        let at = |key: &str, problem: String| FeatureSetError {
            feature: None,
            key: format!("materialize.{key}"),
            problem,
        };
        if !entities.insert(m.entity.as_str()) {
            return Err(at(
                "entity",
                format!("`{}` is materialized twice", m.entity),
            ));
        }
        if !EVENT_FIELDS.contains(&m.entity.as_str()) {
            return Err(at(
                "entity",
                format!("`{}` is not an event field", m.entity),
            ));
        }
        if parse_duration(&m.ttl).is_none_or(|d| d.is_zero()) {
            return Err(at(
                "ttl",
                format!("`{}` is not a duration such as \"1h\"", m.ttl),
            ));
        }
    }
    Ok(outputs)
}

/// The names `f` produces: its own, its flag feature, or its one-hot columns.
fn produced_names(f: &FeatureSpec) -> Vec<String> {
    match &f.kind {
        Kind::OneHot { values, .. } => values
            .iter()
            .map(|v| format!("{}_{v}", f.name))
            .chain(std::iter::once(format!("{}_other", f.name)))
            .collect(),
        Kind::Lookup {
            known: Some(flag), ..
        } => vec![f.name.clone(), flag.clone()],
        _ => vec![f.name.clone()],
    }
}

/// Whether a kind can fail to compute (and so needs a `default` or `on_missing`).
fn needs_default(kind: &Kind) -> bool {
    matches!(kind, Kind::Lookup { .. } | Kind::Field { .. })
}

fn check_kind(f: &FeatureSpec, string_lookups: &HashSet<&str>) -> Result<(), FeatureSetError> {
    match &f.kind {
        Kind::LocalTime { timezone_from, .. } => {
            if let Some(from) = timezone_from {
                if !string_lookups.contains(from.as_str()) {
                    return Err(bad(
                        f,
                        "timezone_from",
                        format!("`{from}` is not an earlier lookup feature of type string"),
                    ));
                }
            }
        }
        Kind::Lookup { key, field, .. } => {
            if field.trim().is_empty() {
                return Err(bad(f, "field", "must not be empty"));
            }
            for name in template_fields(key).map_err(|p| bad(f, "key", p))? {
                event_field(f, "key", name)?;
            }
        }
        Kind::Session { function, column } => match (function, column) {
            (SessionFunction::CountDistinct | SessionFunction::Sum, None) => {
                return Err(bad(f, "column", "is required by this function"));
            }
            (SessionFunction::CountDistinct | SessionFunction::Sum, Some(c)) => {
                event_field(f, "column", c)?
            }
            (_, Some(_)) => return Err(bad(f, "column", "is not used by this function")),
            (_, None) => {}
        },
        Kind::Window {
            entity,
            window,
            function,
            column,
            filter,
        } => {
            event_field(f, "entity", entity)?;
            let (low, high) = WINDOW_RANGE;
            match parse_duration(window) {
                Some(d) if (low..=high).contains(&d) => {}
                Some(_) => return Err(bad(f, "window", format!("`{window}` is outside 30s..24h"))),
                None => {
                    return Err(bad(
                        f,
                        "window",
                        format!("`{window}` is not a duration such as \"10m\""),
                    ))
                }
            }
            match (function, column) {
                (super::spec::WindowFunction::Count, Some(_)) => {
                    return Err(bad(f, "column", "is not used by count"))
                }
                (super::spec::WindowFunction::Count, None) => {}
                (_, None) => return Err(bad(f, "column", "is required by this function")),
                (_, Some(c)) => event_field(f, "column", c)?,
            }
            for (key, value) in filter.iter().flatten() {
                event_field(f, "where", key)?;
                let scalar = |v: &toml::Value| {
                    matches!(
                        v,
                        toml::Value::String(_)
                            | toml::Value::Integer(_)
                            | toml::Value::Float(_)
                            | toml::Value::Boolean(_)
                    )
                };
                let ok = match value {
                    toml::Value::Array(values) => !values.is_empty() && values.iter().all(scalar),
                    v => scalar(v),
                };
                if !ok {
                    return Err(bad(
                        f,
                        "where",
                        format!("`{key}` must be a value or a non-empty list of values"),
                    ));
                }
            }
        }
        Kind::OneHot { column, values } => {
            event_field(f, "column", column)?;
            if values.is_empty() {
                return Err(bad(f, "values", "must not be empty"));
            }
        }
        Kind::Field { column, .. } => event_field(f, "column", column)?,
    }
    Ok(())
}

/// The event fields a key template such as `"zip:{zip}"` names.
pub fn template_fields(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has an unclosed `{{`"))?;
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("`{template}` has an unopened `}}`"));
    }
    if out.is_empty() {
        return Err(format!(
            "`{template}` names no event field (e.g. \"zip:{{zip}}\")"
        ));
    }
    Ok(out)
}
