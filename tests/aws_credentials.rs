//! AWS credentials come from `aws-config`'s default chain: web identity (EKS IRSA) through a
//! real STS-compatible server (moto) — the process has no keys, no profile and no instance
//! metadata, so only the chain's web identity provider can produce them — for both callers, the
//! blocking one (librdkafka's MSK token) and the async one (SageMaker). Its own test binary:
//! it sets the process's environment.

#![cfg(feature = "aws")]

mod common;

use clickpipe_actors::clients::aws::CredentialsProvider;
use common::*;

#[test]
fn web_identity_credentials_come_from_sts_for_blocking_and_async_callers() {
    let moto = Moto::start();
    let token = std::env::temp_dir().join(format!("{}.jwt", unique("irsa")));
    // STS does not verify the token here; its shape is a JWT's.
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2xpY2twaXBlIn0.c2ln",
    )
    .expect("token file");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(k);
    }
    let empty = std::env::temp_dir().join(unique("no-aws-config"));
    std::env::set_var("AWS_CONFIG_FILE", &empty);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &empty);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    std::env::set_var(
        "AWS_ROLE_ARN",
        "arn:aws:iam::123456789012:role/clickpipe-task",
    );
    std::env::set_var("AWS_ROLE_SESSION_NAME", "clickpipe-test");
    std::env::set_var("AWS_ENDPOINT_URL_STS", &moto.url);

    let provider = CredentialsProvider::default();
    let blocking = provider
        .get_blocking()
        .expect("credentials from web identity");
    assert!(
        blocking.session_token.is_some(),
        "temporary credentials: {blocking:?}"
    );
    assert!(blocking.expires.is_some(), "with an expiry: {blocking:?}");
    assert!(
        blocking.access_key_id.starts_with("ASIA"),
        "a temporary key from STS: {blocking:?}"
    );

    // The async path (a fresh provider: no cache) gets them the same way.
    let fresh = CredentialsProvider::default();
    let from_async = actix_rt::System::new()
        .block_on(fresh.get())
        .expect("credentials from web identity (async)");
    assert!(from_async.session_token.is_some());

    // Without the token file there is nothing left in the chain: a clear, retryable error.
    std::env::remove_var("AWS_WEB_IDENTITY_TOKEN_FILE");
    let none = CredentialsProvider::default().get_blocking();
    let e = none.expect_err("no source of credentials");
    assert!(e.message.contains("credentials"), "{e:?}");
    let _ = std::fs::remove_file(&token);
}
