//! `sluice top`: functions and nodes with their live figures, redrawn every
//! second (clear screen, cursor home: no terminal library). It reads what
//! `sluice ls` and `sluice nodes ls` read, plus each function's and node's
//! figures over the last 10 s (`/v1/metrics/functions/F`, `/v1/metrics/nodes/N`).

use crate::table;
use crate::Output;
use anyhow::Result;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::Api;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// The window rates and percentiles are read over.
const RANGE: &str = "10s";
const REFRESH: Duration = Duration::from_secs(1);
/// ANSI: clear the screen, cursor to its top left.
const CLEAR: &str = "\x1b[2J\x1b[H";

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
}

/// Functions and nodes, each with its figures under `figures`.
async fn snapshot(api: &Api) -> Result<Value> {
    let mut functions = api.call(Method::GET, "/v1/functions", None).await?;
    for f in functions.as_array_mut().into_iter().flatten() {
        let name = table::cell(&f["spec"]["name"]);
        f["figures"] = api.call(Method::GET, &format!("/v1/metrics/functions/{name}?range={RANGE}"), None).await?["combined"].take();
    }
    let mut nodes = api.call(Method::GET, "/v1/nodes", None).await?;
    for n in nodes.as_array_mut().into_iter().flatten() {
        let name = table::cell(&n["id"]);
        let series = api.call(Method::GET, &format!("/v1/metrics/nodes/{name}?range={RANGE}"), None).await?;
        let last = |metric: &str| series["series"].as_array().into_iter().flatten().find(|s| s["metric"] == metric).map_or(Value::Null, |s| s["last"].clone());
        n["figures"] = json!({"cpu_percent": last("cpu_percent"), "memory_used_percent": last("memory_used_percent")});
    }
    Ok(json!({"functions": functions, "nodes": nodes}))
}

/// A figure with `digits` decimals, or `-` when there is none.
fn figure(v: &Value, digits: usize, unit: &str) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.digits$}{unit}"))
}

/// One frame: the functions table, then the nodes table.
pub fn render(snapshot: &Value) -> String {
    let count = |f: &Value, state: &str| f["instances"][state].as_u64().unwrap_or(0);
    let functions: Vec<Vec<String>> = snapshot["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let x = &f["figures"];
            let p95_ms = x["latency_p95_seconds_max"].as_f64().map(|s| json!(s * 1000.0)).unwrap_or(Value::Null);
            vec![
                table::cell(&f["spec"]["name"]),
                count(f, "ready").to_string(),
                count(f, "paused").to_string(),
                (count(f, "pending") + count(f, "starting")).to_string(),
                figure(&x["requests_per_sec"], 1, ""),
                figure(&p95_ms, 1, "ms"),
                table::cell(&f["cold_starts"]),
                figure(&x["errors_5xx_per_sec"], 1, ""),
            ]
        })
        .collect();
    let nodes: Vec<Vec<String>> = snapshot["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                table::cell(&n["id"]),
                table::cell(&n["state"]),
                figure(&n["figures"]["cpu_percent"], 0, "%"),
                figure(&n["figures"]["memory_used_percent"], 0, "%"),
                table::cell(&n["instances"]),
            ]
        })
        .collect();
    format!(
        "{}\n\n{}\n",
        table::render(&["FUNCTION", "READY", "PAUSED", "STARTING", "REQ/S", "P95", "COLD", "5XX/S"], &functions),
        table::render(&["NODE", "STATE", "CPU", "MEMORY", "INSTANCES"], &nodes)
    )
}

pub async fn run(api: &Api, output: Output, args: TopArgs) -> Result<ExitCode> {
    if output == Output::Json {
        println!("{}", snapshot(api).await?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.once {
        print!("{}", render(&snapshot(api).await?));
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let frame = render(&snapshot(api).await?);
        let mut out = std::io::stdout().lock();
        write!(out, "{CLEAR}{frame}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shows_each_function_and_node_with_its_figures() {
        let snapshot = json!({
            "functions": [
                {"spec": {"name": "hello"}, "instances": {"ready": 2, "starting": 1}, "cold_starts": 3,
                 "figures": {"requests_per_sec": 12.345, "latency_p95_seconds_max": 0.0042, "errors_5xx_per_sec": 0.0}},
                {"spec": {"name": "idle"}, "instances": {}, "cold_starts": 0, "figures": {}}
            ],
            "nodes": [{"id": "local", "state": "ready", "instances": 3, "figures": {"cpu_percent": 37.6, "memory_used_percent": null}}]
        });
        let frame = render(&snapshot);
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines[0], "FUNCTION  READY  PAUSED  STARTING  REQ/S  P95    COLD  5XX/S");
        assert_eq!(lines[1], "hello     2      0       1         12.3   4.2ms  3     0.0");
        assert_eq!(lines[2], "idle      0      0       0         -      -      0     -");
        assert_eq!(lines[4], "NODE   STATE  CPU  MEMORY  INSTANCES");
        assert_eq!(lines[5], "local  ready  38%  -       3");
    }
}
