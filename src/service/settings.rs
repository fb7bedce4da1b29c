//! Configuration loading: the compiled-in `config/default.toml`, then an optional TOML file, then
//! `CLICKPIPE__SECTION__KEY` environment variables (e.g. `CLICKPIPE__KAFKA__BROKERS`). Unknown keys
//! and bad values stop start-up with a message naming the key. The standard OpenTelemetry variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`)
//! come last, over the `tracing` section.

use std::path::Path;

use super::config::Config;
use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;

/// The compiled-in defaults.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Loads and validates the configuration.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    load_from(path, Env::prefixed("CLICKPIPE__").split("__"))
}

/// Loads with an explicit environment provider (tests pass their own).
pub fn load_from(path: Option<&Path>, env: Env) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = path {
        if !path.is_file() {
            bail!("config file {} does not exist", path.display());
        }
        fig = fig.merge(Toml::file(path));
    }
    let mut config: Config = fig
        .merge(env)
        .extract()
        .map_err(|e| anyhow::anyhow!(describe(e)))
        .context("invalid configuration")?;
    librdkafka_names(&mut config);
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let region = set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION"));
    for slot in [&mut config.model.region, &mut config.kafka.region] {
        if slot.trim().is_empty() {
            *slot = region.clone().unwrap_or_default();
        }
    }
    apply_otel_env(&mut config, |name| {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    })
    .context("invalid configuration")?;
    config.validate().context("invalid configuration")?;
    Ok(config)
}

/// librdkafka property names have dots, which environment variable names cannot carry through
/// the `__` nesting: `CLICKPIPE__KAFKA__CLIENT__SECURITY_PROTOCOL` sets `security.protocol`. No
/// librdkafka property has an underscore, so in `kafka.client`, `kafka.consumer` and
/// `kafka.producer` every `_` is read as `.`.
fn librdkafka_names(config: &mut Config) {
    let k = &mut config.kafka;
    for map in [&mut k.client, &mut k.consumer, &mut k.producer] {
        let renamed: Vec<(String, String)> = map
            .iter()
            .filter(|(key, _)| key.contains('_'))
            .map(|(key, value)| (key.replace('_', "."), value.clone()))
            .collect();
        map.retain(|key, _| !key.contains('_'));
        map.extend(renamed);
    }
}

/// Applies the standard OpenTelemetry variables (`var` returns a set, non-empty one) over the
/// `tracing` section; a bad value is reported with the variable's name.
pub fn apply_otel_env(
    config: &mut Config,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    use clickpipe_actors::config::SAMPLERS;
    let t = &mut config.tracing;
    for (name, slot) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &mut t.otlp_endpoint),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &mut t.otlp_traces_endpoint,
        ),
    ] {
        if let Some(v) = var(name) {
            let v = v.trim();
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                bail!("environment variable {name}: `{v}` must start with http:// or https://");
            }
            *slot = v.to_string();
        }
    }
    if let Some(v) = var("OTEL_SERVICE_NAME") {
        t.service_name = v.trim().to_string();
    }
    if let Some(v) = var("OTEL_TRACES_SAMPLER") {
        let v = v.trim();
        if SAMPLERS.contains(&v) {
            t.sampler = v.to_string();
        } else {
            // Other SDKs in the same task may use a sampler we lack (`xray`); that must not stop
            // every clickpipe command, health probes included. The logger is not up yet.
            eprintln!(
                "clickpipe: warning: OTEL_TRACES_SAMPLER `{v}` is not supported (one of {}); using tracing.sampler `{}`",
                SAMPLERS.join(", "),
                t.sampler
            );
        }
    }
    if let Some(v) = var("OTEL_TRACES_SAMPLER_ARG") {
        t.sampling_ratio = v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .with_context(|| {
                format!("environment variable OTEL_TRACES_SAMPLER_ARG: `{v}` is not a number between 0.0 and 1.0")
            })?;
    }
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if disabled {
        t.otlp_endpoint.clear();
        t.otlp_traces_endpoint.clear();
    }
    Ok(())
}

/// One line per problem, each naming the key (figment's own messages say "for key …").
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("invalid config key `{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    /// The whole error (with its causes) of loading the file at `path`, or none; `what` names the
    /// case when it loads.
    fn load_err(path: Option<&str>, what: &str) -> String {
        format!("{:#}", load(path.map(Path::new)).expect_err(what))
    }

    /// With `var` set to `value` over the environment as it is, loading fails naming `key`; the
    /// environment is cleared after.
    fn env_refused(jail: &mut Jail, (var, value): (&str, &str), key: &str) {
        jail.set_env(var, value);
        let e = load_err(None, key);
        assert!(e.contains(key), "{e}");
        jail.clear_env();
    }

    #[test]
    fn a_word_outside_a_keys_choices_is_refused_naming_the_key() {
        for (var, key) in [
            ("CLICKPIPE__LOG__FORMAT", "log.format"),
            ("CLICKPIPE__INGEST__PIT", "ingest.pit"),
            ("CLICKPIPE__INGEST__START_FROM", "ingest.start_from"),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(var, "sometimes");
                let e = load_err(None, "refused");
                assert!(e.contains(key), "{e}");
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.set_env("CLICKPIPE__LOG__FORMAT", "json");
            jail.set_env("CLICKPIPE__INGEST__PIT", "never");
            jail.set_env("CLICKPIPE__INGEST__START_FROM", "now");
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.log.format, crate::service::config::LogFormat::Json);
            assert_eq!(c.ingest.pit, crate::service::config::PitMode::Never);
            assert_eq!(c.ingest.start_from, crate::service::config::StartFrom::Now);
            Ok(())
        });
    }

    #[test]
    fn defaults_load_and_validate() {
        Jail::expect_with(|_| {
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.input_topic, "clicks");
            assert_eq!(c.admin.listen, "127.0.0.1:9090");
            Ok(())
        });
    }

    #[test]
    fn the_commented_example_config_is_valid() {
        Jail::expect_with(|_| {
            let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));
            load(Some(path)).map_err(|e| format!("{e:#}"))?;
            Ok(())
        });
    }

    #[test]
    fn the_compose_and_aws_example_configs_are_valid() {
        Jail::expect_with(|jail| {
            let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
            let c = load(Some(&dir.join("compose.toml"))).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.kafka.brokers, "kafka:9092");
            // The AWS example takes its region from the environment, as on ECS.
            jail.set_env("AWS_REGION", "eu-west-1");
            let c = load(Some(&dir.join("aws.toml"))).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.kafka.auth, clickpipe_actors::config::KafkaAuth::MskIam);
            assert_eq!(c.model.kind, clickpipe_actors::config::ModelKind::Sagemaker);
            assert_eq!(c.model.region, "eu-west-1");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override_the_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[kafka]\nbrokers = \"h1:9092,h2:9092\"\n[kafka.client]\n\"socket.timeout.ms\" = 5000\n")?;
            jail.set_env("CLICKPIPE__KAFKA__GROUP_ID", "g2");
            jail.set_env("CLICKPIPE__MODEL__MAX_BATCH_SIZE", "7");
            let c = load(Some(Path::new("c.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.kafka.brokers, "h1:9092,h2:9092");
            assert_eq!(c.kafka.group_id, "g2");
            assert_eq!(c.model.max_batch_size, 7);
            assert_eq!(
                c.kafka.client.get("socket.timeout.ms").map(String::as_str),
                Some("5000")
            );
            Ok(())
        });
    }

    #[test]
    fn librdkafka_properties_come_from_the_environment_with_underscores_for_dots() {
        Jail::expect_with(|jail| {
            jail.set_env("CLICKPIPE__KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL");
            jail.set_env("CLICKPIPE__KAFKA__CLIENT__SASL_MECHANISM", "SCRAM-SHA-512");
            jail.set_env("CLICKPIPE__KAFKA__PRODUCER__LINGER_MS", "5");
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(
                c.kafka.client.get("security.protocol").map(String::as_str),
                Some("SASL_SSL")
            );
            assert_eq!(
                c.kafka.client.get("sasl.mechanism").map(String::as_str),
                Some("SCRAM-SHA-512")
            );
            assert_eq!(
                c.kafka.producer.get("linger.ms").map(String::as_str),
                Some("5")
            );
            jail.set_env("CLICKPIPE__KAFKA__CLIENT__GROUP_ID", "sneaky");
            let e = load_err(None, "managed key");
            assert!(e.contains("group.id"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn group_protocol_and_static_membership_reach_the_consumer() {
        Jail::expect_with(|jail| {
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            let classic = clickpipe_actors::kafka::client::pipeline_consumer(&c.kafka);
            assert_eq!(
                classic.get("partition.assignment.strategy"),
                Some("cooperative-sticky")
            );
            assert_eq!(classic.get("session.timeout.ms"), Some("8000"));
            assert_eq!(classic.get("heartbeat.interval.ms"), Some("1000"));
            assert_eq!(classic.get("group.protocol"), None);
            assert_eq!(classic.get("group.instance.id"), None);

            jail.set_env("CLICKPIPE__KAFKA__GROUP_PROTOCOL", "consumer");
            jail.set_env("CLICKPIPE__KAFKA__GROUP_INSTANCE_ID", "clickpipe-0");
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            let kip848 = clickpipe_actors::kafka::client::pipeline_consumer(&c.kafka);
            assert_eq!(kip848.get("group.protocol"), Some("consumer"));
            assert_eq!(kip848.get("group.instance.id"), Some("clickpipe-0"));
            assert_eq!(kip848.get("partition.assignment.strategy"), None);
            assert_eq!(kip848.get("session.timeout.ms"), None);
            assert_eq!(kip848.get("heartbeat.interval.ms"), None);

            // The broker owns the session under KIP-848: a client session timeout is an error
            // naming the key, not a consumer that fails to start.
            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__CONSUMER__SESSION_TIMEOUT_MS", "10000"),
                "session.timeout.ms",
            );

            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__GROUP_PROTOCOL", "eager"),
                "group_protocol",
            );

            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__CONSUMER__GROUP_INSTANCE_ID", "x"),
                "group.instance.id",
            );

            jail.set_env("CLICKPIPE__KAFKA__GROUP_INSTANCE_ID", "i".repeat(250));
            let e = load_err(None, "bad instance id");
            assert!(e.contains("kafka.group_instance_id"), "{e}");
            jail.set_env("CLICKPIPE__KAFKA__GROUP_INSTANCE_ID", "task/1 a");
            let e = load_err(None, "illegal characters");
            assert!(e.contains("kafka.group_instance_id"), "{e}");
            jail.set_env("CLICKPIPE__KAFKA__GROUP_INSTANCE_ID", "clickpipe-a1.b_2");
            load(None).map_err(|e| format!("{e:#}"))?;
            Ok(())
        });
    }

    #[test]
    fn msk_iam_needs_a_region_which_aws_region_gives() {
        Jail::expect_with(|jail| {
            jail.set_env("CLICKPIPE__KAFKA__AUTH", "msk_iam");
            let e = load_err(None, "no region");
            assert!(e.contains("kafka.region"), "{e}");
            jail.set_env("AWS_REGION", "eu-west-1");
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(c.kafka.region, "eu-west-1");
            assert_eq!(c.model.region, "eu-west-1");
            Ok(())
        });
    }

    #[test]
    fn otel_variables_override_the_tracing_section() {
        Jail::expect_with(|jail| {
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.tracing.traces_url(), None, "off by default");
            jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
            jail.set_env("OTEL_SERVICE_NAME", "clicks-eu");
            jail.set_env("OTEL_TRACES_SAMPLER", "traceidratio");
            jail.set_env("OTEL_TRACES_SAMPLER_ARG", "0.25");
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.tracing.traces_url().as_deref(),
                Some("http://collector:4318/v1/traces")
            );
            assert_eq!(c.tracing.service_name, "clicks-eu");
            assert_eq!(c.tracing.sampler, "traceidratio");
            assert_eq!(c.tracing.sampling_ratio, 0.25);
            jail.set_env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://x-ray.example/traces",
            );
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.tracing.traces_url().as_deref(),
                Some("https://x-ray.example/traces"),
                "the per-signal variable is used as is"
            );
            jail.set_env("OTEL_SDK_DISABLED", "true");
            let c = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.tracing.traces_url(),
                None,
                "OTEL_SDK_DISABLED turns export off"
            );
            jail.clear_env();

            for (name, value) in [
                ("OTEL_TRACES_SAMPLER_ARG", "often"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ] {
                env_refused(jail, (name, value), name);
            }
            jail.set_env("OTEL_TRACES_SAMPLER", "xray");
            let c = load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(
                c.tracing.sampler, "parentbased_traceidratio",
                "unsupported: warned, kept"
            );
            jail.clear_env();
            jail.create_file("t.toml", "[tracing]\nsampling_ratio = 2.0\n")?;
            let e = load_err(Some("t.toml"), "ratio");
            assert!(e.contains("tracing.sampling_ratio"), "{e}");
            jail.create_file("t.toml", "[tracing]\nsampler = \"sometimes\"\n")?;
            let e = load_err(Some("t.toml"), "sampler");
            assert!(e.contains("tracing.sampler"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_config_names_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("unknown.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let e = load_err(Some("unknown.toml"), "unknown key");
            assert!(e.contains("brokerz"), "{e}");

            env_refused(
                jail,
                ("CLICKPIPE__PIPELINE__MAX_IN_FLIGHT", "lots"),
                "pipeline.max_in_flight",
            );

            for (var, key) in [
                (
                    "CLICKPIPE__FEATURES__SESSION_GAP_S",
                    "features.session_gap_s",
                ),
                (
                    "CLICKPIPE__FEATURES__MAX_EVENT_AGE_S",
                    "features.max_event_age_s",
                ),
                (
                    "CLICKPIPE__FEATURES__MAX_EVENT_LEAD_S",
                    "features.max_event_lead_s",
                ),
            ] {
                // 2^63 / 1000 s: as milliseconds it would wrap an i64.
                for value in ["0", "9223372036854776"] {
                    env_refused(jail, (var, value), key);
                }
            }

            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__DLQ_TOPIC", "predictions"),
                "kafka.dlq_topic",
            );

            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__BROKERS", "no-port"),
                "kafka.brokers",
            );

            jail.set_env("CLICKPIPE__PIPELINE__DRAIN_TIMEOUT_MS", "300000");
            let e = load_err(None, "drain above the rebalance timeout");
            assert!(
                e.contains("pipeline.drain_timeout_ms") && e.contains("300000"),
                "{e}"
            );
            jail.clear_env();

            // librdkafka refuses a poll interval below the session: say so naming the key.
            jail.set_env("CLICKPIPE__KAFKA__CONSUMER__MAX_POLL_INTERVAL_MS", "5000");
            jail.set_env("CLICKPIPE__PIPELINE__DRAIN_TIMEOUT_MS", "1000");
            let e = load_err(None, "poll interval below session");
            assert!(
                e.contains("max.poll.interval.ms") && e.contains("8000"),
                "{e}"
            );
            jail.clear_env();

            env_refused(jail, ("CLICKPIPE__REDIS__URL", "http://x"), "redis.url");

            for (var, value, key) in [
                (
                    "CLICKPIPE__METRICS__EMF_INTERVAL_MS",
                    "10",
                    "metrics.emf_interval_ms",
                ),
                (
                    "CLICKPIPE__METRICS__EMF_NAMESPACE",
                    " ",
                    "metrics.emf_namespace",
                ),
                (
                    "CLICKPIPE__ADMIN__REPLAY_MAX_COUNT",
                    "0",
                    "admin.replay_max_count",
                ),
                ("CLICKPIPE__ADMIN__TOKEN", " ", "admin.token"),
            ] {
                env_refused(jail, (var, value), key);
            }

            // Exactly-once: a transaction must commit well within its timeout.
            jail.set_env("CLICKPIPE__KAFKA__DELIVERY", "exactly_once");
            jail.set_env("CLICKPIPE__KAFKA__TRANSACTION_INTERVAL_MS", "6000");
            let e = load_err(None, "interval above half the transaction timeout");
            assert!(
                e.contains("kafka.transaction_interval_ms") && e.contains("10000"),
                "{e}"
            );
            jail.set_env("CLICKPIPE__KAFKA__PRODUCER__TRANSACTION_TIMEOUT_MS", "soon");
            let e = load_err(None, "a transaction timeout that is no number");
            assert!(
                e.contains("transaction.timeout.ms") && e.contains("soon"),
                "{e}"
            );
            jail.set_env(
                "CLICKPIPE__KAFKA__PRODUCER__TRANSACTION_TIMEOUT_MS",
                "60000",
            );
            assert!(load(None).is_ok(), "a longer transaction timeout allows it");
            jail.clear_env();
            env_refused(
                jail,
                ("CLICKPIPE__KAFKA__DELIVERY", "twice"),
                "kafka.delivery",
            );

            jail.create_file("managed.toml", "[kafka.client]\n\"group.id\" = \"x\"\n")?;
            let e = load_err(Some("managed.toml"), "managed");
            assert!(e.contains("group.id"), "{e}");

            let e = load_err(Some("missing.toml"), "missing");
            assert!(e.contains("does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn masked_config_hides_secrets() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "CLICKPIPE__REDIS__URL",
                "rediss://user:hunter2@cache:6379/0",
            );
            jail.set_env("CLICKPIPE__ADMIN__TOKEN", "tok-hunter2");
            jail.create_file(
                "s.toml",
                "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n",
            )?;
            let c = load(Some(Path::new("s.toml")))
                .map_err(|e| e.to_string())?
                .masked();
            let text = toml_text(&c);
            assert!(!text.contains("hunter2"), "{text}");
            Ok(())
        });
    }

    fn toml_text(c: &Config) -> String {
        serde_json::to_string(c).unwrap_or_default()
    }
}
