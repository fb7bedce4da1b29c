//! The Kafka broker itself goes away mid-stream — a controlled shutdown (SIGTERM) and a crash
//! (SIGKILL), each for 10 s — while input keeps arriving: `clickpipe run` rides both out, loses
//! nothing and repeats at most what was in flight. The broker is the test's own Apache Kafka
//! (the same single-node KRaft broker as the shared one), so it can be stopped and killed.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_broker_stopped_and_then_killed_for_ten_seconds_each_loses_nothing() {
    let mut broker = OwnBroker::start();
    let bootstrap = broker.bootstrap();
    let names = Names::without_topics("brestart");
    broker.create_topics(&[(&names.input, 4), (&names.output, 4), (&names.dlq, 1)]);
    let model = ModelServer::start(0);
    let config = config_file(&names, &model.url, &bootstrap);
    let max_in_flight = 200usize;
    let env = [
        ("CLICKPIPE__PIPELINE__MAX_IN_FLIGHT", "200"),
        ("CLICKPIPE__PIPELINE__MAX_BATCH", "100"),
    ];
    let mut instance = spawn_with(&config, &env);

    // 500 events/s for 40 s: the input keeps coming through both outages.
    let total = 20_000usize;
    let input = PacedProducer::start(&bootstrap, &names.input, events("b", total, 173), 500);
    let mut outputs = Collector::on(&bootstrap, &names.output);

    let mut outages = 0;
    for how in ["SIGTERM", "SIGKILL"] {
        let target = outputs.messages.len() + 2_000;
        assert!(
            outputs.until(Duration::from_secs(60), |m| m.len() >= target),
            "outputs before the {how} outage ({} so far)",
            outputs.messages.len()
        );
        match how {
            "SIGTERM" => broker.stop(),
            _ => broker.kill(),
        }
        outages += 1;
        eprintln!(
            "broker {how} with {} outputs seen, {} events sent",
            outputs.messages.len(),
            input.sent()
        );
        std::thread::sleep(Duration::from_secs(10));
        assert!(
            instance.try_wait().is_none(),
            "clickpipe run must ride out the broker's absence, not exit"
        );
        broker.restart();
    }

    let produced = input.finish();
    assert_eq!(produced.failed, 0, "every input record was acknowledged");
    assert_eq!(produced.acked, total);
    let tally = outputs.tally("b", total, Duration::from_secs(180));
    let code = instance.terminate();
    let _ = std::fs::remove_file(&config);

    let (missing, repeats) = (&tally.missing, tally.repeats);
    let bound = repeat_bound(outages, max_in_flight);
    eprintln!("broker restarts: {tally} (bound {bound})");
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(repeats <= bound, "{repeats} repeats exceed {bound}");
    assert_eq!(code, Some(0), "clickpipe stopped cleanly after the outages");
}
