//! Keep-warm prediction against real Docker: a function called on a fixed
//! period longer than its idle timeout. Without prediction every call after
//! the idle timeout starts a new container; with it, after a few calls the
//! model holds the instance (paused between calls, resumed ahead of the next)
//! and every later call is served by the container that already exists.

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
    events: Value,
}

impl Run {
    /// Judged calls served by an instance that had served an earlier call.
    fn warm(&self) -> usize {
        (CALLS - JUDGED..CALLS).filter(|&k| self.calls[..k].iter().any(|(id, _)| *id == self.calls[k].0)).count()
    }
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
    for _ in 0..CALLS {
        tokio::time::sleep_until(next.into()).await;
        next += PERIOD;
        let started = Instant::now();
        let r = c.http.get(&c.function_url("hello", "")).await?;
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
        calls.push((r.header("x-sluice-instance").unwrap_or_default(), started.elapsed()));
    }
    let events: Value = c.http.get(&c.api("/v1/events?function=hello")).await?.json()?;
    c.stop().await?;
    Ok(Run { calls, events })
}

#[tokio::test]
async fn a_periodic_function_is_kept_warm_by_prediction_and_not_without() -> Result<()> {
    let without = run("t-predict-off", "off").await?;
    let with = run("t-predict-on", "sluice").await?;
    let show = |r: &Run| r.calls.iter().map(|(id, t)| format!("{id}:{}ms", t.as_millis())).collect::<Vec<_>>().join(" ");
    eprintln!("without prediction: {}\nwith prediction:    {}", show(&without), show(&with));
    // The control: reactive scaling lets the instance go between calls.
    assert!(without.warm() <= 1, "without prediction the idle timeout stops the instance between calls: {}", show(&without));
    // With prediction the judged calls all reuse the held instance.
    assert_eq!(with.warm(), JUDGED, "with prediction: {}\nevents: {}", show(&with), with.events);
    // And the decisions say why.
    let predicted = with.events.as_array().into_iter().flatten().any(|e| e["reason"]["kind"] == "predicted");
    assert!(predicted, "a decision names the prediction: {}", with.events);
    Ok(())
}
