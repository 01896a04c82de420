//! `sluice nodes ls|drain|undrain`: the hosts and their state.

use crate::table;
use crate::Output;
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use sluice_cli::client::Api;
use sluice_common::NodeId;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes: state (ready, suspect, down, draining), capacity, reservations, instances.
    Ls,
    /// Move every instance off a node (new ones start elsewhere first) and place nothing new there.
    Drain {
        /// Node name.
        node: String,
    },
    /// Let a drained node take instances again.
    Undrain {
        /// Node name.
        node: String,
    },
}

pub async fn run(api: &Api, output: Output, command: NodesCommand) -> Result<ExitCode> {
    let (method, node, draining) = match command {
        NodesCommand::Ls => return ls(api, output).await,
        NodesCommand::Drain { node } => (Method::POST, node, true),
        NodesCommand::Undrain { node } => (Method::DELETE, node, false),
    };
    let node = NodeId::new(node).map_err(|e| anyhow::anyhow!("node: {}", e.message))?;
    let reply = api.call(method, &format!("/v1/nodes/{node}/drain"), None).await?;
    match output {
        Output::Json => println!("{reply}"),
        Output::Table if draining => println!("draining {node}: its instances move once their replacements are ready (`sluice events` shows each move)"),
        Output::Table => println!("{node} takes instances again"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(api: &Api, output: Output) -> Result<ExitCode> {
    let nodes = api.call(Method::GET, "/v1/nodes", None).await?;
    if output == Output::Json {
        println!("{nodes}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let labels = n["labels"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")).unwrap_or_default();
            vec![
                n["id"].as_str().unwrap_or("-").to_string(),
                n["state"].as_str().unwrap_or("-").to_string(),
                format!("{}/{}", n["reserved"]["cpu_millis"], n["capacity"]["cpu_millis"]),
                format!("{}/{}", n["reserved"]["memory_mb"], n["capacity"]["memory_mb"]),
                n["instances"].to_string(),
                n["heard_ms_ago"].as_u64().map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                if labels.is_empty() { "-".into() } else { labels },
            ]
        })
        .collect();
    println!("{}", table::render(&["NODE", "STATE", "CPU-MILLIS", "MEMORY-MB", "INSTANCES", "HEARD", "LABELS"], &rows));
    Ok(ExitCode::SUCCESS)
}
