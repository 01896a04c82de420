//! B2: an invocation of a function whose only instance is paused, from request
//! to response through the gateway, against the same function hot, in one run.
//!
//! A single-node Sluice (this process, real Docker) runs `hello` with a rule
//! that pauses its idle instances (`pause_idle`) and windows short enough that
//! the instance is idle a couple of seconds after a request. Each round waits
//! until the instance is paused in the state and its container frozen in
//! Docker, times one invocation (paused), then times `HOT` more at once (hot:
//! the same instance, ready and thawed). Prints p50 and p90 of both, their
//! ratio and whether p50(paused) meets the 60 ms goal, and writes
//! `bench/results/b2.json`.
//!
//! Where a paused invocation's time goes comes from the gateway's and the
//! agent's own histograms, read before and after each paused invocation: one
//! resume per round is one observation each, so the change of a histogram's
//! sum is that round's own figure.
//!
//! | figure | from | what |
//! |---|---|---|
//! | wait | gateway `wait_seconds` | request in, to a slot on the resumed instance |
//! | commit | gateway `resume_commit_seconds` | resume proposed, to applied (part of wait) |
//! | first byte | gateway `thaw_first_byte_seconds` | request sent to the instance, to its response head |
//! | agent thaw | agent `thaw_seconds` | desired set in, to the unpause call done |
//! | unpause | agent `unpause_seconds` | the Docker unpause call alone |

use anyhow::{bail, Context, Result};
use serde_json::json;
use sluice_tests::{Cluster, Method, REGISTRY};
use std::time::{Duration, Instant};

const FUNCTION: &str = "b2";
/// Hot invocations timed after each paused one.
const HOT: usize = 3;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `series` (a full name with labels, e.g. `x_sum{function="b2"}`) in a Prometheus text.
fn value(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

/// The histograms the breakdown reads, at one moment: (sum in seconds, count) each.
#[derive(Debug, Clone, Copy, Default)]
struct Marks([(f64, f64); 5]);

const GATEWAY: [&str; 3] = ["sluice_gateway_wait_seconds", "sluice_gateway_resume_commit_seconds", "sluice_gateway_thaw_first_byte_seconds"];
const AGENT: [&str; 2] = ["sluice_agent_thaw_seconds", "sluice_agent_unpause_seconds"];
const NAMES: [&str; 5] = ["wait", "commit", "first_byte", "agent_thaw", "unpause"];

async fn marks(c: &Cluster) -> Result<Marks> {
    let gateway = c.http.get(&format!("{}/metrics", c.node.gateway_url())).await?.text();
    let agent = c.http.get(&c.node.agent_metrics_url()).await?.text();
    let mut m = Marks::default();
    for (i, name) in GATEWAY.iter().enumerate() {
        let labels = format!("{{function=\"{FUNCTION}\"}}");
        m.0[i] = (value(&gateway, &format!("{name}_sum{labels}")), value(&gateway, &format!("{name}_count{labels}")));
    }
    for (i, name) in AGENT.iter().enumerate() {
        m.0[GATEWAY.len() + i] = (value(&agent, &format!("{name}_sum{{}}")), value(&agent, &format!("{name}_count{{}}")));
    }
    Ok(m)
}

/// Each figure's milliseconds between two marks, if exactly one observation came in between.
fn between(before: &Marks, after: &Marks) -> [f64; 5] {
    std::array::from_fn(|i| {
        let ((s0, n0), (s1, n1)) = (before.0[i], after.0[i]);
        if n1 - n0 == 1.0 {
            (s1 - s0) * 1e3
        } else {
            f64::NAN
        }
    })
}

/// One invocation, timed from request to the end of the response; checks the answer.
async fn invoke(c: &Cluster, body: &str) -> Result<(f64, String)> {
    let started = Instant::now();
    let r = c.http.send(Method::POST, &c.function_url(FUNCTION, "/"), body.to_string(), &[]).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if r.status.as_u16() != 200 || r.text() != format!("hello, {body}") {
        bail!("invocation failed: {} {}", r.status, r.text());
    }
    Ok((ms, r.header("x-sluice-instance").unwrap_or_default()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
    let image = format!("{REGISTRY}/sluice/hello:latest");
    let c = Cluster::start("bench-b2").await?;
    let scaling = json!({"stable_window_secs": 2, "panic_window_secs": 1});
    c.deploy(json!({"name": FUNCTION, "image": image, "min_instances": 0, "max_instances": 1, "concurrency": 4, "idle_timeout_secs": 1, "scaling": scaling})).await?;
    let rules = json!({"rules": [{"name": "b2-keep-warm", "scope": format!("function:{FUNCTION}"), "rule": "when max >= 0 then pause_idle"}]});
    let r = c.http.json(Method::PUT, &c.api("/v1/rules"), &rules).await?;
    if !r.status.is_success() {
        bail!("rules refused: {} {}", r.status, r.text());
    }
    // The cold start, not counted; and a first resume, to warm the code paths.
    let (_, served_by) = invoke(&c, "cold").await?;
    let id: u64 = served_by.trim_start_matches('i').parse().context("instance header")?;
    c.wait_paused(&c.node_id, FUNCTION, id, Duration::from_secs(60)).await?;
    invoke(&c, "warm-up").await?;

    let (mut paused, mut hot, mut parts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        c.wait_paused(&c.node_id, FUNCTION, id, Duration::from_secs(60)).await?;
        let before = marks(&c).await?;
        let (ms, by) = invoke(&c, &format!("paused {round}")).await?;
        if by != served_by {
            bail!("round {round}: served by {by}, not by the paused instance {served_by}");
        }
        paused.push(ms);
        for i in 0..HOT {
            hot.push(invoke(&c, &format!("hot {round}.{i}")).await?.0);
        }
        // The instance can answer before the runtime's unpause call returns (the
        // kernel thaws it during the call): give the agent's figures a moment.
        let mut after = marks(&c).await?;
        let waited = Instant::now();
        while after.0[GATEWAY.len()].1 == before.0[GATEWAY.len()].1 && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            after = marks(&c).await?;
        }
        let part = between(&before, &after);
        eprintln!(
            "b2: round {round}/{rounds}: paused {ms:.1} ms (wait {:.1}, commit {:.1}, first byte {:.1}; agent thaw {:.1}, unpause {:.1}), hot {:.1} ms",
            part[0],
            part[1],
            part[2],
            part[3],
            part[4],
            hot[hot.len() - HOT..].iter().sum::<f64>() / HOT as f64
        );
        parts.push(part);
    }

    let (paused_p50, paused_p90) = (percentile(&paused, 0.5), percentile(&paused, 0.9));
    let (hot_p50, hot_p90) = (percentile(&hot, 0.5), percentile(&hot, 0.9));
    let ratio = paused_p50 / hot_p50;
    let met = paused_p50 <= 60.0;
    let part_p50: Vec<f64> = (0..NAMES.len()).map(|i| percentile(&parts.iter().map(|p| p[i]).collect::<Vec<_>>(), 0.5)).collect();
    let part_p90: Vec<f64> = (0..NAMES.len()).map(|i| percentile(&parts.iter().map(|p| p[i]).collect::<Vec<_>>(), 0.9)).collect();
    println!("B2 paused invocation: p50 {paused_p50:.1} ms, p90 {paused_p90:.1} ms ({rounds} rounds)");
    println!("B2 hot invocation:    p50 {hot_p50:.1} ms, p90 {hot_p90:.1} ms ({} calls)", hot.len());
    println!("B2 ratio paused/hot p50: {ratio:.2}");
    println!("B2 goal p50(paused) <= 60 ms: {}", if met { "met" } else { "NOT met" });
    println!(
        "B2 paused breakdown, p50 (p90) ms: request to slot {:.1} ({:.1}), of which resume commit {:.1} ({:.1}); sent to first byte {:.1} ({:.1}); agent desired set to unpaused {:.1} ({:.1}), of which the unpause call {:.1} ({:.1})",
        part_p50[0], part_p90[0], part_p50[1], part_p90[1], part_p50[2], part_p90[2], part_p50[3], part_p90[3], part_p50[4], part_p90[4]
    );
    let breakdown: serde_json::Map<String, serde_json::Value> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), json!({"p50": part_p50[i], "p90": part_p90[i], "samples": parts.iter().map(|p| p[i]).collect::<Vec<_>>()})))
        .collect();
    let out = json!({
        "bench": "B2", "rounds": rounds,
        "paused_ms": {"p50": paused_p50, "p90": paused_p90, "samples": paused},
        "hot_ms": {"p50": hot_p50, "p90": hot_p90, "samples": hot},
        "ratio_p50": ratio,
        "goal_p50_ms": 60.0, "goal_met": met,
        "paused_breakdown_ms": breakdown,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("b2.json"), serde_json::to_string_pretty(&out)?)?;
    c.stop().await
}
