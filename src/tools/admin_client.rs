//! `clickpipe status`, `clickpipe replay` and `clickpipe health`: command-line clients of the
//! admin API.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API's base URL for an `admin.listen` address (`http://{listen}`, a wildcard address
/// reached on loopback), or `url` as given.
pub fn base_url(url: Option<&str>, listen: &str) -> String {
    match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let listen = match listen.rsplit_once(':') {
                Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
                Some(("[::]", port)) => format!("[::1]:{port}"),
                _ => listen.to_string(),
            };
            format!("http://{listen}")
        }
    }
}

/// `GET {path}` (e.g. `/health/live`): Ok when it answers 200, else why not.
pub async fn health(base: &str, path: &str) -> anyhow::Result<()> {
    let (code, body) =
        request(awc::http::Method::GET, &format!("{base}{path}"), None, None).await?;
    if code == 200 {
        Ok(())
    } else {
        bail!("{path} answered {code}: {body}")
    }
}

async fn request(
    method: awc::http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let client = awc::Client::builder().timeout(TIMEOUT).finish();
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    }
    .map_err(|e| anyhow!("cannot reach the admin API at {url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| anyhow!("cannot read the answer of {url}: {e}"))?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, json))
}

/// [`request`], the answer's JSON when its status is `expected`, else the API's error.
async fn expect(
    expected: u16,
    method: awc::http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let (code, answer) = request(method, url, token, body).await?;
    if code == expected {
        Ok(answer)
    } else {
        Err(api_error(code, &answer))
    }
}

/// `GET url` with [`expect`]: the answer's JSON when it is 200, else the API's error.
async fn get(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    expect(200, awc::http::Method::GET, url, token, None).await
}

fn api_error(status: u16, body: &Value) -> anyhow::Error {
    let message = body["error"].as_str().unwrap_or("(no message)");
    match body["field"].as_str() {
        Some(f) => anyhow!("admin API answered {status}: {message} (field `{f}`)"),
        None => anyhow!("admin API answered {status}: {message}"),
    }
}

/// `GET /status`: the raw JSON, or a human summary.
pub async fn status(base: &str, raw: bool) -> anyhow::Result<String> {
    let body = get(&format!("{base}/status"), None).await?;
    if raw {
        return serde_json::to_string_pretty(&body).context("printing the status");
    }
    let c = &body["counters"];
    let dead: u64 = c["dead_letters"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let mut out = format!(
        "instance {}  version {}  up {} s  circuit breaker {}\nprocessed {}  dead letters {}  records in {}  latency p50 {} ms  p99 {} ms\n\n{:<28} {:>10} {:>12} {:>12} {:>8} {:>9} {:>8}\n",
        body["instance_id"].as_str().unwrap_or("?"),
        body["version"].as_str().unwrap_or("?"),
        body["uptime_s"],
        body["circuit_breaker"].as_str().unwrap_or("?"),
        c["processed"],
        dead,
        c["records_in"],
        body["latency_ms"]["end_to_end_p50"],
        body["latency_ms"]["end_to_end_p99"],
        "partition",
        "state",
        "position",
        "high mark",
        "lag",
        "in flight",
        "restarts",
    );
    for p in body["partitions"].as_array().into_iter().flatten() {
        let name = format!(
            "{} [{}]",
            p["topic"].as_str().unwrap_or("?"),
            p["partition"]
        );
        out.push_str(&format!(
            "{:<28} {:>10} {:>12} {:>12} {:>8} {:>9} {:>8}\n",
            name,
            p["state"].as_str().unwrap_or("?"),
            p["position"],
            p["high_watermark"],
            p["lag"],
            p["in_flight"],
            p["restarts"],
        ));
        if let Some(reason) = p["paused_reason"].as_str() {
            out.push_str(&format!("    paused: {reason}\n"));
        }
    }
    Ok(out)
}

/// Which dead letters `clickpipe replay` asks for: the body of `POST /replay`.
/// Its fields are `clickpipe replay`'s options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayFilter {
    /// Dead-letter kind to replay (repeatable): invalid_event, lookup_failed,
    /// inference_failed, output_failed. Default: all.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only dead letters written at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only dead letters written before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this partition of the dead-letter topic.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Replay at most this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Count what would be replayed; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ReplayFilter {
    /// The JSON body: `dry_run` always, the other fields when given.
    pub fn to_json(&self) -> Value {
        let mut body = serde_json::json!({ "dry_run": self.dry_run });
        if !self.kinds.is_empty() {
            body["kinds"] = serde_json::json!(self.kinds);
        }
        for (key, value) in [("since", &self.since), ("until", &self.until)] {
            if let Some(v) = value {
                body[key] = serde_json::json!(v);
            }
        }
        if let Some(p) = self.partition {
            body["partition"] = serde_json::json!(p);
        }
        if let Some(l) = self.limit {
            body["limit"] = serde_json::json!(l);
        }
        body
    }
}

/// `POST /replay`, then (with `wait`) `GET /replay/{id}` until the job ends. Returns the last
/// report.
pub async fn replay(
    base: &str,
    token: Option<&str>,
    body: &Value,
    wait: bool,
) -> anyhow::Result<Value> {
    let started = expect(
        202,
        awc::http::Method::POST,
        &format!("{base}/replay"),
        token,
        Some(body),
    )
    .await?;
    let id = started["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the admin API returned no job id: {started}"))?
        .to_string();
    if !wait {
        return Ok(started);
    }
    loop {
        let report = get(&format!("{base}/replay/{id}"), token).await?;
        match report["state"].as_str() {
            Some("running") => {
                eprintln!(
                    "replay {id}: scanned {} replayed {} skipped {} errors {}",
                    report["scanned"], report["replayed"], report["skipped"], report["errors"]
                );
                actix_rt::time::sleep(Duration::from_secs(1)).await;
            }
            Some("failed") => bail!(
                "replay {id} failed: {}",
                report["error"].as_str().unwrap_or("(no reason)")
            ),
            _ => return Ok(report),
        }
    }
}
