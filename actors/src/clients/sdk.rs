//! The AWS SDK's shared configuration: credentials and region from `aws-config`'s default chain
//! (environment, profile files with SSO and `credential_process`, web identity for EKS IRSA,
//! the ECS container endpoint and EKS Pod Identity, IMDSv2), one place for every AWS client.
//! HTTPS is rustls with ring.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Builder;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// A new HTTPS client (rustls, ring): its connections live on the runtime that uses it first,
/// so each thread's clients should have their own.
pub fn https_client() -> SharedHttpClient {
    Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration, with `region` when it is not empty (else the chain's region).
pub async fn sdk_config(region: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    let region = region.trim();
    if !region.is_empty() {
        loader = loader.region(Region::new(region.to_string()));
    }
    loader.load().await
}
