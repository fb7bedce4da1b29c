//! A blocking HTTP client for the endpoints of the processes under test.

use std::time::Duration;

/// A blocking HTTP call (JSON or NDJSON body): (status, body); status 0 when nothing answered.
pub fn http(method: &str, url: &str, body: Option<String>) -> (u16, String) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let url = url.to_string();
    actix_rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let req = client
            .request(method, &url)
            .insert_header(("content-type", "application/json"));
        let sent = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        };
        match sent {
            Ok(mut resp) => {
                let bytes = resp.body().limit(64 << 20).await.unwrap_or_default();
                (
                    resp.status().as_u16(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                )
            }
            Err(_) => (0, String::new()),
        }
    })
}

/// The value of the Prometheus sample `series` (name and labels exactly as rendered) in `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
