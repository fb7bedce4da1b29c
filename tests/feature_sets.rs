//! Declared feature sets (`features.set`) through the real pipeline, Redis and broker: lookups by
//! template, windows per entity in event time (out of order, redelivered, filtered), a feature
//! that dead-letters what it cannot compute, `features_version` in the output, and start-up
//! checks that name the feature and the key.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// An event of `user` at `minute` past 2026-06-01T10:00Z, with an optional price.
fn click(id: &str, user: &str, minute: u32, event_type: &str, price: Option<f64>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "event_id": id, "user_id": user, "session_id": format!("s-{user}"),
        "timestamp": format!("2026-06-01T10:{minute:02}:00Z"), "event_type": event_type,
        "zip": "10001", "device": "mobile",
    });
    if let Some(p) = price {
        v["price"] = serde_json::json!(p);
    }
    serde_json::to_vec(&v).expect("json")
}

/// A feature-set file for `names` (its ZIP prefix); returns its path.
fn set_file(names: &Names) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("feature-set")));
    // The built-in features (the reference model needs them all), then the test's own.
    let builtin = clickpipe_actors::feature_set::DEFAULT_SET
        .replace("version = \"builtin-1\"", "version = \"test-7\"")
        .replace("zip:{zip}", &format!("{}{{zip}}", names.zip_prefix));
    let text = format!(
        r#"{builtin}
[[feature]]
name = "income"
kind = "lookup"
key = "{zp}{{zip}}"
field = "median_income"
type = "float"
default = -1.0
known = "income_known"

[[feature]]
name = "views_10m"
kind = "window"
entity = "user_id"
window = "10m"
function = "count"
where = {{ event_type = "product_view" }}

[[feature]]
name = "avg_price_1h"
kind = "window"
entity = "user_id"
window = "1h"
function = "avg"
column = "price"
default = 0.0

[[feature]]
name = "price"
kind = "field"
column = "price"
type = "float"
on_missing = "dead_letter"
"#,
        zp = names.zip_prefix
    );
    std::fs::write(&path, text).expect("feature set file");
    path
}

#[test]
fn a_declared_set_computes_windows_in_event_time_once_per_event() {
    let (names, model, mut cfg) = with_healthy_model("fset", 1);
    seed_zip(&names.zip_prefix, "10001", "72000", "America/New_York");
    let path = set_file(&names);
    cfg.features.set = path.display().to_string();
    cfg.validate().expect("the set is valid");
    let user = unique("u");
    let running = run_pipeline(cfg);
    // Sent out of order: 10:02, 10:00, 10:01, 10:01 again (redelivered), then a page view at
    // 10:03 (not a product view: counted by no window of views) and an event without a price.
    let records: Vec<(String, Vec<u8>)> = [
        click("v2", &user, 2, "product_view", Some(30.0)),
        click("v0", &user, 0, "product_view", Some(10.0)),
        click("v1", &user, 1, "product_view", Some(20.0)),
        click("v1", &user, 1, "product_view", Some(20.0)),
        click("p3", &user, 3, "page_view", Some(40.0)),
        click("n4", &user, 4, "page_view", None),
    ]
    .into_iter()
    .map(|v| (user.clone(), v))
    .collect();
    produce(&names.input, &records);
    let mut outputs = Collector::new(&names.output);
    assert!(outputs.until(WAIT, |m| m.len() >= 5), "5 outputs");
    let mut letters = Collector::new(&names.dlq);
    assert!(letters.until(WAIT, |m| !m.is_empty()), "1 dead letter");
    running.stop();
    model.stop();
    let _ = std::fs::remove_file(&path);

    let got: Vec<(String, u64, f64)> = outputs
        .messages
        .iter()
        .map(json)
        .map(|v| {
            assert_eq!(v["features_version"], "test-7", "{v}");
            assert!(
                v["features"].get("zip_timezone").is_none(),
                "output = false: {v}"
            );
            assert_eq!(
                v["features"]["hour_of_day"], 6,
                "10:xx UTC is 06:xx in New York: {v}"
            );
            assert_eq!(
                (
                    v["features"]["income"].as_f64(),
                    v["features"]["income_known"].as_bool()
                ),
                (Some(72_000.0), Some(true)),
                "{v}"
            );
            (
                v["event_id"].as_str().unwrap_or_default().to_string(),
                v["features"]["views_10m"].as_f64().unwrap_or(-1.0) as u64,
                v["features"]["avg_price_1h"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("v2".into(), 1, 30.0),
            // 10:00 covers only itself, though 10:02 arrived first.
            ("v0".into(), 1, 10.0),
            ("v1".into(), 2, 15.0),
            // Redelivered: counted once.
            ("v1".into(), 2, 15.0),
            // A page view: no product view added, the three before it counted.
            ("p3".into(), 3, 25.0),
        ]
    );
    let letter = &letters.messages[0];
    assert_eq!(
        header(letter, "clickpipe.error.kind").as_deref(),
        Some("invalid_event")
    );
    let reason = header(letter, "clickpipe.error.message").unwrap_or_default();
    assert!(reason.contains("price"), "names the feature: {reason}");
}

/// A feature-set file with the built-in features and `extra` after them; returns its path.
fn set_file_with(names: &Names, extra: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("feature-set")));
    let builtin = clickpipe_actors::feature_set::DEFAULT_SET
        .replace("version = \"builtin-1\"", "version = \"kinds-1\"")
        .replace("zip:{zip}", &format!("{}{{zip}}", names.zip_prefix));
    std::fs::write(&path, format!("{builtin}\n{extra}")).expect("feature set file");
    path
}

#[test]
fn session_field_one_hot_and_clock_features_reach_the_output() {
    let (names, model, mut cfg) = with_healthy_model("fset-kinds", 1);
    seed_zip(&names.zip_prefix, "10001", "72000", "America/New_York");
    let path = set_file_with(
        &names,
        r#"
[[feature]]
name = "session_spend"
kind = "session"
function = "sum"
column = "price"
default = 0.0

[[feature]]
name = "session_pages"
kind = "session"
function = "count_distinct"
column = "page"

[[feature]]
name = "page"
kind = "field"
column = "page"
type = "string"
default = "(none)"

[[feature]]
name = "shoes"
kind = "one_hot"
column = "page"
values = ["/shoes", "/boots"]

[[feature]]
name = "local_minute"
kind = "local_time"
part = "minute_of_day"
timezone_from = "zip_timezone"

[[feature]]
name = "month"
kind = "local_time"
part = "month"
"#,
    );
    cfg.features.set = path.display().to_string();
    cfg.validate().expect("the set is valid");
    let user = unique("u");
    let running = run_pipeline(cfg);
    let with_page = |id: &str, minute: u32, page: Option<&str>, price: Option<f64>| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&click(id, &user, minute, "page_view", price)).expect("json");
        if let Some(p) = page {
            v["page"] = serde_json::json!(p);
        }
        (user.clone(), serde_json::to_vec(&v).expect("json"))
    };
    produce(
        &names.input,
        &[
            with_page("a", 0, Some("/shoes"), Some(10.5)),
            with_page("b", 1, Some("/boots"), None),
            with_page("c", 2, Some("/shoes"), Some(2.25)),
            // Redelivered: the session counts it once.
            with_page("c", 2, Some("/shoes"), Some(2.25)),
            with_page("d", 3, None, Some(1.0)),
        ],
    );
    let mut outputs = Collector::new(&names.output);
    assert!(outputs.until(WAIT, |m| m.len() >= 5), "5 outputs");
    running.stop();
    model.stop();
    let _ = std::fs::remove_file(&path);
    let rows: Vec<serde_json::Value> = outputs.messages.iter().map(json).collect();
    let f = |i: usize, k: &str| rows[i]["features"][k].clone();
    let col = |k: &str| (0..5).map(|i| f(i, k)).collect::<Vec<_>>();
    use serde_json::json as j;
    assert_eq!(
        col("session_spend"),
        vec![j!(10.5), j!(10.5), j!(12.75), j!(12.75), j!(13.75)]
    );
    assert_eq!(
        col("session_pages"),
        vec![j!(1.0), j!(2.0), j!(2.0), j!(2.0), j!(2.0)]
    );
    assert_eq!(
        col("page"),
        vec![
            j!("/shoes"),
            j!("/boots"),
            j!("/shoes"),
            j!("/shoes"),
            j!("(none)")
        ]
    );
    assert_eq!(col("shoes_/shoes"), vec![j!(1), j!(0), j!(1), j!(1), j!(0)]);
    assert_eq!(col("shoes_/boots"), vec![j!(0), j!(1), j!(0), j!(0), j!(0)]);
    assert_eq!(col("shoes_other"), vec![j!(0), j!(0), j!(0), j!(0), j!(1)]);
    // 10:0x UTC is 06:0x in New York: minute 360 + x.
    assert_eq!(
        col("local_minute"),
        vec![j!(360), j!(361), j!(362), j!(362), j!(363)]
    );
    assert_eq!(col("month"), vec![j!(6); 5]);
    assert_eq!(
        col("session_event_count"),
        vec![j!(1), j!(2), j!(3), j!(3), j!(4)]
    );
    assert!(rows.iter().all(|r| r["features_version"] == "kinds-1"));
}

#[test]
fn the_online_store_keeps_each_entitys_latest_vector_by_event_time_with_its_ttl() {
    let (names, model, mut cfg) = with_healthy_model("fset-store", 1);
    seed_zip(&names.zip_prefix, "10001", "72000", "America/New_York");
    let path = set_file_with(
        &names,
        r#"
[[feature]]
name = "price"
kind = "field"
column = "price"
type = "float"
default = -1.0

[[materialize]]
entity = "user_id"
ttl = "1h"

[[materialize]]
entity = "zip"
ttl = "90s"
"#,
    );
    cfg.features.set = path.display().to_string();
    cfg.validate().expect("the set is valid");
    let user = unique("u");
    let running = run_pipeline(cfg);
    // The newest event (10:02) first, then an older one (10:00) and a redelivery of it: neither
    // may roll the stored vector back.
    let records: Vec<(String, Vec<u8>)> = [
        click("new", &user, 2, "page_view", Some(30.0)),
        click("old", &user, 0, "page_view", Some(10.0)),
        click("old", &user, 0, "page_view", Some(10.0)),
    ]
    .into_iter()
    .map(|v| (user.clone(), v))
    .collect();
    produce(&names.input, &records);
    let mut outputs = Collector::new(&names.output);
    assert!(outputs.until(WAIT, |m| m.len() >= 3), "3 outputs");
    running.stop();
    model.stop();
    let _ = std::fs::remove_file(&path);

    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis");
    let key = format!("features:user_id:{user}");
    let stored: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query(&mut conn)
        .expect("HGETALL");
    assert_eq!(
        stored.get("_event_id").map(String::as_str),
        Some("new"),
        "{stored:?}"
    );
    assert_eq!(
        stored.get("price").map(String::as_str),
        Some("30.0"),
        "{stored:?}"
    );
    assert_eq!(
        stored.get("_features_version").map(String::as_str),
        Some("kinds-1")
    );
    let when = chrono::DateTime::parse_from_rfc3339("2026-06-01T10:02:00Z").expect("time");
    assert_eq!(
        stored.get("_event_time_ms"),
        Some(&when.timestamp_millis().to_string())
    );
    // What the model saw: the same vector as the output record of that event.
    let out = outputs
        .messages
        .iter()
        .map(json)
        .find(|v| v["event_id"] == "new")
        .expect("output of the newest event");
    let features = out["features"].as_object().expect("features");
    let mut with_value = 0;
    for (name, value) in features {
        let text = match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        };
        with_value += usize::from(text.is_some());
        assert_eq!(
            stored.get(name),
            text.as_ref(),
            "feature {name} (null: left out)"
        );
    }
    assert_eq!(
        stored.len(),
        with_value + 3,
        "the features and three fields of its own"
    );
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).expect("PTTL");
    assert!((3_500_000..=3_600_000).contains(&ttl), "ttl 1h: {ttl}");
    let zip_ttl: i64 = redis::cmd("PTTL")
        .arg("features:zip:10001")
        .query(&mut conn)
        .expect("PTTL");
    assert!((1..=90_000).contains(&zip_ttl), "ttl 90s: {zip_ttl}");
}

#[test]
fn a_bad_feature_set_stops_start_up_naming_the_feature_and_the_key() {
    let names = Names::without_topics("fset-bad");
    let mut cfg = config(&names, "http://127.0.0.1:9");
    let path = std::env::temp_dir().join(format!("{}.toml", unique("bad-set")));
    std::fs::write(
        &path,
        "version = \"1\"\n[[feature]]\nname = \"w\"\nkind = \"window\"\nentity = \"user_id\"\n\
         window = \"3d\"\nfunction = \"count\"\n",
    )
    .expect("file");
    cfg.features.set = path.display().to_string();
    let e = cfg.validate().expect_err("window out of range");
    let _ = std::fs::remove_file(&path);
    assert_eq!(e.key, "features.set", "{e}");
    assert!(e.problem.contains("feature \"w\": key \"window\""), "{e}");
    cfg.features.set = "/nonexistent/set.toml".into();
    let e = cfg.validate().expect_err("missing file");
    assert!(e.problem.contains("cannot read"), "{e}");
}
