//! The DynamoDB fallback of ZIP data (`redis.fallback = "dynamodb"`) against a real
//! DynamoDB-compatible server (moto) and the real pipeline: a ZIP Redis lacks comes from the
//! table and is written back to Redis; with Redis down, events go on with the table's ZIP data
//! and new sessions instead of waiting; `seed-redis --dynamodb` loads the table.

#![cfg(feature = "aws")]

mod common;

use std::time::Duration;

use clickpipe_actors::config::LookupFallback;
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// Creates table `name` (partition key `zip`) and puts `rows` (zip, income, time zone).
fn create_table(moto: &Moto, name: &str, rows: &[(&str, &str, &str)]) {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(z, i, t)| serde_json::json!({"zip": z, "income": i, "tz": t}))
        .collect();
    moto.python(
        r#"
import boto3, json, os, sys
from decimal import Decimal
d = boto3.resource('dynamodb', endpoint_url=os.environ['MOTO_URL'])
t = d.create_table(TableName=sys.argv[1], KeySchema=[{'AttributeName': 'zip', 'KeyType': 'HASH'}],
    AttributeDefinitions=[{'AttributeName': 'zip', 'AttributeType': 'S'}], BillingMode='PAY_PER_REQUEST')
for r in json.loads(sys.argv[2]):
    t.put_item(Item={'zip': r['zip'], 'median_income': Decimal(r['income']), 'timezone': r['tz']})
"#,
        &[name, &serde_json::to_string(&items).expect("json")],
    );
}

/// The process's AWS settings for moto (every test sets the same values).
fn aws_env() {
    for (k, v) in moto_env() {
        std::env::set_var(k, v);
    }
}

fn event_at(id: &str, session: &str, minute: u32, zip: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event_id": id, "user_id": "u", "session_id": session,
        "timestamp": format!("2026-06-01T10:{minute:02}:00Z"), "event_type": "page_view",
        "zip": zip,
    }))
    .expect("json")
}

#[test]
fn a_zip_redis_lacks_comes_from_the_table_and_is_written_back() {
    aws_env();
    let moto = Moto::start();
    create_table(&moto, "zips-a", &[("10001", "72000", "America/New_York")]);
    let (names, model, mut cfg) = with_healthy_model("ddb", 1);
    cfg.redis.fallback = LookupFallback::Dynamodb;
    cfg.dynamodb.table = "zips-a".into();
    cfg.dynamodb.endpoint_url = moto.url.clone();
    cfg.validate().expect("valid");
    let running = run_pipeline(cfg);
    let session = unique("s");
    produce(
        &names.input,
        &[(session.clone(), event_at("a", &session, 0, "10001"))],
    );
    let mut out = Collector::new(&names.output);
    assert!(out.until(WAIT, |m| !m.is_empty()), "an output");
    running.stop();
    model.stop();
    let v = json(&out.messages[0]);
    assert_eq!(v["features"]["zip_median_income"], 72000.0, "{v}");
    assert_eq!(v["features"]["zip_known"], true, "{v}");
    assert_eq!(v["features"]["hour_of_day"], 6, "New York time: {v}");

    let mut conn = redis::Client::open(redis_url())
        .expect("redis url")
        .get_connection()
        .expect("redis");
    let stored: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}10001", names.zip_prefix))
        .query(&mut conn)
        .expect("HGETALL");
    assert_eq!(
        stored
            .get("median_income")
            .and_then(|v| v.parse::<f64>().ok()),
        Some(72000.0),
        "written back: {stored:?}"
    );
    assert_eq!(
        stored.get("timezone").map(String::as_str),
        Some("America/New_York")
    );
}

#[test]
fn with_redis_down_events_go_on_with_the_tables_zip_data_and_new_sessions() {
    aws_env();
    let moto = Moto::start();
    create_table(
        &moto,
        "zips-b",
        &[("94105", "130000", "America/Los_Angeles")],
    );
    let (names, model, mut cfg) = with_healthy_model("ddb-down", 1);
    cfg.redis.url = format!("redis://127.0.0.1:{}/", free_port());
    cfg.redis.retry_budget_ms = Millis(300);
    cfg.redis.timeout_ms = Millis(200);
    cfg.redis.fallback = LookupFallback::Dynamodb;
    cfg.dynamodb.table = "zips-b".into();
    cfg.dynamodb.endpoint_url = moto.url.clone();
    cfg.validate().expect("valid");
    let running = run_pipeline(cfg);
    let session = unique("s");
    let events: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                session.clone(),
                event_at(&format!("e{i}"), &session, i, "94105"),
            )
        })
        .collect();
    produce(&names.input, &events);
    let mut out = Collector::new(&names.output);
    assert!(
        out.until(WAIT, |m| m.len() >= 3),
        "3 outputs while Redis is down"
    );
    let degraded = running
        .stats
        .lookup_degraded
        .load(std::sync::atomic::Ordering::Relaxed);
    running.stop();
    model.stop();
    assert_eq!(degraded, 3, "counted as degraded");
    for m in &out.messages {
        let v = json(m);
        assert_eq!(v["features"]["zip_median_income"], 130000.0, "{v}");
        assert_eq!(v["features"]["hour_of_day"], 3, "Los Angeles time: {v}");
        assert_eq!(
            v["features"]["session_event_count"], 1,
            "sessions unknown: {v}"
        );
    }
    assert!(
        settled_after_a_second(&names.dlq).is_empty(),
        "no dead letters"
    );
}

#[test]
fn seed_redis_loads_the_table_too() {
    aws_env();
    let moto = Moto::start();
    create_table(&moto, "zips-c", &[]);
    let csv = concat!(env!("CARGO_MANIFEST_DIR"), "/config/zips.csv");
    let rows = std::fs::read_to_string(csv).expect("csv").lines().count() - 1;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .args(["seed-redis", "--csv", csv, "--dynamodb"])
        .env_remove("CLICKPIPE_CONFIG")
        .env("CLICKPIPE__REDIS__URL", redis_url())
        .env("CLICKPIPE__REDIS__ZIP_PREFIX", unique("seedzip") + ":")
        .env("CLICKPIPE__DYNAMODB__TABLE", "zips-c")
        .env("CLICKPIPE__DYNAMODB__ENDPOINT_URL", &moto.url)
        .output()
        .expect("seed-redis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count: usize = moto
        .python(
            "import boto3, os\n\
             print(boto3.client('dynamodb', endpoint_url=os.environ['MOTO_URL']).scan(TableName='zips-c', Select='COUNT')['Count'])",
            &[],
        )
        .trim()
        .parse()
        .expect("count");
    assert_eq!(count, rows);
    let missing_table = std::process::Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .args(["seed-redis", "--csv", csv, "--dynamodb"])
        .env_remove("CLICKPIPE_CONFIG")
        .env("CLICKPIPE__REDIS__URL", redis_url())
        .env("CLICKPIPE__REDIS__ZIP_PREFIX", unique("seedzip") + ":")
        .output()
        .expect("seed-redis");
    assert_eq!(missing_table.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing_table.stderr).contains("dynamodb.table"));
}
