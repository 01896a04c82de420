//! B4, repeated: the same load step (0 to 32 clients on a `sleep` function,
//! 100 ms a request, concurrency 4) every minute, with the function idle and
//! scaled to zero in between, on a node without prediction and on one with it
//! (5-second bins), in one run. For each step: the time from the step to enough
//! ready instances (8), and the requests that waited for a cold start. The first
//! steps teach the model; the last ones show what it learnt. Prints a table and
//! the with/without ratio; writes `bench/results/b4_repeat.json`.

use anyhow::Result;
use serde_json::{json, Value};
use sluice_tests::Cluster;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;
const CONCURRENCY: u32 = 4;
const ENOUGH: usize = 8;
const STEPS: usize = 6;
/// The judged steps: the last ones.
const JUDGED: usize = 3;
const LOAD_FOR: Duration = Duration::from_secs(10);
const PERIOD: Duration = Duration::from_secs(60);

struct Step {
    enough_ms: f64,
    cold: u64,
    served: u64,
    failed: u64,
}

async fn ready(c: &Cluster) -> Result<usize> {
    Ok(c.instances("step").await?.iter().filter(|i| i["state"] == "ready").count())
}

async fn cold_starts(c: &Cluster) -> Result<u64> {
    Ok(c.function("step").await?["function"]["cold_starts"].as_u64().unwrap_or(0))
}

async fn run(policy: &str) -> Result<Vec<Step>> {
    let c = Cluster::start_with(&format!("b4r-{policy}"), |a| {
        a.coordinator.predict_policy = policy.into();
        a.coordinator.predict_bin_secs = 5;
    })
    .await?;
    let result = steps(&c).await;
    c.stop().await?;
    result
}

async fn steps(c: &Cluster) -> Result<Vec<Step>> {
    let spec = json!({"name": "step", "image": sluice_tests::sleep_image(), "min_instances": 0, "max_instances": 20, "concurrency": CONCURRENCY,
        "queue_limit": 1000, "idle_timeout_secs": 2, "scaling": {"stable_window_secs": 4, "panic_window_secs": 2}});
    c.deploy(spec).await?;
    let url = c.function_url("step", "?ms=100");
    let mut out = Vec::new();
    let mut next = Instant::now() + Duration::from_secs(5);
    for k in 0..STEPS {
        tokio::time::sleep_until(next.into()).await;
        next += PERIOD;
        let cold_before = cold_starts(c).await?;
        let running = Arc::new(AtomicBool::new(true));
        let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (http, url, running, served, failed) = (c.http.clone(), url.clone(), running.clone(), served.clone(), failed.clone());
                tokio::spawn(async move {
                    while running.load(Ordering::Relaxed) {
                        match http.get(&url).await {
                            Ok(r) if r.status.is_success() => served.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        let t0 = Instant::now();
        let mut enough_ms = f64::NAN;
        while t0.elapsed() < LOAD_FOR {
            if enough_ms.is_nan() && ready(c).await? >= ENOUGH {
                enough_ms = t0.elapsed().as_secs_f64() * 1000.0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.store(false, Ordering::Relaxed);
        for t in clients {
            let _ = t.await;
        }
        let step = Step { enough_ms, cold: cold_starts(c).await? - cold_before, served: served.load(Ordering::Relaxed), failed: failed.load(Ordering::Relaxed) };
        eprintln!("b4r: step {}: enough ready after {:.0} ms, {} cold-started requests, {} served, {} failed", k + 1, step.enough_ms, step.cold, step.served, step.failed);
        out.push(step);
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let without = run("off").await?;
    let with = run("sluice").await?;
    println!("B4 repeated: 0 -> {CLIENTS} clients for {} s every {} s, {STEPS} steps; the last {JUDGED} judged", LOAD_FOR.as_secs(), PERIOD.as_secs());
    println!("{:<12} {:>28} {:>22} {:>8}", "prediction", "enough ready (ms, per step)", "cold-started requests", "failed");
    let mut summary = serde_json::Map::new();
    for (name, steps) in [("off", &without), ("sluice", &with)] {
        let judged = &steps[STEPS - JUDGED..];
        let enough: Vec<String> = steps.iter().map(|s| format!("{:.0}", s.enough_ms)).collect();
        let cold: Vec<String> = steps.iter().map(|s| s.cold.to_string()).collect();
        println!("{name:<12} {:>28} {:>22} {:>8}", enough.join(" "), cold.join(" "), steps.iter().map(|s| s.failed).sum::<u64>());
        summary.insert(
            name.into(),
            json!({
                "enough_ready_ms": steps.iter().map(|s| s.enough_ms).collect::<Vec<_>>(),
                "cold_started_requests": steps.iter().map(|s| s.cold).collect::<Vec<_>>(),
                "served": steps.iter().map(|s| s.served).collect::<Vec<_>>(),
                "failed": steps.iter().map(|s| s.failed).sum::<u64>(),
                "judged_median_enough_ms": median(judged.iter().map(|s| s.enough_ms).collect()),
                "judged_cold_started_requests": judged.iter().map(|s| s.cold).sum::<u64>(),
            }),
        );
    }
    let (off, on) = (&summary["off"], &summary["sluice"]);
    println!(
        "judged steps: enough ready {:.0} ms with prediction against {:.0} ms without ({:.2}x); cold-started requests {} against {}",
        on["judged_median_enough_ms"].as_f64().unwrap_or(f64::NAN),
        off["judged_median_enough_ms"].as_f64().unwrap_or(f64::NAN),
        on["judged_median_enough_ms"].as_f64().unwrap_or(f64::NAN) / off["judged_median_enough_ms"].as_f64().unwrap_or(f64::NAN),
        on["judged_cold_started_requests"],
        off["judged_cold_started_requests"]
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("b4_repeat.json"), serde_json::to_string_pretty(&Value::Object(summary))?)?;
    Ok(())
}
