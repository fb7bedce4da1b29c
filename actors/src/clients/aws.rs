//! AWS request signing (SigV4, through `aws-sigv4`) and credentials, for calling a SageMaker
//! endpoint. Credentials come, in this order, from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the ECS container credentials endpoint
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or `AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`), then the EC2 instance profile (IMDSv2;
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_EC2_METADATA_DISABLED`). Temporary credentials are
//! cached and fetched again five minutes before they expire. One fetch implementation (a minimal
//! blocking HTTP client: the container and instance endpoints are plain HTTP) serves both
//! callers: librdkafka's thread directly, async callers through a blocking task.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::ClientError;

/// A set of AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (never logged).
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// When temporary credentials expire.
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The answer of the ECS and EC2 credential endpoints.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Endpoint {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

impl From<Endpoint> for Credentials {
    fn from(e: Endpoint) -> Self {
        Credentials {
            access_key_id: e.access_key_id,
            secret_access_key: e.secret_access_key,
            session_token: e.token,
            expires: e
                .expiration
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(SystemTime::from),
        }
    }
}

/// How long before expiry cached credentials are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The process's credentials, shared by every caller; fetched on first use and when they near
/// expiry.
#[derive(Default)]
pub struct CredentialsProvider {
    cached: Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .finish_non_exhaustive()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl CredentialsProvider {
    /// Current credentials (from the cache while they are fresh).
    /// A refresh that fails while the cached credentials are still valid keeps using them.
    /// Failures to get credentials are transient: the model counts as unavailable (the
    /// `model.on_unavailable` policy applies) rather than every event being dead-lettered.
    pub async fn get(&self) -> Result<Credentials, ClientError> {
        let cached = match self.fresh() {
            Ok(fresh) => return Ok(fresh),
            Err(cached) => cached,
        };
        // One credential chain (the blocking one), run off the actor's thread.
        let fetched = actix_rt::task::spawn_blocking(fetch_blocking)
            .await
            .unwrap_or_else(|e| Err(ClientError::transient(format!("credentials fetch: {e}"))));
        self.settle(fetched, cached)
    }

    /// [`CredentialsProvider::get`] for a thread that may block (librdkafka's, asking for an MSK
    /// token): the same sources over a minimal blocking HTTP client (the container and instance
    /// endpoints are plain HTTP on link-local addresses).
    pub fn get_blocking(&self) -> Result<Credentials, ClientError> {
        let cached = match self.fresh() {
            Ok(fresh) => return Ok(fresh),
            Err(cached) => cached,
        };
        self.settle(fetch_blocking(), cached)
    }

    /// The cached credentials when fresh; else Err with whatever is cached.
    fn fresh(&self) -> Result<Credentials, Option<Credentials>> {
        let cached = self.cached.lock().clone();
        match cached {
            Some(c)
                if c.expires
                    .is_none_or(|t| t > SystemTime::now() + REFRESH_BEFORE) =>
            {
                Ok(c)
            }
            other => Err(other),
        }
    }

    /// Keeps what a refresh fetched; when it failed, the cached credentials while still valid.
    fn settle(
        &self,
        fetched: Result<Credentials, ClientError>,
        cached: Option<Credentials>,
    ) -> Result<Credentials, ClientError> {
        match fetched {
            Ok(c) => {
                *self.cached.lock() = Some(c.clone());
                Ok(c)
            }
            Err(e) => match cached {
                Some(c) if c.expires.is_some_and(|t| t > SystemTime::now()) => {
                    tracing::warn!(error = %e, "refreshing AWS credentials failed; using the current ones until they expire");
                    Ok(c)
                }
                _ => Err(ClientError::transient(e.message)),
            },
        }
    }
}

impl Credentials {
    /// The signer's view of these credentials.
    pub fn identity(&self) -> Identity {
        aws_credential_types::Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
            self.expires,
            "clickpipe",
        )
        .into()
    }
}

/// One plain-HTTP request: (status, body).
fn http_blocking(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), ClientError> {
    use std::io::{Read as _, Write as _};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::permanent(format!("{url}: only http:// is supported here")))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let failed = |e: std::io::Error| ClientError::transient(format!("{url}: {e}"));
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(failed)?
        .next()
        .ok_or_else(|| ClientError::transient(format!("{url}: no address")))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).map_err(failed)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(failed)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(failed)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(failed)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::transient(format!("{url}: not an HTTP answer")))?;
    // Chunked answers: take the chunks' data.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn fetch_blocking() -> Result<Credentials, ClientError> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            expires: None,
        });
    }
    let ok = |(status, body): (u16, String), what: &str| {
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ClientError::transient(format!("{what}: HTTP {status}")))
        }
    };
    let parse = |body: String, what: &str| {
        serde_json::from_str::<Endpoint>(&body)
            .map(Credentials::from)
            .map_err(|e| ClientError::transient(format!("{what}: {e}")))
    };
    let container = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .map(|uri| format!("http://169.254.170.2{uri}"))
        .or_else(|| env("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
    if let Some(url) = container {
        let token = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(path) => std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_string()),
            None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let headers: Vec<(&str, &str)> = token
            .iter()
            .map(|t| ("Authorization", t.as_str()))
            .collect();
        let body = ok(
            http_blocking("GET", &url, &headers)?,
            "container credentials",
        )?;
        return parse(body, "container credentials");
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(ClientError::transient("no AWS credentials available"));
    }
    let base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| "http://169.254.169.254".to_string());
    let base = base.trim_end_matches('/');
    let token = ok(
        http_blocking(
            "PUT",
            &format!("{base}/latest/api/token"),
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        )?,
        "instance metadata token",
    )?;
    let auth = [("X-aws-ec2-metadata-token", token.trim())];
    let roles = ok(
        http_blocking(
            "GET",
            &format!("{base}/latest/meta-data/iam/security-credentials/"),
            &auth,
        )?,
        "instance profile",
    )?;
    let role = roles.lines().next().unwrap_or_default().trim().to_string();
    if role.is_empty() {
        return Err(ClientError::transient("the instance has no IAM role"));
    }
    let body = ok(
        http_blocking(
            "GET",
            &format!("{base}/latest/meta-data/iam/security-credentials/{role}"),
            &auth,
        )?,
        "instance profile credentials",
    )?;
    parse(body, "instance profile credentials")
}

/// A request to sign: what is sent, besides the `host` header.
#[derive(Debug, Clone, Copy)]
pub struct Unsigned<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Full URL.
    pub url: &'a str,
    /// Headers sent (and signed) besides `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body.
    pub body: &'a [u8],
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token` for temporary
/// credentials) for `request` to `service` in `region` at `time`.
pub fn sign_headers(
    credentials: &Credentials,
    region: &str,
    service: &str,
    request: &Unsigned<'_>,
    time: SystemTime,
) -> Result<Vec<(String, String)>, ClientError> {
    let identity = credentials.identity();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ClientError::permanent(format!("SigV4: {e}")))?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| ClientError::permanent(format!("SigV4: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ClientError::permanent(format!("SigV4: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of AWS's published SigV4 test suite.
    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the suite's request time.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn authorization(url: &str) -> String {
        let request = Unsigned {
            method: "GET",
            url,
            headers: &[],
            body: b"",
        };
        let headers = sign_headers(&example(), "us-east-1", "service", &request, suite_time())
            .expect("signed");
        headers
            .into_iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v)
            .expect("authorization header")
    }

    #[test]
    fn get_vanilla_matches_the_published_test_vector() {
        assert_eq!(
            authorization("https://example.amazonaws.com/"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case_matches_the_published_test_vector() {
        assert!(
            authorization("https://example.amazonaws.com/?Param2=value2&Param1=value1").ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    #[test]
    fn temporary_credentials_add_the_security_token_and_the_date() {
        let mut c = example();
        c.session_token = Some("token-1".into());
        let request = Unsigned {
            method: "POST",
            url: "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/m/invocations",
            headers: &[("content-type", "application/json")],
            body: b"{}",
        };
        let h = sign_headers(&c, "eu-west-1", "sagemaker", &request, suite_time()).expect("signed");
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-security-token"), Some("token-1"));
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        let auth = get("authorization").expect("authorization");
        assert!(
            auth.contains("/20150830/eu-west-1/sagemaker/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("content-type;host;x-amz-date"), "{auth}");
    }
}
