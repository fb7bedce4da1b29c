//! The Redis client of the lookup stage: one pipelined round trip per batch covers the ZIP hashes
//! the cache does not hold and the session updates of every event (one script call).
//!
//! Each lookup actor keeps one multiplexed connection, taken from the pool once and reused for
//! every batch (`pool.get()` per batch would cost an extra round trip); after an I/O error the
//! connection is dropped and the next batch takes a fresh one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use deadpool_redis::Pool;

use crate::clients::dynamo::ZipTable;
use crate::clients::zip_cache::{CachedZip, ZipCache};
use crate::config::RedisConfig;
use crate::error::ClientError;
use crate::feature_set::materialize::{store_args, StoreWrite, STORE_SCRIPT};
use crate::feature_set::plan::{Declared, Plan};
use crate::feature_set::window::{parse_reply, script_args, WINDOW_SCRIPT};
use crate::features::ZipInfo;
use crate::session::{
    parse_aggregates, parse_snapshot, SessionSnapshot, RESULT_RING, SESSION_SCRIPT,
};

/// What one event needs from Redis.
#[derive(Debug, Clone)]
pub struct LookupItem<'a> {
    /// The event's ZIP, if any.
    pub zip: Option<&'a str>,
    /// The event's session id.
    pub session_id: &'a str,
    /// The event's id (idempotency key of the session update).
    pub event_id: &'a str,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
}

/// What Redis answered for one event.
#[derive(Debug, Clone)]
pub struct LookupAnswer {
    /// ZIP data, when the event has a ZIP Redis knows.
    pub zip: Option<Arc<ZipInfo>>,
    /// The session as this event sees it.
    pub session: SessionSnapshot,
}

/// Creates the Redis pool from config. Connections are opened lazily.
pub fn create_pool(cfg: &RedisConfig) -> Result<Pool, ClientError> {
    let mut pc = deadpool_redis::Config::from_url(cfg.url.clone());
    pc.pool = Some(deadpool_redis::PoolConfig::new(cfg.pool_size));
    pc.create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .map_err(|e| ClientError::permanent(format!("redis pool: {e}")))
}

/// The lookup client. Clones share the connection; meant for one actor (one thread).
#[derive(Clone)]
pub struct LookupClient {
    pool: Pool,
    conn: Rc<RefCell<Option<MultiplexedConnection>>>,
    cache: Arc<ZipCache>,
    zip_prefix: Arc<str>,
    session_prefix: Arc<str>,
    timeout: Duration,
    gap_ms: i64,
    script: Rc<redis::Script>,
    window_script: Rc<redis::Script>,
    store_script: Rc<redis::Script>,
    fallback: Option<Rc<ZipTable>>,
}

impl LookupClient {
    /// A client over `pool`, with the shared ZIP cache.
    pub fn new(pool: Pool, cache: Arc<ZipCache>, cfg: &RedisConfig, session_gap: Duration) -> Self {
        LookupClient {
            pool,
            conn: Rc::new(RefCell::new(None)),
            cache,
            zip_prefix: cfg.zip_prefix.as_str().into(),
            session_prefix: cfg.session_prefix.as_str().into(),
            timeout: cfg.timeout_ms.get(),
            gap_ms: i64::try_from(session_gap.as_millis()).unwrap_or(i64::MAX),
            script: Rc::new(redis::Script::new(SESSION_SCRIPT)),
            window_script: Rc::new(redis::Script::new(WINDOW_SCRIPT)),
            store_script: Rc::new(redis::Script::new(STORE_SCRIPT)),
            fallback: None,
        }
    }

    /// The client with a fallback table for ZIP data (`redis.fallback = "dynamodb"`).
    pub fn with_fallback(mut self, table: Option<ZipTable>) -> Self {
        self.fallback = table.map(Rc::new);
        self
    }

    async fn connection(&self) -> Result<MultiplexedConnection, ClientError> {
        if let Some(c) = self.conn.borrow().as_ref() {
            return Ok(c.clone());
        }
        let pooled = tokio::time::timeout(self.timeout, self.pool.get())
            .await
            .map_err(|_| ClientError::transient("redis: timed out connecting"))?
            .map_err(|e| ClientError::transient(format!("redis: cannot connect: {e}")))?;
        let conn = deadpool_redis::Connection::take(pooled);
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// Checks that Redis answers (`PING`).
    pub async fn ping(&self) -> Result<(), ClientError> {
        let mut conn = self.connection().await?;
        let res: Result<String, _> =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| ClientError::transient("redis: PING timed out"))?;
        res.map(|_| ()).map_err(|e| self.classify(e))
    }

    /// Looks up ZIP data and applies the session updates of `items`, in one round trip.
    /// Answers come back in the order of `items`.
    pub async fn lookup(&self, items: &[LookupItem<'_>]) -> Result<Vec<LookupAnswer>, ClientError> {
        Ok(self.lookup_with(items, None).await?.0)
    }

    /// [`LookupClient::lookup`], and in the same round trip a declared feature set's requests
    /// (`plan`: hash fields and window updates); its answers come back per item.
    pub async fn lookup_with(
        &self,
        items: &[LookupItem<'_>],
        plan: Option<&Plan>,
    ) -> Result<(Vec<LookupAnswer>, Vec<Declared>), ClientError> {
        // ZIPs the cache answers cost nothing; the rest are fetched once each.
        let mut zips: Vec<Option<CachedZip>> = Vec::with_capacity(items.len());
        let mut missing: HashMap<&str, usize> = HashMap::new();
        let mut missing_order: Vec<&str> = Vec::new();
        for item in items {
            match item.zip {
                None => zips.push(Some(None)),
                Some(z) => match self.cache.get(z) {
                    Some(hit) => zips.push(Some(hit)),
                    None => {
                        if !missing.contains_key(z) {
                            missing.insert(z, missing_order.len());
                            missing_order.push(z);
                        }
                        zips.push(None);
                    }
                },
            }
        }

        let mut pipe = redis::pipe();
        for z in &missing_order {
            pipe.cmd("HMGET")
                .arg(format!("{}{z}", self.zip_prefix))
                .arg("median_income")
                .arg("timezone");
        }
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(self.script.get_hash()).arg(items.len());
        for item in items {
            eval.arg(format!("{}{}", self.session_prefix, item.session_id));
        }
        eval.arg(self.gap_ms)
            .arg(self.gap_ms.saturating_mul(2))
            .arg(RESULT_RING);
        let aggs = plan.map_or(&[][..], |p| &p.session_aggs[..]);
        eval.arg(aggs.len());
        for (name, function) in aggs {
            eval.arg(function.name()).arg(name);
        }
        for (i, item) in items.iter().enumerate() {
            eval.arg(item.event_id).arg(item.ts_ms);
            for j in 0..aggs.len() {
                let value = plan
                    .and_then(|p| p.session_values.get(i)?.get(j)?.as_deref())
                    .map_or_else(String::new, |v| format!("={v}"));
                eval.arg(value);
            }
        }
        pipe.add_command(eval);
        let plan = plan.filter(|p| !p.is_empty());
        if let Some(plan) = plan {
            for (key, fields) in &plan.hashes {
                pipe.cmd("HMGET").arg(key).arg(fields);
            }
            if !plan.windows.is_empty() {
                let (keys, argv) = script_args(&plan.windows);
                pipe.cmd("EVALSHA")
                    .arg(self.window_script.get_hash())
                    .arg(keys.len())
                    .arg(keys)
                    .arg(argv);
            }
        }
        let extra = plan.map_or(0, |p| p.hashes.len() + usize::from(!p.windows.is_empty()));

        let values = match self.query(&pipe).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted or was flushed: load the script and try once more.
                let mut conn = self.connection().await?;
                let mut load = redis::pipe();
                load.cmd("SCRIPT").arg("LOAD").arg(SESSION_SCRIPT);
                load.cmd("SCRIPT").arg("LOAD").arg(WINDOW_SCRIPT);
                let loaded: Result<Vec<String>, _> =
                    tokio::time::timeout(self.timeout, load.query_async(&mut conn))
                        .await
                        .map_err(|_| ClientError::transient("redis: SCRIPT LOAD timed out"))?;
                loaded.map_err(|e| self.classify(e))?;
                self.query(&pipe).await.map_err(|e| self.classify(e))?
            }
            Err(e) => return Err(self.classify(e)),
            Ok(v) => v,
        };
        if values.len() != missing_order.len() + 1 + extra {
            return Err(ClientError::transient(format!(
                "redis: expected {} replies, got {}",
                missing_order.len() + 1 + extra,
                values.len()
            )));
        }
        let mut fetched: Vec<CachedZip> = values[..missing_order.len()]
            .iter()
            .map(parse_zip)
            .collect();
        // ZIPs Redis does not have: from the fallback table, written back to Redis. When the
        // table cannot answer, those misses are not cached (the next batch asks again).
        let mut unsure = false;
        if self.fallback.is_some() {
            let misses: Vec<&str> = missing_order
                .iter()
                .zip(&fetched)
                .filter(|(_, v)| v.is_none())
                .map(|(z, _)| *z)
                .collect();
            match self.fallback_zips(&misses).await {
                Ok(found) => {
                    for (z, slot) in missing_order.iter().zip(fetched.iter_mut()) {
                        if let Some(info) = found.get(*z).filter(|_| slot.is_none()) {
                            *slot = Some(info.clone());
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, zips = misses.len(), "dynamodb fallback failed; those ZIPs count as unknown for this batch");
                    unsure = true;
                }
            }
        }
        for (z, v) in missing_order.iter().zip(&fetched) {
            if !(unsure && v.is_none()) {
                self.cache.put((*z).to_string(), v.clone());
            }
        }
        let sessions = match &values[missing_order.len()] {
            Value::Array(a) if a.len() == items.len() => a,
            other => {
                return Err(ClientError::transient(format!(
                    "redis: unexpected session script reply {other:?}"
                )))
            }
        };

        let mut out = Vec::with_capacity(items.len());
        let mut session_aggs = Vec::with_capacity(if aggs.is_empty() { 0 } else { items.len() });
        for ((item, zip), session) in items.iter().zip(zips).zip(sessions) {
            let zip = match zip {
                Some(cached) => cached,
                None => item
                    .zip
                    .and_then(|z| missing.get(z))
                    .and_then(|i| fetched.get(*i).cloned())
                    .flatten(),
            };
            let text = value_str(session).unwrap_or_default();
            let session = parse_snapshot(&text).ok_or_else(|| {
                // The script answers integer strings only; anything else will not change on
                // a retry.
                ClientError::permanent(format!(
                    "redis: bad session reply {}",
                    crate::error::excerpt(&format!("{session:?}"))
                ))
            })?;
            if !aggs.is_empty() {
                session_aggs.push(parse_aggregates(&text, aggs.len()));
            }
            out.push(LookupAnswer { zip, session });
        }
        let declared = match plan {
            None => Vec::new(),
            Some(plan) => {
                let base = missing_order.len() + 1;
                let hashes: Vec<HashMap<String, String>> = plan
                    .hashes
                    .iter()
                    .zip(&values[base..base + plan.hashes.len()])
                    .map(|((_, fields), reply)| parse_fields(fields, reply))
                    .collect();
                let windows: Vec<Option<f64>> = match values.get(base + plan.hashes.len()) {
                    None => Vec::new(),
                    Some(Value::Array(a)) if a.len() == plan.windows.len() => a
                        .iter()
                        .map(|v| value_str(v).and_then(|t| parse_reply(&t)))
                        .collect(),
                    Some(other) => {
                        return Err(ClientError::transient(format!(
                            "redis: unexpected window script reply {}",
                            crate::error::excerpt(&format!("{other:?}"))
                        )))
                    }
                };
                plan.answers(hashes, &windows, &session_aggs)
            }
        };

        Ok((out, declared))
    }

    /// Applies online-store writes (one script call, loaded on first use).
    pub async fn store(&self, writes: &[StoreWrite]) -> Result<(), ClientError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (keys, argv) = store_args(writes);
        let mut invoke = self.store_script.prepare_invoke();
        for k in &keys {
            invoke.key(k);
        }
        for a in &argv {
            invoke.arg(a);
        }
        let mut conn = self.connection().await?;
        let res: Result<i64, _> =
            tokio::time::timeout(self.timeout, invoke.invoke_async(&mut conn))
                .await
                .map_err(|_| {
                    self.conn.borrow_mut().take();
                    ClientError::transient("redis: online store write timed out")
                })?;
        res.map(|_| ()).map_err(|e| self.classify(e))
    }

    /// The ZIP data of `zips` from the fallback table (empty without one), written back to
    /// Redis (best effort: a failed write-back is logged, the answer stands).
    async fn fallback_zips(
        &self,
        zips: &[&str],
    ) -> Result<HashMap<String, Arc<ZipInfo>>, ClientError> {
        let Some(table) = self.fallback.as_ref().filter(|_| !zips.is_empty()) else {
            return Ok(HashMap::new());
        };
        let found = table.get(zips).await?;
        if !found.is_empty() {
            let mut pipe = redis::pipe();
            for (zip, info) in &found {
                let key = format!("{}{zip}", self.zip_prefix);
                if let Some(income) = info.median_income {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("median_income")
                        .arg(income)
                        .ignore();
                }
                if let Some(tz) = info.timezone {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("timezone")
                        .arg(tz.name())
                        .ignore();
                }
            }
            if let Err(e) = self.query(&pipe).await {
                tracing::warn!(error = %e, "writing fallback ZIP data back to redis failed");
            }
        }
        Ok(found.into_iter().map(|(z, i)| (z, Arc::new(i))).collect())
    }

    /// What a batch gets while Redis cannot answer and a fallback is configured: ZIP data from
    /// the cache, else the fallback table (nothing written back); each event's session as if it
    /// were its session's first (the state lives in Redis); no declared-feature answers.
    pub async fn degraded(&self, items: &[LookupItem<'_>]) -> Vec<LookupAnswer> {
        let mut misses: Vec<&str> = items
            .iter()
            .filter_map(|i| i.zip)
            .filter(|z| self.cache.get(z).is_none())
            .collect();
        misses.sort_unstable();
        misses.dedup();
        let found = match self.fallback.as_ref() {
            Some(table) if !misses.is_empty() => table.get(&misses).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "dynamodb fallback failed while redis is down");
                HashMap::new()
            }),
            _ => HashMap::new(),
        };
        let found: HashMap<String, Arc<ZipInfo>> =
            found.into_iter().map(|(z, i)| (z, Arc::new(i))).collect();
        for (z, info) in &found {
            self.cache.put(z.clone(), Some(info.clone()));
        }
        items
            .iter()
            .map(|item| LookupAnswer {
                zip: item.zip.and_then(|z| match self.cache.get(z) {
                    Some(cached) => cached,
                    None => found.get(z).cloned(),
                }),
                session: crate::session::advance(None, item.ts_ms, self.gap_ms).1,
            })
            .collect()
    }

    /// Whether a fallback table is configured.
    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    async fn query(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, redis::RedisError> {
        let mut conn = self
            .connection()
            .await
            .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "connect", e.message)))?;
        match tokio::time::timeout(self.timeout, pipe.query_async(&mut conn)).await {
            Ok(r) => r,
            Err(_) => {
                // A timed-out multiplexed connection may be stuck: start afresh next time.
                self.conn.borrow_mut().take();
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "timed out",
                    format!("no reply within {:?}", self.timeout),
                )))
            }
        }
    }

    fn classify(&self, e: redis::RedisError) -> ClientError {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            self.conn.borrow_mut().take();
        }
        // Every Redis failure seen here is the service's, not the event's: retry with backoff.
        ClientError::transient(format!("redis: {e}"))
    }
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An `HMGET` reply as the fields found.
fn parse_fields(fields: &[String], reply: &Value) -> HashMap<String, String> {
    let Value::Array(values) = reply else {
        return HashMap::new();
    };
    fields
        .iter()
        .zip(values)
        .filter_map(|(f, v)| Some((f.clone(), value_str(v)?)))
        .collect()
}

fn parse_zip(v: &Value) -> CachedZip {
    let Value::Array(fields) = v else { return None };
    let income = fields.first().and_then(value_str);
    let tz = fields.get(1).and_then(value_str);
    if income.is_none() && tz.is_none() {
        return None;
    }
    Some(Arc::new(ZipInfo::from_fields(
        income.as_deref(),
        tz.as_deref(),
    )))
}
