//! `clickpipe features explain` against a real Redis: it answers what the pipeline's scripts would
//! compute for the event (checked by then applying the event through them), gives an event
//! already applied its first answer back, writes nothing (every key's DUMP is unchanged), and
//! exits 1 for an event that would be dead-lettered and 2 for one that does not decode. Window
//! state is capped (`features.max_window_events`) as the script caps it.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clickpipe_actors::clients::redis::{create_pool, LookupClient, LookupItem};
use clickpipe_actors::clients::zip_cache::ZipCache;
use clickpipe_actors::event::{decode, Limits};
use clickpipe_actors::feature_set::engine::Known;
use clickpipe_actors::feature_set::plan::window_key;
use clickpipe_actors::feature_set::FeatureSet;
use common::*;

const GAP_S: u64 = 1800;

fn set_text(zip_prefix: &str) -> String {
    format!(
        r#"version = "explain-1"
[[feature]]
name = "tz"
kind = "lookup"
key = "{zip_prefix}{{zip}}"
field = "timezone"
type = "string"
default = ""
output = false

[[feature]]
name = "hour"
kind = "local_time"
part = "hour"
timezone_from = "tz"

[[feature]]
name = "views_10m"
kind = "window"
entity = "user_id"
window = "10m"
function = "count"

[[feature]]
name = "spend_1h"
kind = "window"
entity = "user_id"
window = "1h"
function = "sum"
column = "price"
default = 0.0

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
name = "count"
kind = "session"
function = "count"

[[feature]]
name = "price"
kind = "field"
column = "price"
type = "float"
on_missing = "dead_letter"
"#
    )
}

fn event_json(id: &str, user: &str, minute: u32, page: &str, price: Option<f64>) -> String {
    let mut v = serde_json::json!({
        "event_id": id, "user_id": user, "session_id": format!("s-{user}"),
        "timestamp": format!("2026-06-01T10:{minute:02}:00Z"), "event_type": "page_view",
        "zip": "10001", "page": page,
    });
    if let Some(p) = price {
        v["price"] = serde_json::json!(p);
    }
    v.to_string()
}

/// Runs `clickpipe features explain` on `event`: (exit code, stdout JSON or Null, stderr).
fn explain(env: &[(&str, String)], event: &str) -> (i32, serde_json::Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.args(["features", "explain", event])
        .env_remove("CLICKPIPE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run clickpipe");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_answers_what_the_pipeline_would_compute_and_writes_nothing() {
    let zip_prefix = unique("xzip") + ":";
    let session_prefix = unique("xsess") + ":";
    let user = unique("xu");
    seed_zip(&zip_prefix, "10001", "72000", "America/New_York");
    let path = std::env::temp_dir().join(format!("{}.toml", unique("explain-set")));
    std::fs::write(&path, set_text(&zip_prefix)).expect("set file");
    let mut set = FeatureSet::load(&path).expect("set");
    // A cap of two events per entity: the third event drops the first from the windows.
    set.max_window_events = 2;
    let env = [
        ("CLICKPIPE__FEATURES__SET", path.display().to_string()),
        ("CLICKPIPE__REDIS__URL", redis_url()),
        ("CLICKPIPE__REDIS__ZIP_PREFIX", zip_prefix.clone()),
        ("CLICKPIPE__REDIS__SESSION_PREFIX", session_prefix.clone()),
        ("CLICKPIPE__FEATURES__SESSION_GAP_S", GAP_S.to_string()),
        ("CLICKPIPE__FEATURES__MAX_WINDOW_EVENTS", "2".to_string()),
    ];

    let mut cfg = clickpipe::service::settings::load_from(
        None,
        figment::providers::Env::prefixed("CLICKPIPE_TEST_UNUSED__"),
    )
    .expect("defaults")
    .redis;
    cfg.url = redis_url();
    cfg.zip_prefix = zip_prefix.clone();
    cfg.session_prefix = session_prefix.clone();
    let limits = Limits::new(1 << 20);
    let now = chrono::Utc::now();
    // Applies events through the pipeline's scripts; returns each one's features as JSON.
    let apply = |events: &[String]| -> Vec<serde_json::Value> {
        // A client per call: its connection belongs to the runtime that opened it.
        let client = LookupClient::new(
            create_pool(&cfg).expect("pool"),
            Arc::new(ZipCache::new(0, Duration::from_secs(1))),
            &cfg,
            Duration::from_secs(GAP_S),
        );
        let events: Vec<_> = events
            .iter()
            .map(|e| decode(e.as_bytes(), &limits, now).expect("event"))
            .collect();
        let refs: Vec<_> = events.iter().collect();
        let plan = set.plan(&refs);
        let items: Vec<LookupItem<'_>> = events
            .iter()
            .map(|e| LookupItem {
                zip: e.zip.as_deref(),
                session_id: &e.session_id,
                event_id: &e.event_id,
                ts_ms: e.timestamp.timestamp_millis(),
            })
            .collect();
        let (answers, declared) = actix_rt::System::new()
            .block_on(client.lookup_with(&items, Some(&plan)))
            .expect("lookup");
        events
            .iter()
            .zip(answers.iter().zip(&declared))
            .map(|(e, (a, d))| {
                let known = Known {
                    declared: Some(d),
                    session: Some(&a.session),
                };
                serde_json::to_value(set.compute(e, &known).expect("computes")).expect("json")
            })
            .collect()
    };
    let first = apply(&[
        event_json("e1", &user, 0, "/a", Some(10.0)),
        event_json("e2", &user, 5, "/b", Some(2.5)),
    ]);

    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis");
    let keys = [
        format!("{session_prefix}s-{user}"),
        window_key("views_10m", &user),
        window_key("spend_1h", &user),
        format!("{}:v", window_key("spend_1h", &user)),
    ];
    let dump = |conn: &mut redis::Connection| -> Vec<Option<Vec<u8>>> {
        keys.iter()
            .map(|k| redis::cmd("DUMP").arg(k).query(conn).expect("DUMP"))
            .collect()
    };
    let before = dump(&mut conn);
    assert!(
        before.iter().all(Option::is_some),
        "state exists: {before:?}"
    );

    // A new event: explain first, then apply it for real; same features.
    let e3 = event_json("e3", &user, 7, "/a", Some(4.0));
    let (code, explained, stderr) = explain(&env, &e3);
    assert_eq!(code, 0, "{stderr}");
    // An event already applied: its first answer.
    let (code, again, stderr) = explain(&env, &event_json("e2", &user, 5, "/b", Some(2.5)));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again["features"], first[1], "{again}");
    assert_eq!(again["session"]["already_applied"], true);
    // Nothing written by either.
    assert_eq!(dump(&mut conn), before, "explain wrote to Redis");

    let applied = apply(&[e3]);
    assert_eq!(explained["features"], applied[0], "{explained}");
    assert_eq!(explained["features_version"], "explain-1");
    assert_eq!(explained["features"]["views_10m"], 2.0, "capped at two");
    assert_eq!(explained["features"]["spend_1h"], 6.5, "e2 and e3");
    assert_eq!(explained["features"]["session_spend"], 16.5);
    assert_eq!(explained["features"]["session_pages"], 2.0);
    assert_eq!(explained["features"]["hour"], 6, "New York time");

    // Would be dead-lettered (no price): exit 1 with the reason; does not decode: exit 2.
    let (code, out, stderr) = explain(&env, &event_json("e4", &user, 8, "/c", None));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        out["dead_letter"]
            .as_str()
            .unwrap_or_default()
            .contains("price"),
        "{out}"
    );
    let (code, _, stderr) = explain(&env, "{\"event_id\": 5}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid_event"), "{stderr}");
    let _ = std::fs::remove_file(&path);
}
