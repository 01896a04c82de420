//! Keep-warm prediction against real Docker: a function called on a fixed
//! period longer than its idle timeout. Without prediction every call after
//! the idle timeout starts a new container; with it, after a few calls the
//! model holds the instance (paused between calls and resumed by the call or
//! ahead of it, or let go and pre-warmed before the next) and no later call
//! waits for a cold start, as the gateway counts them.

use anyhow::Result;
use serde_json::{json, Value};
use sluice_tests::{hello_image, Cluster};
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_secs(6);
const CALLS: usize = 12;
/// The calls judged: the last ones, after the model has seen a few periods.
const JUDGED: usize = 6;

struct Run {
    /// Per call: the instance that served it, and how long it took.
    calls: Vec<(String, Duration)>,
    /// Cold starts the gateway counted during the judged calls.
    judged_cold: u64,
    events: Value,
}

/// Calls `hello` every PERIOD on a node whose prediction is `policy` (1-second bins).
async fn run(name: &str, policy: &str) -> Result<Run> {
    let c = Cluster::start_with(name, |a| {
        a.coordinator.predict_policy = policy.into();
        a.coordinator.predict_bin_secs = 1;
    })
    .await?;
    c.deploy(json!({
        "name": "hello", "image": hello_image(), "port": 8080, "min_instances": 0, "max_instances": 2, "concurrency": 4,
        "idle_timeout_secs": 1, "scaling": {"stable_window_secs": 2, "panic_window_secs": 1}
    }))
    .await?;
    let mut calls = Vec::new();
    let mut next = Instant::now();
    let cold_starts = || async { Ok::<u64, anyhow::Error>(c.function("hello").await?["function"]["cold_starts"].as_u64().unwrap_or(0)) };
    let mut before_judged = 0;
    for k in 0..CALLS {
        if k == CALLS - JUDGED {
            before_judged = cold_starts().await?;
        }
        tokio::time::sleep_until(next.into()).await;
        next += PERIOD;
        let started = Instant::now();
        let r = c.http.get(&c.function_url("hello", "")).await?;
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
        calls.push((r.header("x-sluice-instance").unwrap_or_default(), started.elapsed()));
    }
    let judged_cold = cold_starts().await? - before_judged;
    let events: Value = c.http.get(&c.api("/v1/events?function=hello")).await?.json()?;
    c.stop().await?;
    Ok(Run { calls, judged_cold, events })
}

#[tokio::test]
async fn a_periodic_function_is_kept_warm_by_prediction_and_not_without() -> Result<()> {
    let without = run("t-predict-off", "off").await?;
    let with = run("t-predict-on", "sluice").await?;
    let show = |r: &Run| r.calls.iter().map(|(id, t)| format!("{id}:{}ms", t.as_millis())).collect::<Vec<_>>().join(" ");
    eprintln!("without prediction: {}\nwith prediction:    {}", show(&without), show(&with));
    // The control: reactive scaling lets the instance go between calls.
    assert!(without.judged_cold as usize >= JUDGED - 1, "without prediction the idle timeout stops the instance between calls: {}", show(&without));
    // With prediction none of the judged calls waits for a cold start.
    assert_eq!(with.judged_cold, 0, "with prediction: {}\nevents: {}", show(&with), with.events);
    // And the decisions say why.
    let predicted = with.events.as_array().into_iter().flatten().any(|e| e["reason"]["kind"] == "predicted");
    assert!(predicted, "a decision names the prediction: {}", with.events);
    Ok(())
}
