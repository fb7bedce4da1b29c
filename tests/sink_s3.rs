//! `clickpipe sink s3` (the real binary) against a real broker and an S3-compatible server
//! (moto): Parquet read back by DuckDB with SQL matching the topic, objects filed by event hour
//! and named by offsets, each record in exactly one object after `kill -9`s, gzip JSON lines
//! for dead letters, and a missing bucket refused naming the key.

#![cfg(feature = "aws")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(120);

/// Reads every object under a prefix of a bucket into a directory and answers a DuckDB query
/// over them (Hive partitions `dt`, `hour` as columns) as JSON rows.
const DUCKDB: &str = r#"
import boto3, duckdb, json, os, sys, tempfile
bucket, prefix, query = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
root = tempfile.mkdtemp()
n = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/'):
    for o in page.get('Contents', []):
        path = os.path.join(root, o['Key'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, o['Key'], path)
        n += 1
if n == 0:
    print('[]'); sys.exit(0)
con = duckdb.connect()
con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{root}/{prefix}/**/*.parquet', hive_partitioning = true, union_by_name = true)")
cur = con.execute(query)
cols = [d[0] for d in cur.description]
print(json.dumps([dict(zip(cols, [str(v) if v is not None and not isinstance(v, (int, float, bool, str)) else v for v in row])) for row in cur.fetchall()]))
"#;

/// The keys under a prefix, with their sizes.
const LIST: &str = r#"
import boto3, json, os, sys
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
keys = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1], Prefix=sys.argv[2] + '/'):
    keys += [o['Key'] for o in page.get('Contents', [])]
print(json.dumps(sorted(keys)))
"#;

/// How many keys under a prefix have more than one version.
const VERSIONS: &str = r#"
import boto3, collections, os, sys
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
n = collections.Counter()
for page in s3.get_paginator('list_object_versions').paginate(Bucket=sys.argv[1], Prefix=sys.argv[2] + '/'):
    for v in page.get('Versions', []):
        n[v['Key']] += 1
print(sum(1 for c in n.values() if c > 1))
"#;

/// Every line of every gzip JSON-lines object under a prefix, as one JSON list.
const JSONL: &str = r#"
import boto3, gzip, json, os, sys
s3 = boto3.client('s3', endpoint_url=os.environ['MOTO_URL'])
out = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1], Prefix=sys.argv[2] + '/'):
    for o in page.get('Contents', []):
        body = s3.get_object(Bucket=sys.argv[1], Key=o['Key'])['Body'].read()
        for line in gzip.decompress(body).decode().splitlines():
            out.append({'key': o['Key'], 'line': json.loads(line)})
print(json.dumps(out))
"#;

/// An output record of event `i`: hour `i % 3` of 2026-06-01 (written out of hour order), a
/// score, and features of three types.
fn output(i: usize) -> Vec<u8> {
    let hour = 9 + i % 3;
    serde_json::to_vec(&serde_json::json!({
        "event_id": format!("e{i}"),
        "user_id": format!("u{}", i % 7),
        "session_id": format!("s{}", i % 5),
        "event_time": format!("2026-06-01T{hour:02}:{:02}:00.000Z", i % 60),
        "features": {
            "hour_of_day": hour,
            "is_weekend": i % 2 == 0,
            "zip_median_income": 50000.5 + i as f64,
            "page": format!("/p{}", i % 4),
        },
        "prediction": { "score": (i % 100) as f64 / 100.0, "model_version": "m-1" },
        "processed_at": "2026-06-01T12:00:00.000Z",
    }))
    .expect("json")
}

/// The sink's environment: the test's broker, topics, group and moto bucket.
fn sink_env(names: &Names, moto: &Moto, bucket: &str, group: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("CLICKPIPE__KAFKA__BROKERS".into(), brokers()),
        (
            "CLICKPIPE__KAFKA__OUTPUT_TOPIC".into(),
            names.output.clone(),
        ),
        ("CLICKPIPE__KAFKA__DLQ_TOPIC".into(), names.dlq.clone()),
        ("CLICKPIPE__S3__GROUP_ID".into(), group.into()),
        ("CLICKPIPE__S3__BUCKET".into(), bucket.into()),
        ("CLICKPIPE__S3__ENDPOINT_URL".into(), moto.url.clone()),
        ("CLICKPIPE__S3__FORCE_PATH_STYLE".into(), "true".into()),
        ("CLICKPIPE__S3__MAX_INTERVAL_MS".into(), "300".into()),
        (
            "CLICKPIPE__S3__LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        ("CLICKPIPE__LOG__LEVEL".into(), "info".into()),
    ];
    env.extend(moto_env().into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

/// Where the sinks' logs go (`CLICKPIPE_TEST_SINK_LOG`, else nowhere).
fn sink_log() -> Stdio {
    match std::env::var_os("CLICKPIPE_TEST_SINK_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    }
}

/// A config file with a short group session, so a killed sink's partitions move on in seconds.
fn group_config() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("sink")));
    let text = "[kafka.consumer]\n\"fetch.wait.max.ms\" = \"5\"\n\
                \"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";
    std::fs::write(&path, text).expect("config");
    path
}

fn start_sink(env: &[(String, String)]) -> Instance {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.args(["sink", "s3"])
        .env("CLICKPIPE_CONFIG", group_config())
        .stdout(Stdio::null())
        .stderr(sink_log());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn clickpipe sink s3").into()
}

/// Waits until `group` has committed the end of every partition of `topic`.
fn wait_committed(group: &str, topic: &str, ends: &[i64]) {
    wait_until(
        "the sink did not commit everything",
        WAIT,
        Duration::from_millis(300),
        || {
            let c = committed_offsets(&brokers(), group, topic);
            c.len() == ends.len() && c.iter().zip(ends).all(|(c, e)| *c == Some(*e))
        },
    );
}

/// Produces `records` round-robin over 4 partitions; returns each partition's end offset.
fn produce_spread(topic: &str, records: Vec<Vec<u8>>) -> Vec<i64> {
    let mut ends = [0i64; 4];
    let keyed: Vec<(String, Vec<u8>)> = records
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("k{}", i % 4), v))
        .collect();
    use rdkafka::producer::{BaseRecord, Producer};
    let p = producer();
    for (i, (k, v)) in keyed.iter().enumerate() {
        let part = (i % 4) as i32;
        p.send(BaseRecord::to(topic).key(k).payload(v).partition(part))
            .map_err(|(e, _)| e)
            .expect("produce");
        ends[i % 4] += 1;
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    ends.to_vec()
}

#[test]
fn parquet_objects_are_filed_by_event_hour_and_a_sql_query_matches_the_topic() {
    let names = Names::new("s3", 4);
    let moto = Moto::start();
    let bucket = "sink-parquet";
    moto.create_bucket(bucket);
    let n = 600;
    let ends = produce_spread(&names.output, (0..n).map(output).collect());
    let group = unique("s3-group");
    let mut sink = start_sink(&sink_env(&names, &moto, bucket, &group));
    wait_committed(&group, &names.output, &ends);
    assert_eq!(sink.terminate(), Some(0), "a clean stop");

    let keys: Vec<String> =
        serde_json::from_str(&moto.python(LIST, &[bucket, "predictions"])).expect("keys");
    assert!(!keys.is_empty());
    for k in &keys {
        let rest = k
            .strip_prefix("predictions/dt=2026-06-01/hour=")
            .unwrap_or_else(|| panic!("{k}"));
        let (hour, name) = rest.split_once('/').expect("hour/name");
        assert!(["09", "10", "11"].contains(&hour), "{k}");
        let name = name.strip_suffix(".parquet").expect(".parquet");
        let mut parts = name.rsplitn(3, '+');
        let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
        assert_eq!(topic, Some(names.output.as_str()), "{k}");
        assert!(partition.is_some_and(|p| p.parse::<i32>().is_ok()), "{k}");
        assert!(offset.is_some_and(|o| o.parse::<i64>().is_ok()), "{k}");
    }

    // Athena's view: per hour, the records, their distinct offsets and the sum of scores.
    let rows: Vec<serde_json::Value> = serde_json::from_str(&moto.python(
        DUCKDB,
        &[
            bucket,
            "predictions",
            "SELECT hour, count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS distinct_n, \
             round(sum(score), 6) AS scores, min(event_time) AS first, \
             sum(CASE WHEN is_weekend THEN 1 ELSE 0 END) AS weekend, max(zip_median_income) AS income, \
             count(DISTINCT page) AS pages FROM t GROUP BY hour ORDER BY hour",
        ],
    ))
    .expect("duckdb rows");
    let mut expected: BTreeMap<usize, (usize, f64, usize, f64)> = BTreeMap::new();
    for i in 0..n {
        let e = expected.entry(9 + i % 3).or_default();
        e.0 += 1;
        e.1 += (i % 100) as f64 / 100.0;
        e.2 += usize::from(i % 2 == 0);
        e.3 = e.3.max(50000.5 + i as f64);
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, (hour, (count, scores, weekend, income))) in rows.iter().zip(expected) {
        assert_eq!(
            row["hour"].as_str(),
            Some(format!("{hour:02}").as_str()),
            "{row}"
        );
        assert_eq!(row["n"].as_u64(), Some(count as u64), "{row}");
        assert_eq!(
            row["distinct_n"].as_u64(),
            Some(count as u64),
            "no record twice: {row}"
        );
        let got = row["scores"].as_f64().unwrap_or_default();
        assert!((got - scores).abs() < 1e-6, "{row}: {scores}");
        assert_eq!(row["weekend"].as_u64(), Some(weekend as u64), "{row}");
        assert_eq!(row["income"].as_f64(), Some(income), "{row}");
        assert_eq!(row["pages"].as_u64(), Some(4), "{row}");
        assert!(
            row["first"].as_str().is_some_and(|t| t
                .starts_with(&format!("2026-06-01 {hour:02}:0"))
                && t.ends_with("+00:00")),
            "event_time is a timestamp: {row}"
        );
    }
}

/// The sink's endpoint (`s3.listen`) in `env`.
fn endpoint(env: &[(String, String)]) -> String {
    let listen = env
        .iter()
        .find(|(k, _)| k == "CLICKPIPE__S3__LISTEN")
        .map(|(_, v)| v.clone())
        .expect("CLICKPIPE__S3__LISTEN");
    format!("http://{listen}")
}

#[test]
fn the_endpoint_counts_what_is_in_s3_and_turns_unready_while_the_store_fails() {
    let names = Names::new("s3-health", 4);
    let mut moto = Some(Moto::start());
    let bucket = "sink-health";
    let m = moto.as_ref().expect("moto");
    m.create_bucket(bucket);
    let n = 400;
    let ends = produce_spread(&names.output, (0..n).map(output).collect());
    let group = unique("s3-health-group");
    let env = sink_env(&names, m, bucket, &group);
    let url = endpoint(&env);
    let mut sink = start_sink(&env);
    wait_committed(&group, &names.output, &ends);

    let metrics = |url: &str| {
        let (code, text) = http("GET", &format!("{url}/metrics"), None);
        assert_eq!(code, 200, "{text}");
        text
    };
    let topic = format!("{{topic=\"{}\"}}", names.output);
    let text = metrics(&url);
    let get =
        |text: &str, name: &str| metric(text, name).unwrap_or_else(|| panic!("{name}: {text}"));
    assert_eq!(
        get(&text, &format!("clickpipe_sink_records_read_total{topic}")),
        n as f64
    );
    assert_eq!(
        get(
            &text,
            &format!("clickpipe_sink_records_written_total{topic}")
        ),
        n as f64
    );
    // Three event hours in each of 4 partitions: at least 12 objects.
    assert!(
        get(&text, &format!("clickpipe_sink_objects_total{topic}")) >= 12.0,
        "{text}"
    );
    assert!(
        get(&text, &format!("clickpipe_sink_bytes_total{topic}")) > 0.0,
        "{text}"
    );
    assert_eq!(
        get(&text, "clickpipe_sink_lag_seconds_count"),
        n as f64,
        "{text}"
    );
    assert_eq!(get(&text, "clickpipe_sink_backlog_records"), 0.0, "{text}");
    assert_eq!(get(&text, "clickpipe_sink_partitions"), 4.0, "{text}");
    assert_eq!(get(&text, "clickpipe_sink_store_failing"), 0.0, "{text}");
    let (code, body) = http("GET", &format!("{url}/health/ready"), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = http("GET", &format!("{url}/status"), None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(status["bucket"], bucket, "{status}");
    assert_eq!(status["topics"][0]["records_written"], n, "{status}");
    assert!(status["last_flush_at"].is_string(), "{status}");

    // The store goes away: the next records wait, the endpoint says why, nothing is committed.
    drop(moto.take());
    let more = produce_spread(&names.output, (n..n + 40).map(output).collect());
    wait_until(
        "the sink did not report the failing store",
        WAIT,
        Duration::from_millis(200),
        || http("GET", &format!("{url}/health/ready"), None).0 == 503,
    );
    let (_, body) = http("GET", &format!("{url}/health/ready"), None);
    assert!(body.contains("object store"), "{body}");
    let text = metrics(&url);
    assert!(
        get(&text, "clickpipe_sink_put_failures_total") >= 1.0,
        "{text}"
    );
    assert_eq!(get(&text, "clickpipe_sink_store_failing"), 1.0, "{text}");
    assert!(
        get(&text, "clickpipe_sink_backlog_records") >= 1.0,
        "{text}"
    );
    assert!(
        get(&text, "clickpipe_sink_backlog_age_seconds") > 0.0,
        "{text}"
    );
    assert_eq!(
        get(
            &text,
            &format!("clickpipe_sink_records_written_total{topic}")
        ),
        n as f64
    );
    assert_eq!(sink.terminate(), Some(0), "a stop while the store fails");
    let committed = committed_offsets(&brokers(), &group, &names.output);
    let expected: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    assert_eq!(committed, expected, "nothing committed past what is in S3");
    assert!(more.iter().sum::<i64>() == 40);
}

#[test]
fn after_kill_9_every_record_is_in_exactly_one_object() {
    let names = Names::new("s3-kill", 4);
    let moto = Moto::start();
    let bucket = "sink-kill";
    moto.create_bucket(bucket);
    moto.python(
        "import boto3, os, sys\n\
         boto3.client('s3', endpoint_url=os.environ['MOTO_URL']).put_bucket_versioning(\
         Bucket=sys.argv[1], VersioningConfiguration={'Status': 'Enabled'})",
        &[bucket],
    );
    let n = 20_000;
    let ends = produce_spread(&names.output, (0..n).map(output).collect());
    let group = unique("s3-kill-group");
    let mut env = sink_env(&names, &moto, bucket, &group);
    // Small flushes: many objects and commits to die between.
    env.push(("CLICKPIPE__S3__MAX_RECORDS".into(), "700".into()));
    for round in 0..3 {
        let mut sink = start_sink(&env);
        // Let it write some objects, then kill it mid-work.
        let before = moto.python(LIST, &[bucket, "predictions"]).len();
        wait_until(
            "the sink wrote nothing",
            WAIT,
            Duration::from_millis(20),
            || moto.python(LIST, &[bucket, "predictions"]).len() > before,
        );
        std::thread::sleep(Duration::from_millis(150 * round));
        sink.kill().expect("kill -9");
        let _ = sink.wait();
    }
    let mut sink = start_sink(&env);
    wait_committed(&group, &names.output, &ends);
    assert_eq!(sink.terminate(), Some(0));

    // Objects written more than once: the flushes a kill caught between writing and committing.
    let rewritten = moto.python(VERSIONS, &[bucket, "predictions"]);
    eprintln!("objects rewritten after a kill: {}", rewritten.trim());
    let rows: Vec<serde_json::Value> = serde_json::from_str(&moto.python(
        DUCKDB,
        &[
            bucket,
            "predictions",
            "SELECT kafka_partition AS p, kafka_offset AS o, count(*) AS c FROM t GROUP BY ALL HAVING count(*) > 1 \
             UNION ALL SELECT -1, count(DISTINCT (kafka_partition, kafka_offset)), count(*) FROM t",
        ],
    ))
    .expect("duckdb rows");
    let total = rows.last().expect("totals");
    assert_eq!(rows.len(), 1, "records in two objects: {rows:?}");
    assert_eq!(total["o"].as_u64(), Some(n as u64), "every record: {total}");
    assert_eq!(total["c"].as_u64(), Some(n as u64), "once: {total}");
}

#[test]
fn dead_letters_go_to_their_own_prefix_as_gzip_json_lines() {
    let names = Names::new("s3-dlq", 4);
    let moto = Moto::start();
    let bucket = "sink-jsonl";
    moto.create_bucket(bucket);
    let outputs = produce_spread(&names.output, (0..8).map(output).collect());
    {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseRecord, Producer};
        let p = producer();
        for i in 0..3 {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "clickpipe.error.kind",
                    value: Some("invalid_event"),
                })
                .insert(Header {
                    key: "clickpipe.error.message",
                    value: Some("no price"),
                })
                .insert(Header {
                    key: "clickpipe.error.stage",
                    value: Some("enrich"),
                })
                .insert(Header {
                    key: "clickpipe.source.offset",
                    value: Some("41"),
                });
            let payload =
                format!("{{\"event_id\":\"d{i}\",\"timestamp\":\"2026-06-02T0{i}:30:00Z\"}}");
            p.send(
                BaseRecord::to(&names.dlq)
                    .key("k")
                    .payload(payload.as_bytes())
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .expect("produce");
        }
        p.flush(Duration::from_secs(10)).expect("flush");
    }
    let group = unique("s3-dlq-group");
    let mut env = sink_env(&names, &moto, bucket, &group);
    env.push(("CLICKPIPE__S3__FORMAT".into(), "jsonl".into()));
    env.push(("CLICKPIPE__S3__INCLUDE_DEAD_LETTERS".into(), "true".into()));
    let mut sink = start_sink(&env);
    wait_committed(&group, &names.output, &outputs);
    wait_committed(&group, &names.dlq, &[3]);
    assert_eq!(sink.terminate(), Some(0));

    let lines: Vec<serde_json::Value> =
        serde_json::from_str(&moto.python(JSONL, &[bucket, "predictions-dead-letters"]))
            .expect("lines");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut hours: HashMap<String, usize> = HashMap::new();
    for l in &lines {
        let key = l["key"].as_str().unwrap_or_default();
        assert!(key.ends_with(".jsonl.gz"), "{key}");
        *hours
            .entry(key.split('/').take(3).collect::<Vec<_>>().join("/"))
            .or_default() += 1;
        assert_eq!(l["line"]["kind"], "invalid_event");
        assert_eq!(l["line"]["message"], "no price");
        assert_eq!(l["line"]["source_offset"], "41");
        assert!(l["line"]["payload"]
            .as_str()
            .is_some_and(|p| p.contains("\"event_id\":\"d")));
    }
    assert_eq!(hours.len(), 3, "one hour each: {hours:?}");
    assert!(
        hours.contains_key("predictions-dead-letters/dt=2026-06-02/hour=01"),
        "{hours:?}"
    );
    let predictions: Vec<serde_json::Value> =
        serde_json::from_str(&moto.python(JSONL, &[bucket, "predictions"])).expect("lines");
    assert_eq!(predictions.len(), 8);
    assert!(predictions
        .iter()
        .all(|l| l["line"]["prediction"]["model_version"] == "m-1"));
}

#[test]
fn the_sink_refuses_to_start_without_a_bucket_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_clickpipe"))
        .args(["sink", "s3"])
        .env_remove("CLICKPIPE_CONFIG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("s3.bucket"), "{stderr}");
}
