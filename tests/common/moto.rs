//! A moto server (S3 and DynamoDB on loopback, `scripts/services.sh install moto`) per test, and
//! Python from the same virtualenv (boto3, duckdb) to read back what clickpipe wrote.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::*;

/// The moto virtualenv.
pub fn moto_venv() -> PathBuf {
    let tools = std::env::var_os("CLICKPIPE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clickpipe")))
        .expect("HOME or CLICKPIPE_TOOLS");
    let venv = tools.join("moto");
    assert!(
        venv.join("bin/moto_server").exists(),
        "{} has no moto_server: run scripts/services.sh install moto",
        venv.display()
    );
    venv
}

/// A moto server on a free port, killed when dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
}

/// The environment an AWS client needs to reach moto (any credentials do).
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

impl Moto {
    /// Starts a server and waits until it answers.
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let m = Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        wait_until(
            "moto_server did not start",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        m
    }

    /// Runs `script` with the virtualenv's Python, `MOTO_URL` and the AWS variables set, and
    /// `args`; returns its standard output (the test fails on a non-zero exit).
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(moto_venv().join("bin/python"));
        cmd.arg("-c")
            .arg(script)
            .args(args)
            .env("MOTO_URL", &self.url);
        for (k, v) in moto_env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        self.python(
            "import boto3, os, sys\n\
             boto3.client('s3', endpoint_url=os.environ['MOTO_URL']).create_bucket(Bucket=sys.argv[1])",
            &[bucket],
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
