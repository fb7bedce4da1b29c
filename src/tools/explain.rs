//! `clickpipe features explain`: one event's features against the live Redis, read-only, for
//! debugging a feature set (what the model would get for this event now, and what it was computed
//! from).

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clickpipe_actors::clients::redis::create_pool;
use clickpipe_actors::event::{decode, Limits};
use clickpipe_actors::feature_set::explain::explain;
use clickpipe_actors::feature_set::FeatureSet;

use crate::service::config::Config;

/// The feature set of `config`: `features.set`, else the built-in one.
pub fn feature_set(config: &Config) -> anyhow::Result<FeatureSet> {
    Ok(match config.features.feature_set()? {
        Some(set) => set,
        None => FeatureSet::builtin_for(
            &config.redis.zip_prefix,
            config.features.default_zip_median_income,
        )?,
    })
}

/// Explains `event_json` (`-`: standard input) and prints the result as JSON. Exit 0 when the
/// features compute, 1 when the event would be dead-lettered as `invalid_event`; an event that
/// does not decode, or a Redis that cannot be read, is an error.
pub fn run(config: &Config, event_json: &str) -> anyhow::Result<ExitCode> {
    let set = feature_set(config)?;
    let text = if event_json == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the event from standard input")?;
        s
    } else {
        event_json.to_string()
    };
    // Any event time: explaining a past event is the point.
    let limits = Limits {
        max_bytes: config.kafka.max_payload_bytes,
        max_age_ms: i64::MAX,
        max_lead_ms: i64::MAX,
    };
    let event = decode(text.trim().as_bytes(), &limits, Utc::now())
        .map_err(|reason| anyhow::anyhow!("invalid_event: {reason}"))?;
    let pool = create_pool(&config.redis)?;
    let session_key = format!("{}{}", config.redis.session_prefix, event.session_id);
    let gap_ms =
        i64::try_from(config.features.session_gap_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let timeout = config.redis.timeout_ms.get();
    let explained = actix_rt::System::new().block_on(async {
        let mut conn = tokio::time::timeout(timeout, pool.get())
            .await
            .map_err(|_| anyhow::anyhow!("redis: timed out connecting"))?
            .map_err(|e| anyhow::anyhow!("redis: cannot connect: {e}"))?;
        tokio::time::timeout(
            timeout.saturating_mul(10),
            explain(&set, &event, &mut *conn, &session_key, gap_ms),
        )
        .await
        .map_err(|_| anyhow::anyhow!("redis: timed out reading"))?
        .map_err(anyhow::Error::from)
    })?;
    println!("{}", serde_json::to_string_pretty(&explained)?);
    Ok(match explained.dead_letter {
        None => ExitCode::SUCCESS,
        Some(reason) => {
            eprintln!("clickpipe: the event would be dead-lettered as invalid_event: {reason}");
            ExitCode::FAILURE
        }
    })
}
