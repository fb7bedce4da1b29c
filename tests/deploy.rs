//! The container deployment files, checked without a container engine: `docker-compose config`
//! resolves `docker/compose.yaml`, and the configuration every clickpipe container gets from its
//! environment (the image's `ENV` plus the service's `environment`) is accepted by `clickpipe
//! config check`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A YAML file (or `docker-compose config`'s output) as JSON, through python3's yaml module
/// (installed with docker-compose).
fn yaml_to_json(yaml: &[u8]) -> Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with PyYAML, a dependency of docker-compose)");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(yaml).expect("write YAML");
    }
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "YAML does not parse");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn compose_config() -> Value {
    let out = Command::new("docker-compose")
        .args(["-f", "docker/compose.yaml", "config"])
        .current_dir(ROOT)
        .output()
        .expect("docker-compose (scripts/services.sh install compose)");
    assert!(
        out.status.success(),
        "docker-compose config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_to_json(&out.stdout)
}

/// The `ENV` variables of docker/Dockerfile's final stage.
fn image_env() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("docker/Dockerfile")).expect("Dockerfile");
    let last_stage = text.rsplit("\nFROM ").next().expect("a stage");
    let mut env = BTreeMap::new();
    let mut in_env = false;
    for line in last_stage.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            in_env = true;
            parse_env(rest, &mut env);
        } else if in_env {
            parse_env(line, &mut env);
        }
        in_env = in_env && line.ends_with('\\');
    }
    env
}

fn parse_env(part: &str, env: &mut BTreeMap<String, String>) {
    for kv in part.trim_end_matches('\\').split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
}

/// Runs `clickpipe config check` with only `env` (plus PATH/HOME) and returns its output.
fn config_check(env: &BTreeMap<String, String>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickpipe"));
    cmd.args(["config", "check"]).env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env).output().expect("clickpipe config check")
}

#[test]
fn the_compose_stack_resolves_and_every_clickpipe_container_has_a_valid_configuration() {
    let config = compose_config();
    let services = config["services"].as_object().expect("services");
    for name in [
        "elasticsearch",
        "logstash",
        "kafka",
        "redis",
        "model",
        "clickpipe",
        "clickpipe-ingest",
        "clickpipe-sink",
        "s3",
        "adot",
        "jaeger",
    ] {
        assert!(services.contains_key(name), "the stack has {name}");
    }
    let image = image_env();
    assert_eq!(
        image.get("CLICKPIPE__ADMIN__LISTEN").map(String::as_str),
        Some("0.0.0.0:9090")
    );
    let mut checked = 0;
    for (name, service) in services {
        if service["image"] != "clickpipe:local" {
            continue;
        }
        let mut env = image.clone();
        for (k, v) in service["environment"].as_object().into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            env.insert(k.clone(), v);
        }
        let out = config_check(&env);
        assert!(
            out.status.success(),
            "{name}: clickpipe config check refused its environment: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
        if name == "clickpipe" {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("kafka:9092"), "{text}");
            assert!(
                text.contains("http://adot:4318"),
                "traces go to the collector: {text}"
            );
        }
    }
    assert!(checked >= 4, "clickpipe, ingest, model, seed: {checked}");

    // Start order: clickpipe waits for its topics, Redis data and a healthy model.
    let deps = &services["clickpipe"]["depends_on"];
    assert_eq!(
        deps["kafka-setup"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(deps["model"]["condition"], "service_healthy");
}

#[test]
fn a_bad_value_from_the_environment_is_refused_naming_the_key() {
    let mut env = image_env();
    env.insert("CLICKPIPE__KAFKA__BROKERS".into(), "kafka".into());
    let out = config_check(&env);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.brokers"));
}

#[test]
fn the_collector_configurations_are_valid_yaml_with_a_traces_pipeline() {
    for file in [
        "docker/adot-collector.yaml",
        "docker/otel-collector-local.yaml",
    ] {
        let text = std::fs::read(Path::new(ROOT).join(file)).expect(file);
        let v = yaml_to_json(&text);
        let pipeline = &v["service"]["pipelines"]["traces"];
        assert_eq!(pipeline["receivers"][0], "otlp", "{file}");
        assert!(
            pipeline["exporters"]
                .as_array()
                .is_some_and(|e| !e.is_empty()),
            "{file}"
        );
        assert_eq!(
            v["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
            "0.0.0.0:4318"
        );
    }
}

#[test]
fn the_ecs_task_definition_gives_clickpipe_a_valid_configuration() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker/ecs/clickpipe-task.json"))
        .expect("task definition");
    let task: Value = serde_json::from_str(&text).expect("task definition is JSON");
    let containers = task["containerDefinitions"].as_array().expect("containers");
    let app = containers
        .iter()
        .find(|c| c["name"] == "clickpipe")
        .expect("the clickpipe container");
    assert!(
        containers.iter().any(|c| c["name"] == "adot-collector"),
        "an ADOT sidecar"
    );
    let mut env = image_env();
    for e in app["environment"].as_array().into_iter().flatten() {
        env.insert(
            e["name"].as_str().expect("name").to_string(),
            e["value"].as_str().expect("value").to_string(),
        );
    }
    // Secrets arrive as environment variables too; stand-ins of the right shape.
    for s in app["secrets"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().expect("name");
        let value = if name == "CLICKPIPE__REDIS__URL" {
            "rediss://clickpipe:stand-in@master.clicks.abc123.euw1.cache.amazonaws.com:6379/0"
        } else {
            "stand-in"
        };
        env.insert(name.to_string(), value.to_string());
    }
    let out = config_check(&env);
    assert!(
        out.status.success(),
        "clickpipe config check refused the task's environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"security.protocol\" = \"SASL_SSL\""),
        "{text}"
    );
    assert!(!text.contains("stand-in"), "secrets are masked: {text}");
    assert_eq!(app["healthCheck"]["command"][1], "clickpipe");
    assert_eq!(app["portMappings"][0]["containerPort"], 9090);

    // The S3 sink beside it: its own command, a bucket, a valid configuration.
    let sink = containers
        .iter()
        .find(|c| c["name"] == "clickpipe-s3-sink")
        .expect("the sink container");
    assert_eq!(sink["command"], serde_json::json!(["sink", "s3"]));
    assert_eq!(
        sink["essential"], false,
        "a failing sink does not stop the pipeline"
    );
    let mut env = image_env();
    for e in sink["environment"].as_array().into_iter().flatten() {
        env.insert(
            e["name"].as_str().expect("name").to_string(),
            e["value"].as_str().expect("value").to_string(),
        );
    }
    for s in sink["secrets"].as_array().into_iter().flatten() {
        env.insert(
            s["name"].as_str().expect("name").to_string(),
            "stand-in".into(),
        );
    }
    let out = config_check(&env);
    assert!(
        out.status.success(),
        "the sink's environment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bucket = \"clickpipe-predictions"));
    // Its health check probes its own endpoint (s3.listen), not the pipeline's admin API that
    // shares the task's network namespace.
    let probe = sink["healthCheck"]["command"]
        .as_array()
        .expect("the sink's health check");
    let url = probe
        .iter()
        .skip_while(|a| *a != "--url")
        .nth(1)
        .and_then(|u| u.as_str())
        .expect("--url URL");
    let port = url.rsplit(':').next().expect("a port");
    let s3 = text.split("[s3]").nth(1).expect("an [s3] section");
    let listen = s3
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .expect("s3.listen");
    assert!(
        listen.trim_matches('"').ends_with(&format!(":{port}")),
        "{url} vs s3.listen {listen}"
    );
    assert_ne!(port, "9090", "not the admin API's port");
}
