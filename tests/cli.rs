//! The command line as a user meets it: `config check` prints the effective config with secrets
//! masked, and a bad value stops with exit code 2 and a message naming the key.

use std::process::Command;

fn clickpipe(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.args(args).env_remove("CLICKPIPE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run clickpipe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let (code, stdout, stderr) = clickpipe(
        &["config", "check"],
        &[
            (
                "CLICKPIPE__REDIS__URL",
                "rediss://app:s3cret@cache.example:6379/0",
            ),
            ("CLICKPIPE__KAFKA__GROUP_ID", "from-env"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("group_id = \"from-env\""), "{stdout}");
    assert!(
        stdout.contains("rediss://app:***@cache.example:6379/0"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"));
}

#[test]
fn a_bad_value_stops_start_up_naming_the_key() {
    let (code, _, stderr) = clickpipe(
        &["config", "check"],
        &[("CLICKPIPE__MODEL__URL", "ftp://model")],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("model.url"), "{stderr}");

    let (code, _, stderr) = clickpipe(&["run"], &[("CLICKPIPE__PIPELINE__MAX_BATCH", "0")]);
    assert_eq!(code, 2, "run refuses to start");
    assert!(stderr.contains("pipeline.max_batch"), "{stderr}");

    let (code, _, stderr) = clickpipe(&["config", "check", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
