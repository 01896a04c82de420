//! B4: reaction to a load step. A `sleep` function (100 ms a request,
//! concurrency 4, max 20) carries 1 client until it settles on one instance,
//! then 32 clients at once. From the moment of the step, measured: the time to
//! enough ready instances to serve everyone without a queue (32 / 4 = 8), the
//! time to what the policy aims at (32 / (0.7 x 4) = 12), the most instances at
//! once (the over-shoot) and the requests queued or refused. The reference in
//! the same run is one cold start (a call to the function at zero instances):
//! the goal is enough instances within 1 s plus one cold start, and never more
//! than the policy's maximum. `B4_PREDICT` names the node's keep-warm policy
//! (default off; a first step has no history to predict from, so this shows
//! that prediction costs the reactive path nothing). Prints the figures and
//! writes `bench/results/b4-<policy>.json`.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use sluice_tests::{eventually, Cluster};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP_CLIENTS: usize = 32;
const CONCURRENCY: u32 = 4;
const MAX: u32 = 20;

fn ready_and_serving(instances: &Value) -> (usize, usize) {
    let list = instances.as_array().cloned().unwrap_or_default();
    let ready = list.iter().filter(|i| i["state"] == "ready").count();
    let serving = list.iter().filter(|i| matches!(i["state"].as_str(), Some("pending" | "starting" | "ready"))).count();
    (ready, serving)
}

#[tokio::main]
async fn main() -> Result<()> {
    let policy = std::env::var("B4_PREDICT").unwrap_or_else(|_| "off".into());
    let c = Cluster::start_with("b4-step", |a| a.coordinator.predict_policy = policy.clone()).await?;
    let result = run(&c, &policy).await;
    c.stop().await?;
    result
}

async fn run(c: &Cluster, policy: &str) -> Result<()> {
    let image = sluice_tests::sleep_image();
    c.deploy(json!({"name": "step", "image": image, "min_instances": 0, "max_instances": MAX, "concurrency": CONCURRENCY, "queue_limit": 1000})).await?;
    let url = c.function_url("step", "?ms=100");
    eventually("the node is ready", Duration::from_secs(30), || async {
        let nodes: Value = c.http.get(&c.api("/v1/nodes")).await?.json()?;
        Ok(nodes.as_array().is_some_and(|n| n.iter().any(|n| n["state"] == "ready")).then_some(()))
    })
    .await?;

    // The reference: one cold start.
    let cold = Instant::now();
    let r = c.http.get(&url).await?;
    if !r.status.is_success() {
        bail!("the cold call failed: {} {}", r.status, r.text());
    }
    let cold_ms = cold.elapsed().as_secs_f64() * 1000.0;

    let step = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(true));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for k in 0..STEP_CLIENTS {
        let (http, url, step, running, served, failed) = (c.http.clone(), url.clone(), step.clone(), running.clone(), served.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if k > 0 && !step.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                match http.get(&url).await {
                    Ok(r) if r.status.is_success() => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // One client until the function sits on one instance.
    eventually("one ready instance under one client", Duration::from_secs(120), || async {
        let (ready, serving) = ready_and_serving(&c.http.get(&c.api("/v1/instances?function=step")).await?.json()?);
        Ok((ready == 1 && serving == 1).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;

    step.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let (mut placed_ms, mut enough_ms, mut target_ms, mut most) = (None, None, None, 0usize);
    let mut timeline = Vec::new();
    while t0.elapsed() < Duration::from_secs(60) {
        let instances = c.http.get(&c.api("/v1/instances?function=step")).await?.json()?;
        let (ready, serving) = ready_and_serving(&instances);
        let at = t0.elapsed().as_secs_f64() * 1000.0;
        most = most.max(serving);
        timeline.push(json!([at.round(), ready, serving]));
        if placed_ms.is_none() && serving >= (STEP_CLIENTS as u32).div_ceil(CONCURRENCY) as usize {
            placed_ms = Some(at);
        }
        if enough_ms.is_none() && ready >= (STEP_CLIENTS as u32).div_ceil(CONCURRENCY) as usize {
            enough_ms = Some(at);
        }
        if target_ms.is_none() && ready >= 12 {
            target_ms = Some(at);
        }
        if target_ms.is_some() && t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let view: Value = c.http.get(&c.api("/v1/functions/step")).await?.json()?;
    let enough = enough_ms.unwrap_or(f64::NAN);
    let goal = 1000.0 + cold_ms;
    println!("B4 load step 1 -> {STEP_CLIENTS} clients (100 ms requests, concurrency {CONCURRENCY}, max {MAX}), prediction {policy}:");
    println!("  reference: one cold start {cold_ms:.0} ms; goal: enough instances within 1 s + one cold start = {goal:.0} ms");
    println!("  8 instances placed:    {:.0} ms after the step (the decision; the rest is starting containers)", placed_ms.unwrap_or(f64::NAN));
    println!("  enough ready (8):      {enough:.0} ms after the step ({:.2} of the goal)", enough / goal);
    println!("  policy target (12):    {:.0} ms", target_ms.unwrap_or(f64::NAN));
    println!("  most instances at once: {most} (policy aims at 12, max {MAX}: over-shoot {})", most.saturating_sub(12));
    println!(
        "  requests served {}, failed {}; queued and cold-started as the gateway counted: {}",
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        view["function"]["cold_starts"]
    );
    let out = json!({
        "cold_start_ms": cold_ms, "goal_ms": goal, "placed_ms": placed_ms, "enough_ready_ms": enough_ms, "target_ready_ms": target_ms,
        "ratio_to_goal": enough / goal, "most_instances": most, "policy_target": 12, "max_instances": MAX,
        "served": served.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed), "timeline_ms_ready_serving": timeline,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("b4-{policy}.json")), serde_json::to_string_pretty(&out)?)?;
    Ok(())
}
