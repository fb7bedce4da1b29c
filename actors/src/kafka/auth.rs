//! Kafka authentication. With `kafka.auth = msk_iam` every client speaks SASL/OAUTHBEARER over
//! TLS, and librdkafka asks the client context ([`AuthContext`], through
//! `ClientContext::generate_oauth_token`, on its own thread, before a token expires) for a token:
//! a presigned `kafka-cluster:Connect` URL for `kafka.{region}.amazonaws.com`, signed with SigV4
//! for 15 minutes and base64url-encoded — what AWS's `aws-msk-iam-sasl-signer` libraries make.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;

use crate::clients::aws::{Credentials, CredentialsProvider};
use crate::config::{KafkaAuth, KafkaConfig};
use crate::error::ClientError;

/// Every Kafka client's context: the MSK IAM token when `kafka.auth = msk_iam`.
#[derive(Clone, Default)]
pub struct AuthContext {
    msk: Option<MskAuth>,
}

/// What an MSK IAM token needs.
#[derive(Clone)]
pub struct MskAuth {
    region: String,
    credentials: Arc<CredentialsProvider>,
}

impl MskAuth {
    /// The MSK IAM signer for `kafka`, or None when `kafka.auth` is not `msk_iam`.
    pub fn for_config(kafka: &KafkaConfig, credentials: Arc<CredentialsProvider>) -> Option<Self> {
        (kafka.auth == KafkaAuth::MskIam).then(|| MskAuth {
            region: kafka.region.clone(),
            credentials,
        })
    }

    /// A fresh token for librdkafka (called on its thread, which may block).
    pub fn oauth_token(&self) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let credentials = self.credentials.get_blocking()?;
        let token = token(&credentials, &self.region, std::time::SystemTime::now())?;
        Ok(OAuthToken {
            token: token.value,
            principal_name: String::new(),
            lifetime_ms: token.expires_ms,
        })
    }
}

impl AuthContext {
    /// A context signing MSK IAM tokens when `msk` is set.
    pub fn new(msk: Option<MskAuth>) -> Self {
        AuthContext { msk }
    }

    /// The context `kafka` asks for, with a credentials cache of its own (for a client that
    /// does not share the pipeline's).
    pub fn for_kafka(kafka: &KafkaConfig) -> Self {
        AuthContext::new(MskAuth::for_config(
            kafka,
            Arc::new(CredentialsProvider::default()),
        ))
    }
}

impl ClientContext for AuthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        match &self.msk {
            Some(msk) => msk.oauth_token(),
            None => Err("OAUTHBEARER asked for, but kafka.auth is not msk_iam".into()),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for AuthContext {}

/// With `kafka.auth = msk_iam`: SASL over TLS with OAUTHBEARER tokens from the client context.
pub(crate) fn apply_auth(kafka: &KafkaConfig, config: &mut ClientConfig) {
    if kafka.auth == KafkaAuth::MskIam {
        config
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "OAUTHBEARER");
    }
}

/// How long a token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A token and when it expires (epoch ms), as librdkafka wants them.
#[derive(Debug, Clone)]
pub struct Token {
    /// The base64url (no padding) presigned URL.
    pub value: String,
    /// Expiry, epoch milliseconds.
    pub expires_ms: i64,
}

/// The token for `region` with `credentials`, signed at `time`.
pub fn token(
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Token, ClientError> {
    let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
    let identity = credentials.identity();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| ClientError::permanent(format!("MSK IAM token: {e}")))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| ClientError::permanent(format!("MSK IAM token: {e}")))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| ClientError::permanent(format!("MSK IAM token: {e}")))?
        .into_parts();
    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&encode(value));
    }
    // Not signed, as the AWS signers do it: tells MSK who is calling.
    signed.push_str(concat!(
        "&User-Agent=clickpipe%2F",
        env!("CARGO_PKG_VERSION")
    ));
    let signed_at = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| ClientError::permanent(format!("MSK IAM token: clock: {e}")))?;
    Ok(Token {
        value: base64url(signed.as_bytes()),
        expires_ms: (signed_at + TOKEN_LIFETIME).as_millis() as i64,
    })
}

/// RFC 3986 percent-encoding of a query value (unreserved characters kept).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// URL-safe base64 without padding.
fn base64url(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url")
    }

    #[test]
    fn base64url_has_no_padding_and_url_safe_letters() {
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(decode(&base64url(b"hello world")), b"hello world");
    }

    #[test]
    fn the_token_is_a_presigned_connect_url_valid_for_fifteen_minutes() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("session/token+1".into()),
            expires: None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let t = token(&creds, "eu-west-1", at).expect("token");
        assert_eq!(t.expires_ms, 1_440_938_160_000 + 900_000);
        let url = String::from_utf8(decode(&t.value)).expect("utf-8");
        assert!(url
            .starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"));
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20150830T123600Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=session%2Ftoken%2B1",
            "&User-Agent=clickpipe%2F",
        ] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        let sig = url
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-Signature="))
            .expect("signature");
        assert_eq!(sig.len(), 64);
    }
}
