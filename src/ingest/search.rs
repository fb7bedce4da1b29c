//! The search side of the tailer: one page of an index in (timestamp, tiebreaker) order after a
//! given position, over the REST API Elasticsearch and OpenSearch share, with or without a point
//! in time (OpenSearch: `POST /{index}/_search/point_in_time`; Elasticsearch: `POST /{index}/_pit`).

use std::time::Duration;

use crate::service::config::IngestConfig;
use anyhow::Context as _;
use clickpipe_actors::config::mask_url;
use clickpipe_actors::error::ClientError;
use serde_json::{json, Map, Value};

/// One document of a page.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `_id`.
    pub id: String,
    /// The timestamp field, epoch ms (from the sort values).
    pub ts_ms: i64,
    /// `_source`.
    pub source: Map<String, Value>,
    /// The hit's sort values (the position to page on from).
    pub sort: Vec<Value>,
}

/// The documents a search reads: timestamps in `[from_ms, before_ms)` (open where None), minus
/// the ids in `exclude`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span<'a> {
    /// Lowest timestamp (epoch ms), inclusive.
    pub from_ms: Option<i64>,
    /// Highest timestamp (epoch ms), exclusive.
    pub before_ms: Option<i64>,
    /// Document ids left out.
    pub exclude: &'a [&'a str],
}

/// A point in time opened for one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pit {
    /// OpenSearch's point in time.
    OpenSearch(String),
    /// Elasticsearch's point in time.
    Elasticsearch(String),
}

impl Pit {
    fn id(&self) -> &str {
        match self {
            Pit::OpenSearch(id) | Pit::Elasticsearch(id) => id,
        }
    }
}

/// Which point-in-time API a cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PitApi {
    /// No point in time: pages are ordered by the configured tiebreaker field.
    None,
    /// OpenSearch's.
    OpenSearch,
    /// Elasticsearch's.
    Elasticsearch,
}

const KEEP_ALIVE: &str = "1m";

/// The client. Built on the thread that uses it (awc is per thread).
pub struct SearchClient {
    http: awc::Client,
    base: String,
    index: String,
    ts_field: String,
    tiebreaker: String,
    auth: Option<String>,
    timeout: Duration,
}

impl SearchClient {
    /// A client for `cfg`; TLS with the system's roots, or `tls_ca_file`'s.
    pub fn new(cfg: &IngestConfig) -> anyhow::Result<SearchClient> {
        let timeout = cfg.timeout_ms.get();
        let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
            .context("cannot set up TLS")?;
        if let Some(ca) = &cfg.tls_ca_file {
            builder.set_ca_file(ca).with_context(|| {
                format!("invalid config key `ingest.tls_ca_file`: cannot read {ca}")
            })?;
        }
        if cfg.tls_insecure {
            builder.set_verify(openssl::ssl::SslVerifyMode::NONE);
        }
        let connector = awc::Connector::new()
            .timeout(timeout)
            .openssl(builder.build());
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(timeout)
            .disable_redirects()
            .finish();
        let auth = match (&cfg.username, &cfg.password, &cfg.api_key) {
            (Some(u), Some(p), _) => Some(format!("Basic {}", base64(&format!("{u}:{p}")))),
            (_, _, Some(key)) => Some(format!("ApiKey {key}")),
            _ => None,
        };
        Ok(SearchClient {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            index: cfg.index.clone(),
            ts_field: cfg.timestamp_field.clone(),
            tiebreaker: cfg.tiebreaker_field.clone(),
            auth,
            timeout,
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::permanent(format!("bad method: {e}")))?;
        let mut req = self.http.request(method, &url).timeout(self.timeout);
        if let Some(auth) = &self.auth {
            req = req.insert_header(("authorization", auth.as_str()));
        }
        let sent = match body {
            Some(b) => req.send_json(b).await,
            None => req.send().await,
        };
        let mut resp = sent
            .map_err(|e| ClientError::transient(format!("{} {path}: {e}", mask_url(&self.base))))?;
        let status = resp.status();
        let bytes = resp
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| ClientError::transient(format!("{path}: reading the answer: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).replace('\n', " ");
            let message = format!("{path}: HTTP {status}: {text}");
            // A point in time that expired (a long Kafka outage held the page) is reopened by the
            // next poll: not a refusal.
            let lost_context = status.as_u16() == 404
                && (text.contains("search_context_missing") || text.contains("No search context"));
            return Err(
                if status.as_u16() == 429 || status.is_server_error() || lost_context {
                    ClientError::transient(message)
                } else {
                    ClientError::permanent(message)
                },
            );
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::permanent(format!("{path}: the answer is not JSON: {e}")))
    }

    /// Which point-in-time API the cluster answers to (a probe that opens and closes one).
    /// An answer the cluster gives for an API it lacks (4xx) counts as "not this one"; a failure
    /// to reach it (or a 5xx) is returned, so an unreachable cluster is not mistaken for one
    /// without points in time.
    pub async fn detect_pit(&self) -> Result<PitApi, ClientError> {
        for api in [PitApi::OpenSearch, PitApi::Elasticsearch] {
            match self.open_pit(api).await {
                Ok(pit) => {
                    self.close_pit(&pit).await;
                    return Ok(api);
                }
                Err(e) if e.retry == clickpipe_actors::error::Retry::Never => {
                    tracing::debug!(error = %e, ?api, "no point in time of this kind");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(PitApi::None)
    }

    /// Opens a point in time on the index.
    pub async fn open_pit(&self, api: PitApi) -> Result<Pit, ClientError> {
        let index = urlencode(&self.index);
        let (path, field, pit): (String, &str, fn(String) -> Pit) = match api {
            PitApi::OpenSearch => (
                format!("/{index}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
                "pit_id",
                Pit::OpenSearch,
            ),
            PitApi::Elasticsearch => (
                format!("/{index}/_pit?keep_alive={KEEP_ALIVE}"),
                "id",
                Pit::Elasticsearch,
            ),
            PitApi::None => return Err(ClientError::permanent("no point-in-time API")),
        };
        let v = self.call("POST", &path, None).await?;
        v[field]
            .as_str()
            .map(|id| pit(id.to_string()))
            .ok_or_else(|| {
                ClientError::permanent(format!("point in time: no {field} in the answer"))
            })
    }

    /// Closes a point in time (best effort: it expires after a minute anyway).
    pub async fn close_pit(&self, pit: &Pit) {
        let result = match pit {
            Pit::OpenSearch(id) => {
                self.call(
                    "DELETE",
                    "/_search/point_in_time",
                    Some(&json!({ "pit_id": [id] })),
                )
                .await
            }
            Pit::Elasticsearch(id) => {
                self.call("DELETE", "/_pit", Some(&json!({ "id": id })))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "closing the point in time failed");
        }
    }

    /// The search body of one page of `span`, after `after` in (timestamp, tiebreaker) order.
    pub fn page_body(
        &self,
        span: &Span<'_>,
        after: Option<&[Value]>,
        pit: Option<&Pit>,
        size: usize,
    ) -> Value {
        let tiebreak = match pit {
            Some(_) => json!({ "_shard_doc": "asc" }),
            None => json!({ self.tiebreaker.as_str(): "asc" }),
        };
        let mut range = json!({ "format": "epoch_millis" });
        if let Some(ms) = span.from_ms {
            range["gte"] = json!(ms);
        }
        if let Some(ms) = span.before_ms {
            range["lt"] = json!(ms);
        }
        let filter = if span.from_ms.is_some() || span.before_ms.is_some() {
            json!({ "range": { self.ts_field.as_str(): range } })
        } else {
            json!({ "exists": { "field": self.ts_field } })
        };
        let query = if span.exclude.is_empty() {
            filter
        } else {
            json!({ "bool": {
                "filter": [ filter ],
                "must_not": [ { "ids": { "values": span.exclude } } ],
            } })
        };
        let mut body = json!({
            "size": size,
            "sort": [ { self.ts_field.as_str(): "asc" }, tiebreak ],
            "query": query,
            "track_total_hits": false,
        });
        if let Some(after) = after {
            body["search_after"] = Value::Array(after.to_vec());
        }
        if let Some(pit) = pit {
            body["pit"] = json!({ "id": pit.id(), "keep_alive": KEEP_ALIVE });
        }
        body
    }

    /// One page (see [`SearchClient::page_body`]). With a point in time the answer may carry a
    /// new point-in-time id, returned for the next page.
    pub async fn page(
        &self,
        span: &Span<'_>,
        after: Option<&[Value]>,
        pit: Option<&Pit>,
        size: usize,
    ) -> Result<(Vec<Hit>, Option<String>), ClientError> {
        let body = self.page_body(span, after, pit, size);
        let path = match pit {
            Some(_) => "/_search".to_string(),
            None => format!("/{}/_search", urlencode(&self.index)),
        };
        let v = self.call("POST", &path, Some(&body)).await?;
        // A shard that failed or timed out leaves its documents out of a 200 answer: moving the
        // cursor past them would lose them for good, so the page is tried again.
        let failed_shards = v["_shards"]["failed"].as_u64().unwrap_or(0);
        if failed_shards > 0 || v["timed_out"].as_bool() == Some(true) {
            return Err(ClientError::transient(format!(
                "{path}: partial answer ({failed_shards} shards failed, timed out: {})",
                v["timed_out"]
            )));
        }
        let new_pit = v["pit_id"].as_str().map(str::to_string);
        let hits = v["hits"]["hits"]
            .as_array()
            .ok_or_else(|| ClientError::permanent("search answer without hits.hits"))?;
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            let id = h["_id"]
                .as_str()
                .ok_or_else(|| ClientError::permanent("a hit without _id"))?
                .to_string();
            let sort = h["sort"].as_array().cloned().unwrap_or_default();
            let ts_ms = sort.first().and_then(epoch_ms).ok_or_else(|| {
                ClientError::permanent(format!(
                    "hit {id}: no numeric sort value for the timestamp field"
                ))
            })?;
            let source = match &h["_source"] {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            out.push(Hit {
                id,
                ts_ms,
                source,
                sort,
            });
        }
        Ok((out, new_pit))
    }
}

/// A date sort value as epoch milliseconds (a number, or a numeric string for nanosecond dates).
fn epoch_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse::<i128>().ok().map(|n| {
            // date_nanos sorts as nanoseconds.
            if n > 10_000_000_000_000_000 {
                (n / 1_000_000) as i64
            } else {
                n as i64
            }
        }),
        _ => None,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding (HTTP Basic credentials).
fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(base64("elastic:changeme"), "ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("abc"), "YWJj");
    }

    #[test]
    fn sort_values_become_epoch_milliseconds() {
        assert_eq!(epoch_ms(&json!(1795651200000i64)), Some(1795651200000));
        assert_eq!(epoch_ms(&json!("1795651200123456789")), Some(1795651200123));
        assert_eq!(epoch_ms(&json!(null)), None);
    }

    #[actix_rt::test]
    async fn a_page_is_a_range_from_the_floor_in_timestamp_then_tiebreaker_order() {
        let cfg = IngestConfig::default();
        let c = SearchClient::new(&cfg).expect("client");
        let from = Span {
            from_ms: Some(1000),
            ..Span::default()
        };
        let body = c.page_body(&from, Some(&[json!(1500), json!("d7")]), None, 50);
        assert_eq!(body["sort"], json!([{"@timestamp": "asc"}, {"_id": "asc"}]));
        assert_eq!(body["query"]["range"]["@timestamp"]["gte"], 1000);
        assert!(body["query"]["range"]["@timestamp"].get("lt").is_none());
        assert_eq!(body["search_after"], json!([1500, "d7"]));
        let late = Span {
            from_ms: Some(1000),
            before_ms: Some(3000),
            exclude: &["a", "b"],
        };
        let body = c.page_body(&late, None, None, 50);
        let range = &body["query"]["bool"]["filter"][0]["range"]["@timestamp"];
        assert_eq!(
            (range["gte"].clone(), range["lt"].clone()),
            (json!(1000), json!(3000))
        );
        assert_eq!(
            body["query"]["bool"]["must_not"][0]["ids"]["values"],
            json!(["a", "b"])
        );
        let pit = Pit::OpenSearch("p1".into());
        let body = c.page_body(&Span::default(), None, Some(&pit), 50);
        assert!(
            body["query"]["exists"].is_object(),
            "no range: every document with a timestamp"
        );
        assert_eq!(body["sort"][1], json!({"_shard_doc": "asc"}));
        assert_eq!(body["pit"]["id"], "p1");
        assert!(body.get("search_after").is_none());
    }
}
