//! The model: a purchase-propensity logistic regression read from a JSON parameters file
//! ([`Model`]), and how it scores one instance.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clickpipe_actors::event::json_type;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The only model kind this server knows.
const KIND_LOGISTIC_REGRESSION: &str = "logistic_regression";

/// The model parameters file, as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    model_version: String,
    kind: String,
    intercept: f64,
    weights: BTreeMap<String, f64>,
    #[serde(default)]
    scales: BTreeMap<String, Scale>,
}

/// Standardisation of one feature: `(x - center) / scale`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scale {
    center: f64,
    scale: f64,
}

/// One term of the linear predictor.
#[derive(Debug, Clone)]
struct Term {
    name: String,
    weight: f64,
    center: f64,
    scale: f64,
}

/// A purchase-propensity logistic regression.
///
/// `score = sigmoid(intercept + Σ weight · (x − center) / scale)` over the features named in
/// `weights`; `center` and `scale` come from the optional `scales` map (default 0 and 1).
///
/// The parameters file looks like:
///
/// ```json
/// {"model_version": "propensity-lr-2026.11.1", "kind": "logistic_regression",
///  "intercept": -3.1, "weights": {"event_type_purchase": 3.2, "session_event_count": 0.45},
///  "scales": {"session_event_count": {"center": 4.0, "scale": 6.0}}}
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    version: String,
    intercept: f64,
    terms: Vec<Term>,
}

impl Model {
    /// Reads and validates a model parameters file. The error names the file and the problem
    /// (unreadable, not JSON, unknown key, unknown kind, a non-finite weight, a zero scale…).
    pub fn load(path: &Path) -> anyhow::Result<Model> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        Model::parse(&text).with_context(|| format!("invalid model file {}", path.display()))
    }

    /// Parses and validates the JSON text of a parameters file.
    fn parse(text: &str) -> anyhow::Result<Model> {
        let file: ModelFile = serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if file.model_version.trim().is_empty() {
            bail!("`model_version` must not be empty");
        }
        if file.kind != KIND_LOGISTIC_REGRESSION {
            bail!(
                "`kind` is {:?}; only {KIND_LOGISTIC_REGRESSION:?} is supported",
                file.kind
            );
        }
        if !file.intercept.is_finite() {
            bail!("`intercept` must be a finite number");
        }
        if file.weights.is_empty() {
            bail!("`weights` must name at least one feature");
        }
        if let Some(name) = file.scales.keys().find(|k| !file.weights.contains_key(*k)) {
            bail!("`scales` has feature `{name}` that has no weight in `weights`");
        }
        let mut terms = Vec::with_capacity(file.weights.len());
        for (name, weight) in &file.weights {
            if name.is_empty() {
                bail!("`weights` has an empty feature name");
            }
            if !weight.is_finite() {
                bail!("weight of feature `{name}` must be a finite number");
            }
            let scale = file.scales.get(name).copied().unwrap_or(Scale {
                center: 0.0,
                scale: 1.0,
            });
            if !scale.center.is_finite() {
                bail!("`scales.{name}.center` must be a finite number");
            }
            if !scale.scale.is_finite() || scale.scale == 0.0 {
                bail!("`scales.{name}.scale` must be a finite, non-zero number");
            }
            terms.push(Term {
                name: name.clone(),
                weight: *weight,
                center: scale.center,
                scale: scale.scale,
            });
        }
        Ok(Model {
            version: file.model_version,
            intercept: file.intercept,
            terms,
        })
    }

    /// The `model_version` of the parameters file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Scores one instance: the purchase probability in (0, 1).
    ///
    /// Feature values may be numbers, booleans (true = 1, false = 0), numeric strings, or null
    /// (the feature contributes nothing, as if it sat at its center). A feature the model weighs
    /// that is absent from the instance, or a value of any other type, is an error naming the
    /// feature. Features the model does not know are ignored.
    pub fn score(&self, instance: &Map<String, Value>) -> Result<f64, String> {
        let mut z = self.intercept;
        for term in &self.terms {
            let x = match instance.get(&term.name) {
                None => return Err(format!("feature `{}` is missing", term.name)),
                Some(Value::Null) => continue,
                Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                    format!("feature `{}` is not a representable number: {n}", term.name)
                })?,
                Some(Value::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        format!(
                            "feature `{}` must be a number, boolean or null, got the string {s:?}",
                            term.name
                        )
                    })?,
                Some(other) => {
                    return Err(format!(
                        "feature `{}` must be a number, boolean or null, got a {}",
                        term.name,
                        json_type(other)
                    ))
                }
            };
            if !x.is_finite() {
                return Err(format!("feature `{}` is not a finite number", term.name));
            }
            z += term.weight * (x - term.center) / term.scale;
        }
        Ok(sigmoid(z))
    }
}

/// Numerically stable logistic function.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The shipped model and a typical instance, for the tests of the model server.
#[cfg(test)]
pub(super) mod fixtures {
    use std::path::Path;

    use serde_json::{json, Map, Value};

    use super::Model;

    const MODEL_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.json");

    pub(crate) fn shipped() -> Model {
        Model::load(Path::new(MODEL_PATH)).expect("config/model.json loads")
    }

    /// A typical mid-funnel instance with every feature the shipped model weighs.
    pub(crate) fn instance() -> Map<String, Value> {
        let v = json!({
            "hour_of_day": 14, "day_of_week": 2, "is_weekend": false, "local_time_known": true,
            "zip_median_income": 68000.0, "zip_known": true, "session_event_count": 3,
            "seconds_since_prev_event": 25.0, "session_duration_s": 80.0,
            "event_type_page_view": 1, "event_type_product_view": 0, "event_type_search": 0,
            "event_type_add_to_cart": 0, "event_type_remove_from_cart": 0,
            "event_type_checkout": 0, "event_type_purchase": 0, "event_type_other": 0,
            "device_mobile": 1, "device_desktop": 0, "device_tablet": 0, "device_other": 0
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    pub(crate) fn with(mut m: Map<String, Value>, pairs: &[(&str, Value)]) -> Map<String, Value> {
        for (k, v) in pairs {
            m.insert((*k).to_string(), v.clone());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{instance, shipped, with};
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_model_weighs_every_feature_the_pipeline_computes() {
        use clickpipe_actors::event::{decode, Limits};
        use clickpipe_actors::features::{compute, ZipInfo};
        use clickpipe_actors::session::advance;

        let e = decode(
            br#"{"event_id":"e","user_id":"u","session_id":"s","timestamp":"2026-06-05T20:00:00Z","event_type":"add_to_cart","device":"mobile","zip":"10001"}"#,
            &Limits::new(1 << 20),
            chrono::DateTime::parse_from_rfc3339("2026-06-05T21:00:00Z")
                .expect("time")
                .into(),
        )
        .expect("event");
        let zip = ZipInfo::from_fields(Some("72000"), Some("America/New_York"));
        let snap = advance(None, e.timestamp.timestamp_millis(), 1_800_000).1;
        let features =
            serde_json::to_value(compute(&e, Some(&zip), &snap, 60_000.0)).expect("json");
        let Value::Object(features) = features else {
            panic!("features are an object")
        };

        let model = shipped();
        assert_eq!(model.version(), "propensity-lr-2026.11.1");
        let weighed: Vec<&str> = model.terms.iter().map(|t| t.name.as_str()).collect();
        for name in features.keys() {
            assert!(
                weighed.contains(&name.as_str()),
                "no weight for feature `{name}`"
            );
        }
        for name in &weighed {
            assert!(
                features.contains_key(*name),
                "model weighs unknown feature `{name}`"
            );
        }
        // The pipeline's own feature vector (with a null gap on the first event) scores fine.
        let s = model.score(&features).expect("scores");
        assert!(s > 0.0 && s < 1.0);
    }

    #[test]
    fn scores_move_in_the_expected_direction() {
        let m = shipped();
        let score = |pairs: &[(&str, Value)]| m.score(&with(instance(), pairs)).expect("score");

        let increasing = |what: &str, scores: Vec<f64>| {
            assert!(scores.windows(2).all(|w| w[0] < w[1]), "{what}: {scores:?}");
        };
        increasing(
            "session_event_count",
            [1, 3, 8, 20]
                .iter()
                .map(|c| score(&[("session_event_count", json!(c))]))
                .collect(),
        );
        increasing(
            "income",
            [30_000.0, 60_000.0, 120_000.0]
                .iter()
                .map(|i| score(&[("zip_median_income", json!(i))]))
                .collect(),
        );
        increasing(
            "funnel",
            ["page_view", "add_to_cart", "checkout", "purchase"]
                .iter()
                .map(|t| {
                    score(&[
                        ("event_type_page_view", json!(0)),
                        (format!("event_type_{t}").as_str(), json!(1)),
                    ])
                })
                .collect(),
        );

        let mobile = score(&[]);
        let desktop = score(&[("device_mobile", json!(0)), ("device_desktop", json!(1))]);
        assert!(desktop > mobile);
        assert!(score(&[("is_weekend", json!(true))]) > score(&[("is_weekend", json!(false))]));
        assert!(score(&[("hour_of_day", json!(20))]) > score(&[("hour_of_day", json!(4))]));
    }

    #[test]
    fn feature_values_accept_numbers_bools_nulls_and_numeric_strings() {
        let m = shipped();
        let base = m.score(&instance()).expect("base");
        assert!(base > 0.0 && base < 1.0);
        // bool true == 1, numeric string == number
        let b = m
            .score(&with(instance(), &[("event_type_page_view", json!(true))]))
            .expect("b");
        assert_eq!(b, base);
        let s = m
            .score(&with(instance(), &[("session_event_count", json!(" 3 "))]))
            .expect("s");
        assert_eq!(s, base);
        // null counts as the center: same as passing the center itself.
        let n = m
            .score(&with(instance(), &[("hour_of_day", Value::Null)]))
            .expect("null");
        let c = m
            .score(&with(instance(), &[("hour_of_day", json!(12))]))
            .expect("center");
        assert!((n - c).abs() < 1e-12);
        // unknown extras ignored
        let x = m
            .score(&with(instance(), &[("favourite_colour", json!("blue"))]))
            .expect("x");
        assert_eq!(x, base);

        let mut missing = instance();
        missing.remove("zip_known");
        assert!(m
            .score(&missing)
            .expect_err("missing")
            .contains("`zip_known` is missing"));
        let bad = with(instance(), &[("device_mobile", json!("yes"))]);
        assert!(m
            .score(&bad)
            .expect_err("string")
            .contains("`device_mobile`"));
        let arr = with(instance(), &[("hour_of_day", json!([1]))]);
        assert!(m.score(&arr).expect_err("array").contains("got a array"));
    }

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(1000.0) <= 1.0 && sigmoid(1000.0) > 0.999);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-300);
        assert!(!sigmoid(-1000.0).is_nan());
    }

    #[test]
    fn loading_rejects_bad_files_naming_the_file_and_problem() {
        let cases = [
            ("not json", "expected"),
            (
                r#"{"model_version":"v","kind":"tree","intercept":0,"weights":{"a":1}}"#,
                "`kind`",
            ),
            (
                r#"{"model_version":"","kind":"logistic_regression","intercept":0,"weights":{"a":1}}"#,
                "model_version",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{}}"#,
                "at least one",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"scales":{"a":{"center":0,"scale":0}}}"#,
                "`scales.a.scale`",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"scales":{"b":{"center":0,"scale":1}}}"#,
                "`b`",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1e999}}"#,
                "",
            ),
            (
                r#"{"model_version":"v","kind":"logistic_regression","intercept":0,"weights":{"a":1},"bias":2}"#,
                "bias",
            ),
        ];
        let dir = std::env::temp_dir().join(format!("clickpipe-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        for (i, (text, needle)) in cases.iter().enumerate() {
            let path = dir.join(format!("bad-{i}.json"));
            std::fs::write(&path, text).expect("write");
            let err = format!("{:#}", Model::load(&path).expect_err(text));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(needle), "case {i}: {err}");
        }
        let missing = dir.join("absent.json");
        let err = format!("{:#}", Model::load(&missing).expect_err("absent"));
        assert!(err.contains("absent.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
