use super::*;
use crate::event::Event;
use crate::features::{compute, ZipInfo};
use crate::session::advance;

/// The keys of today's computed features, in the order they are serialised.
fn todays_feature_names() -> Vec<String> {
    let event = Event {
        event_id: "e".into(),
        user_id: "u".into(),
        session_id: "s".into(),
        timestamp: chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("time"),
        event_type: "page_view".into(),
        page: None,
        referrer: None,
        zip: Some("10001".into()),
        device: None,
        price: None,
    };
    let zip = ZipInfo::from_fields(Some("72000"), Some("America/New_York"));
    let session = advance(None, 0, 1_800_000).1;
    let text = serde_json::to_string(&compute(&event, Some(&zip), &session, 1.0)).expect("json");
    // A flat object of numbers, booleans and null: every key is a `"…":` with no quote inside.
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter_map(|kv| kv.split_once(':'))
        .map(|(k, _)| k.trim_matches('"').to_string())
        .collect()
}

#[test]
fn the_default_set_names_todays_features_in_todays_order() {
    let set = FeatureSet::builtin().expect("config/features/default.toml");
    assert_eq!(set.outputs, todays_feature_names());
    assert_eq!(set.file.version, "builtin-1");
}

#[test]
fn the_example_set_is_valid_and_has_three_windows() {
    let text = include_str!("../../../config/features/example.toml");
    let set = FeatureSet::parse(text).expect("example.toml");
    let windows = set
        .file
        .features
        .iter()
        .filter(|f| matches!(f.kind, spec::Kind::Window { .. }))
        .count();
    assert_eq!(windows, 3);
    assert!(set.outputs.contains(&"user_product_views_10m".to_string()));
    assert!(
        !set.outputs.contains(&"zip_timezone".to_string()),
        "output = false"
    );
}

/// The error of `features` (TOML `[[feature]]` tables) after a version line.
fn error_of(features: &str) -> FeatureSetError {
    FeatureSet::parse(&format!("version = \"t\"\n{features}")).expect_err(features)
}

fn window(name: &str, extra: &str) -> String {
    format!(
        "[[feature]]\nname = \"{name}\"\nkind = \"window\"\nentity = \"user_id\"\n\
         function = \"count\"\n{extra}\n"
    )
}

#[test]
fn problems_name_the_feature_and_the_key() {
    let e = error_of(&window("w", "window = \"2d\""));
    assert_eq!(
        (e.feature.as_deref(), e.key.as_str()),
        (Some("w"), "window")
    );
    assert!(
        e.to_string().contains("feature \"w\": key \"window\""),
        "{e}"
    );
    for too in ["29s", "25h", "10", "ten minutes"] {
        let e = error_of(&window("w", &format!("window = \"{too}\"")));
        assert_eq!(e.key, "window", "{too}: {e}");
    }
    for ok in ["30s", "10m", "24h"] {
        assert!(
            FeatureSet::parse(&format!(
                "version = \"t\"\n{}",
                window("w", &format!("window = \"{ok}\""))
            ))
            .is_ok(),
            "{ok}"
        );
    }

    let e = error_of(&format!(
        "{}{}",
        window("w", "window = \"1m\""),
        window("w", "window = \"2m\"")
    ));
    assert_eq!((e.feature.as_deref(), e.key.as_str()), (Some("w"), "name"));

    let e = error_of(&window("w", "window = \"1m\"\ncolumn = \"price\""));
    assert_eq!(e.key, "column", "count takes no column: {e}");
    let e = error_of(&window(
        "w",
        "window = \"1m\"\nwhere = { colour = \"red\" }",
    ));
    assert_eq!(e.key, "where", "{e}");
    assert!(e.problem.contains("not an event field"), "{e}");

    let e = error_of(
        "[[feature]]\nname = \"l\"\nkind = \"lookup\"\nkey = \"zip:{postcode}\"\n\
         field = \"f\"\ntype = \"float\"\ndefault = 0.0\n",
    );
    assert_eq!((e.feature.as_deref(), e.key.as_str()), (Some("l"), "key"));
    let e = error_of(
        "[[feature]]\nname = \"l\"\nkind = \"lookup\"\nkey = \"zip:{zip}\"\n\
         field = \"f\"\ntype = \"float\"\n",
    );
    assert_eq!(e.key, "default", "a lookup needs a default: {e}");

    let e = error_of(
        "[[feature]]\nname = \"h\"\nkind = \"local_time\"\npart = \"hour\"\n\
         timezone_from = \"nowhere\"\n",
    );
    assert_eq!(e.key, "timezone_from", "{e}");

    let e = error_of(
        "[[feature]]\nname = \"o\"\nkind = \"one_hot\"\ncolumn = \"device\"\nvalues = []\n",
    );
    assert_eq!(e.key, "values", "{e}");

    let e = FeatureSet::parse(
        "version = \"t\"\n[[materialize]]\nentity = \"user_id\"\nttl = \"soon\"\n",
    )
    .expect_err("ttl");
    assert_eq!((e.feature, e.key.as_str()), (None, "materialize.ttl"));
}

#[test]
fn unknown_kinds_parts_functions_and_keys_are_refused() {
    for (body, word, key) in [
        ("kind = \"magic\"", "magic", "kind"),
        (
            "kind = \"local_time\"\npart = \"fortnight\"",
            "fortnight",
            "part",
        ),
        (
            "kind = \"session\"\nfunction = \"median\"",
            "median",
            "function",
        ),
        (
            "kind = \"one_hot\"\ncolumn = \"device\"\nvalues = [\"a\"]\ncolour = 1",
            "colour",
            "colour",
        ),
        ("kind = \"field\"\ntype = \"float\"", "column", "column"),
    ] {
        let e = error_of(&format!("[[feature]]\nname = \"x\"\n{body}\n"));
        assert!(e.problem.contains(word), "{body}: {e}");
        assert_eq!(
            (e.feature.as_deref(), e.key.as_str()),
            (Some("x"), key),
            "{body}: {e}"
        );
    }
    let e =
        FeatureSet::parse("[[feature]]\nname = \"x\"\nkind = \"field\"\n").expect_err("version");
    assert!(e.problem.contains("version"), "{e}");
}

#[test]
fn durations_take_one_unit_of_seconds_minutes_or_hours() {
    use std::time::Duration;
    use validate::parse_duration;
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
    assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
    for bad in ["", "h", "10", "1d", "1h30m", "-5s", "99999999999999999999s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

/// An event for the parity test.
fn sample(i: u64, event_type: &str, device: Option<&str>, zip: Option<&str>) -> Event {
    Event {
        event_id: format!("e{i}"),
        user_id: "u".into(),
        session_id: "s".into(),
        // Spread over hours, weekdays and a DST change.
        timestamp: chrono::DateTime::from_timestamp(1_772_000_000 + (i as i64) * 7_919, 0)
            .expect("time"),
        event_type: event_type.into(),
        page: None,
        referrer: None,
        zip: zip.map(str::to_string),
        device: device.map(str::to_string),
        price: None,
    }
}

#[test]
fn the_default_set_computes_todays_features_byte_for_byte() {
    let set = FeatureSet::builtin_for("zp:", 51_234.5).expect("built-in set");
    // (ZIP, its hash: median income and time zone)
    type Zip<'a> = (Option<&'a str>, Option<(&'a str, &'a str)>);
    let zips: [Zip; 5] = [
        (Some("10001"), Some(("72000", "America/New_York"))),
        (Some("94105"), Some(("nan", "America/Los_Angeles"))),
        (Some("60601"), Some(("88000.25", "Mars/Olympus"))),
        (Some("00000"), None),
        (None, None),
    ];
    let types = ["page_view", "purchase", "search", "refund", ""];
    let devices = [Some("mobile"), Some("tablet"), Some("toaster"), None];
    let mut session = None;
    let mut checked = 0;
    for i in 0..200u64 {
        let (zip, hash) = zips[(i % 5) as usize];
        let event = sample(i, types[(i % 5) as usize], devices[(i % 4) as usize], zip);
        let ts = event.timestamp.timestamp_millis() - if i % 7 == 3 { 90_000 } else { 0 };
        let (state, snap) = crate::session::advance(session.take(), ts, 1_800_000);
        session = Some(state);
        let info = hash.map(|(income, tz)| ZipInfo::from_fields(Some(income), Some(tz)));
        let want =
            serde_json::to_string(&compute(&event, info.as_ref(), &snap, 51_234.5)).expect("json");
        let mut declared = plan::Declared::default();
        if let (Some(z), Some((income, tz))) = (zip, hash) {
            declared.hashes.insert(
                format!("zp:{z}"),
                std::sync::Arc::new(
                    [("median_income", income), ("timezone", tz)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            );
        }
        let known = engine::Known {
            declared: Some(&declared),
            session: Some(&snap),
        };
        let got =
            serde_json::to_string(&set.compute(&event, &known).expect("computable")).expect("json");
        assert_eq!(got, want, "event {i}");
        checked += 1;
    }
    assert_eq!(checked, 200);
}

#[test]
fn the_online_store_refuses_names_it_owns_and_entities_twice() {
    let store = "[[materialize]]\nentity = \"user_id\"\nttl = \"1h\"\n";
    let e = error_of(&format!("{}{store}", window("_w", "window = \"1m\"")));
    assert_eq!((e.feature.as_deref(), e.key.as_str()), (Some("_w"), "name"));
    assert!(FeatureSet::parse(&format!(
        "version = \"t\"\n{}",
        window("_w", "window = \"1m\"")
    ))
    .is_ok());
    let e = error_of(&format!("{store}{store}"));
    assert_eq!(e.key, "materialize.entity", "{e}");
    let e = error_of("[[materialize]]\nentity = \"user_id\"\nttl = \"0s\"\n");
    assert_eq!(e.key, "materialize.ttl", "{e}");
}

#[test]
fn store_writes_carry_the_output_vector_per_entity_the_event_has() {
    use super::engine::{Computed, Value};
    let set = FeatureSet::parse(
        "version = \"v9\"\n[[materialize]]\nentity = \"user_id\"\nttl = \"2m\"\n\
         [[materialize]]\nentity = \"zip\"\nttl = \"1h\"\n",
    )
    .expect("set");
    let e = Event {
        event_id: "e1".into(),
        user_id: "u1".into(),
        session_id: "s".into(),
        timestamp: chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("time"),
        event_type: "page_view".into(),
        page: None,
        referrer: None,
        zip: None,
        device: None,
        price: None,
    };
    let computed = Computed(vec![
        ("a".into(), Value::Float(1.0)),
        ("b".into(), Value::Null),
        ("c".into(), Value::Bool(true)),
    ]);
    let writes = set.store_writes(&e, &computed);
    assert_eq!(writes.len(), 1, "no ZIP, no ZIP entry");
    let w = &writes[0];
    assert_eq!(w.key, format!("features:user_id:{}", e.user_id));
    assert_eq!(w.ttl_ms, 120_000);
    assert_eq!(
        w.fields,
        vec![
            ("a".to_string(), "1.0".to_string()),
            ("c".into(), "true".into()),
            ("_event_id".into(), e.event_id.clone()),
            ("_features_version".into(), "v9".into()),
        ]
    );
}

#[test]
fn a_value_of_the_wrong_type_takes_its_default_or_dead_letters_the_event() {
    use super::engine::{Known, Value};
    use super::plan::Declared;
    use std::collections::HashMap;
    use std::sync::Arc;
    let set = |on_missing: &str| {
        FeatureSet::parse(&format!(
            "version = \"t\"\n\
             [[feature]]\nname = \"income\"\nkind = \"lookup\"\nkey = \"zip:{{zip}}\"\n\
             field = \"median_income\"\ntype = \"float\"\ndefault = -1.0\nknown = \"income_known\"\n\
             [[feature]]\nname = \"page_no\"\nkind = \"field\"\ncolumn = \"page\"\ntype = \"int\"\n\
             default = 0\non_missing = \"{on_missing}\"\n"
        ))
        .expect("set")
    };
    let mut e = sample(1, "page_view", None, Some("10001"));
    e.page = Some("/not-a-number".into());
    let declared = Declared {
        hashes: HashMap::from([(
            "zip:10001".to_string(),
            Arc::new(HashMap::from([(
                "median_income".to_string(),
                "n/a".to_string(),
            )])),
        )]),
        aggregates: HashMap::new(),
    };
    let known = Known {
        declared: Some(&declared),
        session: None,
    };
    let got = set("default").compute(&e, &known).expect("defaults");
    assert_eq!(
        got.0,
        vec![
            ("income".to_string(), Value::Float(-1.0)),
            ("income_known".to_string(), Value::Bool(false)),
            ("page_no".to_string(), Value::Int(0)),
        ]
    );
    let err = set("dead_letter")
        .compute(&e, &known)
        .expect_err("dead letter");
    assert_eq!(err.feature, "page_no");
    assert!(err.reason.contains("page"), "{err}");
}
