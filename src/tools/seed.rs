//! `clickpipe seed-redis`: loads ZIP reference data (CSV with at least the columns `zip`,
//! `median_income`, `timezone`) into Redis hashes `{redis.zip_prefix}{zip}`, and with
//! `--dynamodb` into the lookup fallback's table (`dynamodb.table`).

use std::path::Path;

use crate::service::config::Config;
use anyhow::{bail, Context};
use clickpipe_actors::features::ZipInfo;

/// One validated CSV row.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipRow {
    /// 5-digit ZIP.
    pub zip: String,
    /// Median household income.
    pub median_income: f64,
    /// IANA time zone name.
    pub timezone: String,
}

/// Reads and validates the CSV; the first bad row stops it with its line number.
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<ZipRow>> {
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("{}: no `{name}` column", path.display()))
    };
    let (zi, ii, ti) = (col("zip")?, col("median_income")?, col("timezone")?);
    let mut rows = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n + 2;
        let rec = rec.with_context(|| format!("{}:{line}", path.display()))?;
        let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
        let (zip, income, tz) = (get(zi), get(ii), get(ti));
        if zip.len() != 5 || !zip.bytes().all(|b| b.is_ascii_digit()) {
            bail!("{}:{line}: zip {zip:?} is not 5 digits", path.display());
        }
        let info = ZipInfo::from_fields(Some(&income), Some(&tz));
        let Some(median_income) = info.median_income else {
            bail!(
                "{}:{line}: median_income {income:?} is not a number",
                path.display()
            );
        };
        if info.timezone.is_none() {
            bail!(
                "{}:{line}: timezone {tz:?} is not an IANA time zone",
                path.display()
            );
        }
        rows.push(ZipRow {
            zip,
            median_income,
            timezone: tz,
        });
    }
    Ok(rows)
}

/// Writes the rows to Redis in pipelined chunks; returns how many were written.
pub async fn seed(config: &Config, rows: &[ZipRow]) -> anyhow::Result<usize> {
    let client = redis::Client::open(config.redis.url.as_str()).context("invalid redis.url")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("cannot connect to Redis (redis.url)")?;
    for chunk in rows.chunks(500) {
        let mut pipe = redis::pipe();
        for r in chunk {
            pipe.hset_multiple(
                format!("{}{}", config.redis.zip_prefix, r.zip),
                &[
                    ("median_income", r.median_income.to_string()),
                    ("timezone", r.timezone.clone()),
                ],
            )
            .ignore();
        }
        let () = pipe
            .query_async(&mut conn)
            .await
            .context("writing to Redis")?;
    }
    Ok(rows.len())
}

/// Without the `aws` feature: refuses (there is no DynamoDB client in this build).
#[cfg(not(feature = "aws"))]
pub async fn seed_dynamodb(_: &Config, _: &[ZipRow]) -> anyhow::Result<usize> {
    bail!(crate::NO_AWS)
}

/// Writes the rows to the DynamoDB table `dynamodb.table`; returns how many were written.
#[cfg(feature = "aws")]
pub async fn seed_dynamodb(config: &Config, rows: &[ZipRow]) -> anyhow::Result<usize> {
    if config.dynamodb.table.trim().is_empty() {
        bail!("invalid config key `dynamodb.table`: is required by seed-redis --dynamodb");
    }
    let table = clickpipe_actors::clients::dynamo::ZipTable::new(
        &config.dynamodb,
        std::time::Duration::from_secs(30),
    );
    let items: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.zip.clone(),
                r.median_income.to_string(),
                r.timezone.clone(),
            )
        })
        .collect();
    table
        .put(&items)
        .await
        .with_context(|| format!("writing to the DynamoDB table {}", config.dynamodb.table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_reference_csv_is_valid() {
        let rows = read_csv(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/zips.csv"
        )))
        .expect("config/zips.csv");
        assert!(rows.len() >= 50);
    }

    #[test]
    fn a_bad_row_is_reported_with_its_line() {
        let dir = std::env::temp_dir().join(format!("clickpipe-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("z.csv");
        std::fs::write(&p, "zip,median_income,timezone\n10001,70000,America/New_York\n10002,lots,America/New_York\n")
            .expect("write");
        let e = read_csv(&p).expect_err("bad income").to_string();
        assert!(e.contains(":3") && e.contains("median_income"), "{e}");
    }
}
