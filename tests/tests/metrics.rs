//! The metrics pipeline end to end: a real agent sampling real containers,
//! publishing through a real broker (Kafka: tansu; MQTT: mosquitto, both started
//! by scripts/brokers.sh), into the coordinator's windows, read back through the
//! API. A missing broker fails these tests; it never skips them.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sluice_tests::{eventually, sleep_image, Cluster};
use std::time::Duration;

/// A topic prefix no other run shares, so a broker's old data cannot satisfy a test.
fn fresh_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t{}{}", test, nanos % 1_000_000_000)
}

fn series<'a>(view: &'a Value, metric: &str) -> Option<&'a Value> {
    view["series"].as_array()?.iter().find(|s| s["metric"] == metric)
}

/// Deploys a function, burns a core in its instance and waits until the
/// coordinator's windows show the burn, the host and the instance's events.
async fn burn_shows_in_the_windows(c: &Cluster, name: &str) -> Result<()> {
    c.deploy(json!({"name": name, "image": sleep_image(), "limits": {"cpu_millis": 1000}})).await?;
    let burn = {
        let (http, url) = (c.http.clone(), c.function_url(name, "?ms=15000&busy=1"));
        tokio::spawn(async move { http.get(&url).await })
    };
    let instance = eventually("the burn instance is ready", Duration::from_secs(30), || async {
        let ready = c.instances(name).await?.into_iter().find(|i| i["state"] == "ready");
        Ok(ready.and_then(|i| i["id"].as_u64().map(|n| format!("i{n}"))))
    })
    .await?;

    let cpu = eventually("the instance's CPU shows in its window", Duration::from_secs(30), || async {
        let view = c.http.get(&c.api(&format!("/v1/metrics/instances/{instance}?range=5s"))).await?.json()?;
        let max = series(&view, "cpu_percent").and_then(|s| s["max"].as_f64());
        // An error is kept as "the last error", so a timeout shows what the window held.
        max.filter(|max| *max > 50.0).map(Some).ok_or_else(|| anyhow::anyhow!("window of {instance}: {view}"))
    })
    .await?;
    assert!(cpu <= 150.0, "one busy thread under a one-core limit cannot show {cpu}%");

    let function = c.http.get(&c.api(&format!("/v1/metrics/functions/{name}?range=10s"))).await?.json()?;
    assert!(function["combined"]["cpu_percent_max"].as_f64().unwrap_or(0.0) > 50.0, "{function}");
    assert!(function["instances"][&instance].is_array(), "{function}");

    let node = c.http.get(&c.api(&format!("/v1/metrics/nodes/{}?range=30s", c.node_id))).await?.json()?;
    let memory = series(&node, "memory_used_bytes").with_context(|| format!("no host memory series: {node}"))?;
    assert!(memory["last"].as_f64().unwrap_or(0.0) > 0.0, "{node}");
    assert!(series(&node, "cpu_percent").is_some_and(|s| s["count"].as_u64() > Some(0)), "{node}");

    // The gateway's figures arrive too, per function.
    eventually("the gateway's figures for the function", Duration::from_secs(15), || async {
        let view = c.http.get(&c.api(&format!("/v1/metrics/functions/{name}?range=30s"))).await?.json()?;
        Ok(view["combined"]["in_flight"].as_f64())
    })
    .await?;

    let events: Vec<Value> = serde_json::from_value(c.http.get(&c.api("/v1/metrics/events?limit=100")).await?.json()?)?;
    let of_burn: Vec<&str> = events.iter().filter(|e| e["body"]["function"] == name).filter_map(|e| e["body"]["type"].as_str()).collect();
    assert!(of_burn.contains(&"instance_started") && of_burn.contains(&"instance_ready"), "{of_burn:?}");

    let metrics = c.http.get(&c.api("/metrics")).await?.text();
    assert!(metrics.contains("sluice_ingest_messages_total{kind=\"container\"}"), "{metrics}");
    burn.abort();
    Ok(())
}

#[tokio::test]
async fn through_kafka_a_burning_container_shows_in_the_windows() -> Result<()> {
    let url = format!("kafka://127.0.0.1:9092?prefix={}", fresh_prefix("kafka"));
    let c = Cluster::start_with("t-metrics-kafka", |a| {
        a.coordinator.bus = Some(url);
        a.host.sample_secs = 0.5;
    })
    .await?;
    let result = burn_shows_in_the_windows(&c, "burn-kafka").await;
    c.stop().await?;
    result
}

#[tokio::test]
async fn through_mqtt_a_burning_container_shows_in_the_windows() -> Result<()> {
    let url = format!("mqtt://127.0.0.1:1883?prefix={}", fresh_prefix("mqtt"));
    let c = Cluster::start_with("t-metrics-mqtt", |a| {
        a.coordinator.bus = Some(url);
        a.host.sample_secs = 0.5;
    })
    .await?;
    let result = burn_shows_in_the_windows(&c, "burn-mqtt").await;
    c.stop().await?;
    result
}

#[tokio::test]
async fn bad_metric_queries_get_400_naming_the_field() -> Result<()> {
    let c = Cluster::start("t-metrics-bad").await?;
    for (path, field) in [
        ("/v1/metrics/nodes/x?range=25h", "range"),
        ("/v1/metrics/nodes/x?range=abc", "range"),
        ("/v1/metrics/instances/42", "instance"),
        ("/v1/metrics/functions/Bad_Name", "name"),
        ("/v1/metrics/events?limit=0", "limit"),
    ] {
        let r = c.http.get(&c.api(path)).await?;
        assert_eq!(r.status.as_u16(), 400, "{path}: {}", r.text());
        assert!(r.text().contains(field), "{path}: {}", r.text());
    }
    c.stop().await
}

#[tokio::test]
async fn in_process_by_default_a_burning_container_shows_in_the_windows() -> Result<()> {
    let c = Cluster::start_with("t-metrics-inproc", |a| a.host.sample_secs = 0.5).await?;
    let result = burn_shows_in_the_windows(&c, "burn-inproc").await;
    c.stop().await?;
    result
}
