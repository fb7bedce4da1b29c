//! The ZIP reference data the generator draws sessions' ZIPs and time zones from
//! (`loadgen.zip_csv`).

use std::path::Path;

use anyhow::{anyhow, bail, Context};

/// One row of the ZIP reference CSV (`zip,median_income,timezone,city,state`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZipRow {
    /// 5-digit ZIP code.
    pub zip: String,
    /// Median household income, if given.
    pub median_income: Option<f64>,
    /// IANA time zone name, if given.
    pub timezone: Option<String>,
}

/// Reads the ZIP reference CSV. It needs a header with at least `zip`; `median_income` and
/// `timezone` are used when present, other columns are ignored. A row whose ZIP is not five
/// digits is an error naming the file and line.
pub fn load_zips(path: &Path) -> anyhow::Result<Vec<ZipRow>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open ZIP reference file {}", path.display()))?;
    read_zips(file).with_context(|| format!("invalid ZIP reference file {}", path.display()))
}

fn read_zips<R: std::io::Read>(reader: R) -> anyhow::Result<Vec<ZipRow>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(reader);
    let headers = rdr.headers().context("cannot read the header row")?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let zip_col = col("zip").ok_or_else(|| anyhow!("the header has no `zip` column"))?;
    let income_col = col("median_income");
    let tz_col = col("timezone");
    let mut rows = Vec::new();
    for (i, record) in rdr.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("line {line}"))?;
        let zip = record.get(zip_col).unwrap_or("");
        if zip.len() != 5 || !zip.bytes().all(|b| b.is_ascii_digit()) {
            bail!("line {line}: `zip` must be five digits, got {zip:?}");
        }
        let median_income = income_col
            .and_then(|c| record.get(c))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        let timezone = tz_col
            .and_then(|c| record.get(c))
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        rows.push(ZipRow {
            zip: zip.to_string(),
            median_income,
            timezone,
        });
    }
    Ok(rows)
}

/// A small ZIP reference file, for the tests of the load generator.
#[cfg(test)]
pub(super) mod fixtures {
    use super::{read_zips, ZipRow};

    pub(crate) const CSV: &str = "zip,median_income,timezone,city,state\n\
        10001,72000,America/New_York,New York,NY\n\
        60601,81000,America/Chicago,Chicago,IL\n\
        80202,76000,America/Denver,Denver,CO\n\
        94103,98000,America/Los_Angeles,San Francisco,CA\n\
        33101,45000,America/New_York,Miami,FL\n\
        98101,91000,America/Los_Angeles,Seattle,WA\n\
        85001,38000,America/Phoenix,Phoenix,AZ\n\
        02108,88000,America/New_York,Boston,MA\n";

    pub(crate) fn zips() -> Vec<ZipRow> {
        read_zips(CSV.as_bytes()).expect("csv")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::zips;
    use super::*;

    #[test]
    fn reads_the_zip_csv_and_rejects_bad_rows() {
        let rows = zips();
        assert_eq!(rows.len(), 8);
        assert_eq!(
            rows[7],
            ZipRow {
                zip: "02108".into(),
                median_income: Some(88_000.0),
                timezone: Some("America/New_York".into())
            }
        );
        let sparse = read_zips("zip,median_income,timezone\n12345,,\n".as_bytes()).expect("sparse");
        assert_eq!(sparse[0].median_income, None);
        assert_eq!(sparse[0].timezone, None);
        let err =
            read_zips("zip,median_income\n12345,1\n1234,2\n".as_bytes()).expect_err("bad zip");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = read_zips("code,income\n12345,1\n".as_bytes()).expect_err("no zip column");
        assert!(err.to_string().contains("`zip`"), "{err}");
        let err = format!(
            "{:#}",
            load_zips(Path::new("/nonexistent/zips.csv")).expect_err("absent")
        );
        assert!(err.contains("/nonexistent/zips.csv"), "{err}");
    }
}
