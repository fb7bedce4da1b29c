//! Redis fixtures: ZIP data for the lookup stage.

use super::*;

pub fn seed_zip(prefix: &str, zip: &str, income: &str, tz: &str) {
    let client = ::redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_connection()
        .unwrap_or_else(|e| panic!("redis at {} (scripts/services.sh start): {e}", redis_url()));
    ::redis::cmd("HSET")
        .arg(format!("{prefix}{zip}"))
        .arg("median_income")
        .arg(income)
        .arg("timezone")
        .arg(tz)
        .query::<()>(&mut conn)
        .expect("HSET");
}
