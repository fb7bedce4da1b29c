//! Dead letters are always written, so every offset can be committed: reasons and headers are
//! bounded, and a letter the dead-letter topic refuses whole (and truncated) is written minimal.
//! On the real broker, with topic-level size limits.

mod common;

use common::*;
use rdkafka::message::{Message, OwnedMessage};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Produces the `poison` records and a valid event after them (key "k"); returns the
/// `dead_letters` expected on the dead-letter topic and the output (the valid event's) once
/// they arrived or `WAIT` passed.
fn poison_then_valid(
    names: &Names,
    mut poison: Vec<(String, Vec<u8>)>,
    dead_letters: usize,
) -> (Vec<OwnedMessage>, Vec<OwnedMessage>) {
    poison.push((
        "k".into(),
        event("ok", "s", "2026-06-01T10:00:05Z", "page_view", None),
    ));
    produce(&names.input, &poison);
    let dead = consume(&names.dlq, dead_letters, WAIT);
    let out = consume(&names.output, 1, WAIT);
    (dead, out)
}

#[test]
fn a_900_kb_field_gets_a_short_reason_and_its_offset_is_committed() {
    let names = Names::new("huge-field", 1);
    let model = ModelServer::start(0);
    let running = run_pipeline(config(&names, &model.url));
    let zip = "9".repeat(900_000);
    let poison = format!(
        r#"{{"event_id":"p","user_id":"u","session_id":"s","timestamp":"2026-06-01T10:00:00Z","event_type":"x","zip":"{zip}"}}"#
    );
    let (dead, out) = poison_then_valid(&names, vec![("k".into(), poison.clone().into_bytes())], 1);
    running.stop();

    assert_eq!((dead.len(), out.len()), (1, 1));
    let reason = header(&dead[0], "clickpipe.error.message").unwrap_or_default();
    assert!(
        reason.contains("5-digit") && reason.len() < 300,
        "{} bytes",
        reason.len()
    );
    assert_eq!(
        dead[0].payload().map(<[u8]>::len),
        Some(poison.len()),
        "written whole"
    );
    assert_eq!(
        committed_offsets(&brokers(), &names.group, &names.input),
        vec![Some(2)]
    );
}

#[test]
fn a_letter_refused_whole_and_truncated_is_written_minimal_and_its_offset_committed() {
    let names = Names::without_topics("minimal-letter");
    create_topics(&[(&names.input, 1), (&names.output, 1)]);
    // Below the 64 KiB truncated form: only the minimal letter fits.
    create_topic_with(&names.dlq, 1, &[("max.message.bytes", "4096")]);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.kafka.max_payload_bytes = 1000;
    let running = run_pipeline(cfg);
    let big = format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(200_000));
    let mid = format!(r#"{{"event_id":"mid","pad":"{}"}}"#, "y".repeat(20_000));
    let poison = vec![
        ("k".repeat(10_000), big.clone().into_bytes()),
        ("k".into(), mid.clone().into_bytes()),
    ];
    let (dead, out) = poison_then_valid(&names, poison, 2);
    running.stop();

    assert_eq!((dead.len(), out.len()), (2, 1));
    for (m, size) in dead.iter().zip([big.len(), mid.len()]) {
        assert_eq!(m.payload().map_or(0, <[u8]>::len), 0, "no payload");
        assert_eq!(m.key(), None, "no key");
        assert_eq!(
            header(m, "clickpipe.payload.truncated"),
            Some(size.to_string())
        );
        assert_eq!(
            header(m, "clickpipe.error.kind").as_deref(),
            Some("invalid_event")
        );
        assert!(
            header(m, "clickpipe.error.message").is_some_and(|r| r.contains("above the maximum"))
        );
        assert_eq!(
            header(m, "clickpipe.source.topic"),
            Some(names.input.clone())
        );
        assert!(header(m, "clickpipe.source.offset").is_some());
    }
    assert_eq!(
        committed_offsets(&brokers(), &names.group, &names.input),
        vec![Some(3)]
    );
}
