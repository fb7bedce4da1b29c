//! AWS request signing (SigV4, through `aws-sigv4`) and credentials, for calling a SageMaker
//! endpoint and signing MSK IAM tokens. Credentials come from `aws-config`'s default chain
//! (environment, profile files with SSO and `credential_process`, web identity for EKS IRSA, the
//! ECS container endpoint and EKS Pod Identity, IMDSv2), run on a thread of its own so that both
//! callers can use it: librdkafka's thread (blocking) and async callers (through a blocking
//! task). Temporary credentials are cached and fetched again five minutes before they expire.
//! A build without the `aws` feature has no chain: credentials come from the environment only
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).

use std::time::{Duration, SystemTime};

#[cfg(feature = "aws")]
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
#[cfg(feature = "aws")]
use aws_smithy_types::error::display::DisplayErrorContext;
use parking_lot::Mutex;

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

/// How long before expiry cached credentials are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The process's credentials, shared by every caller; fetched on first use and when they near
/// expiry.
#[derive(Default)]
pub struct CredentialsProvider {
    cached: Mutex<Option<Credentials>>,
    #[cfg(feature = "aws")]
    chain: std::sync::OnceLock<Result<Chain, String>>,
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .finish_non_exhaustive()
    }
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
        let fetched = self.fetch_async().await;
        self.settle(fetched, cached)
    }

    /// [`CredentialsProvider::get`] for a thread that may block (librdkafka's, asking for an MSK
    /// token): the same chain, waited for on this thread.
    pub fn get_blocking(&self) -> Result<Credentials, ClientError> {
        let cached = match self.fresh() {
            Ok(fresh) => return Ok(fresh),
            Err(cached) => cached,
        };
        let fetched = self.fetch();
        self.settle(fetched, cached)
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

#[cfg(feature = "aws")]
impl CredentialsProvider {
    /// Asks the chain from a blocking task, off the actor's thread.
    async fn fetch_async(&self) -> Result<Credentials, ClientError> {
        let chain = self.chain_handle()?;
        actix_rt::task::spawn_blocking(move || chain.fetch())
            .await
            .unwrap_or_else(|e| Err(ClientError::transient(format!("credentials fetch: {e}"))))
    }

    /// Asks the chain, waiting on this thread.
    fn fetch(&self) -> Result<Credentials, ClientError> {
        self.chain_handle().and_then(|chain| chain.fetch())
    }

    /// The chain's thread, started on first use.
    fn chain_handle(&self) -> Result<Chain, ClientError> {
        match self.chain.get_or_init(Chain::start) {
            Ok(chain) => Ok(chain.clone()),
            Err(e) => Err(ClientError::transient(e.clone())),
        }
    }
}

/// Without the `aws` feature: the environment's credentials only.
#[cfg(not(feature = "aws"))]
impl CredentialsProvider {
    async fn fetch_async(&self) -> Result<Credentials, ClientError> {
        self.fetch()
    }

    fn fetch(&self) -> Result<Credentials, ClientError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
                session_token: var("AWS_SESSION_TOKEN"),
                expires: None,
            }),
            _ => Err(ClientError::transient(
                "AWS credentials: this build (without the `aws` feature) reads only AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, which are not set",
            )),
        }
    }
}

/// A request for credentials: where to send the answer.
#[cfg(feature = "aws")]
type Ask = std::sync::mpsc::Sender<Result<Credentials, ClientError>>;

/// `aws-config`'s default credentials chain, run on a thread of its own with its own runtime (the
/// chain's HTTP clients keep their connections there); callers on any thread ask it over a
/// channel and wait for the answer. Clones ask the same thread.
#[cfg(feature = "aws")]
#[derive(Clone)]
struct Chain {
    asks: tokio::sync::mpsc::Sender<Ask>,
}

/// How long a caller waits for the chain.
#[cfg(feature = "aws")]
const CHAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(feature = "aws")]
impl Chain {
    fn start() -> Result<Chain, String> {
        let (asks, mut rx) = tokio::sync::mpsc::channel::<Ask>(64);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("credentials runtime: {e}"))?;
        std::thread::Builder::new()
            .name("aws-credentials".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let config = crate::clients::sdk::sdk_config("").await;
                    let provider = config.credentials_provider();
                    while let Some(reply) = rx.recv().await {
                        let answer = match &provider {
                            None => Err(ClientError::transient("no AWS credentials provider")),
                            Some(p) => p
                                .provide_credentials()
                                .await
                                .map(|c| Credentials {
                                    access_key_id: c.access_key_id().to_string(),
                                    secret_access_key: c.secret_access_key().to_string(),
                                    session_token: c.session_token().map(str::to_string),
                                    expires: c.expiry(),
                                })
                                .map_err(|e| {
                                    ClientError::transient(format!(
                                        "AWS credentials: {}",
                                        DisplayErrorContext(e)
                                    ))
                                }),
                        };
                        let _ = reply.send(answer);
                    }
                });
            })
            .map_err(|e| format!("credentials thread: {e}"))?;
        Ok(Chain { asks })
    }

    /// Asks the chain and waits for its answer. Safe on any thread, including one that runs an
    /// async runtime (librdkafka may ask for a token from inside a poll): the ask never blocks,
    /// only the wait for the answer does.
    fn fetch(&self) -> Result<Credentials, ClientError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.asks.try_send(tx).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                ClientError::transient("AWS credentials: 64 requests already waiting")
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                ClientError::transient("the AWS credentials thread has stopped")
            }
        })?;
        rx.recv_timeout(CHAIN_TIMEOUT)
            .map_err(|_| ClientError::transient("AWS credentials: no answer within 30 s"))?
    }
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
