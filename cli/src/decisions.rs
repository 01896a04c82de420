//! `sluice events` and `sluice explain placement`: what the coordinator
//! decided, and how it would place a function now.

use crate::table;
use crate::Output;
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::Value;
use sluice_cli::client::Api;
use sluice_common::{Clock, FunctionName, SystemClock, Timestamp};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only decisions about this function.
    #[arg(long)]
    pub function: Option<String>,
    /// How many of the latest (1-10000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum ExplainCommand {
    /// Each node's filters and scores for one more instance of a function.
    Placement {
        /// Function name.
        function: String,
    },
}

pub async fn events(api: &Api, output: Output, args: EventsArgs) -> Result<ExitCode> {
    anyhow::ensure!((1..=10_000).contains(&args.limit), "--limit {}: use 1 to 10000", args.limit);
    let mut path = format!("/v1/events?limit={}", args.limit);
    if let Some(f) = args.function {
        let f = FunctionName::new(f).map_err(|e| anyhow::anyhow!("--function: {}", e.message))?;
        path.push_str(&format!("&function={f}"));
    }
    let events = api.call(Method::GET, &path, None).await?;
    if output == Output::Json {
        println!("{events}");
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemClock.now();
    let rows: Vec<Vec<String>> = events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let outcome = match e["outcome"].as_str() {
                Some("refused") => format!("refused: {}", table::cell(&e["why"])),
                Some("started") => format!("started i{}", e["id"]),
                Some(o) => o.to_string(),
                None => "-".into(),
            };
            let at = Timestamp(e["at"].as_u64().unwrap_or(0));
            vec![format!("{:.0}s ago", now.since(at).as_secs_f64()), table::cell(&e["action"]), outcome, reason(e)]
        })
        .collect();
    println!("{}", table::render(&["WHEN", "DECISION", "OUTCOME", "WHY"], &rows));
    Ok(ExitCode::SUCCESS)
}

/// The reason's words; a refusal's `why` is the refusal, so read the reason's own text then.
fn reason(e: &Value) -> String {
    let r = &e["reason"];
    match r["kind"].as_str() {
        Some(_) if e["outcome"] != "refused" => table::cell(&e["why"]),
        Some(kind) => kind.replace('_', " "),
        None => "-".into(),
    }
}

pub async fn explain(api: &Api, output: Output, command: ExplainCommand) -> Result<ExitCode> {
    let ExplainCommand::Placement { function } = command;
    let function = FunctionName::new(function).map_err(|e| anyhow::anyhow!("function: {}", e.message))?;
    let reply = api.call(Method::GET, &format!("/v1/explain/placement/{function}"), None).await?;
    if output == Output::Json {
        println!("{reply}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut best: Option<(String, f64)> = None;
    let rows: Vec<Vec<String>> = reply["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let node = table::cell(&n["node"]);
            let failed: Vec<String> = n["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["passed"] == false)
                .map(|f| format!("{}: {}", table::cell(&f["filter"]), table::cell(&f["detail"])))
                .collect();
            let s = &n["scores"];
            if let Some(total) = s["total"].as_f64() {
                if best.as_ref().is_none_or(|(_, b)| total > *b) {
                    best = Some((node.clone(), total));
                }
            }
            let score = |k: &str| s[k].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
            vec![
                node,
                if failed.is_empty() { "pass".into() } else { failed.join("; ") },
                score("fit"),
                score("image"),
                score("load"),
                score("colocation"),
                score("preference"),
                score("total"),
            ]
        })
        .collect();
    println!("{}", table::render(&["NODE", "FILTERS", "FIT", "IMAGE", "LOAD", "COLOCATION", "PREFERENCE", "TOTAL"], &rows));
    match best {
        Some((node, total)) => println!("\none more instance of {function} would go to {node} (score {total:.2})"),
        None => println!("\nno node can take an instance of {function}: see the failed filters above"),
    }
    Ok(ExitCode::SUCCESS)
}
