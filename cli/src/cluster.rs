//! `sluice cluster status|join|leave`: the coordinators' Raft membership.
//!
//! A new coordinator is started with `--join` (empty, waiting), then added here:
//! it joins as a learner, catches up, and is promoted to voter, one change at a
//! time. `leave` removes a member; stop its process afterwards.

use crate::table;
use crate::Output;
use anyhow::{bail, Result};
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::Api;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the leader, the term and every member's role.
    Status,
    /// Add a coordinator started with --join (learner first, then voter once caught up).
    Join {
        /// Its --id.
        id: u64,
        /// Its Raft address as the others reach it (its --advertise-raft), host:port.
        raft_addr: String,
        /// Keep it a non-voting learner (a read replica).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a coordinator from the cluster.
    Leave {
        /// Its --id.
        id: u64,
    },
}

pub async fn run(api: &Api, output: Output, command: ClusterCommand) -> Result<ExitCode> {
    let status = match command {
        ClusterCommand::Status => api.call(Method::GET, "/v1/cluster", None).await?,
        ClusterCommand::Join { id, raft_addr, learner } => {
            if id == 0 {
                bail!("id 0: coordinator ids are whole numbers from 1 up");
            }
            eprintln!("adding coordinator {id} at {raft_addr}{}...", if learner { " as a learner" } else { " (learner until caught up, then voter)" });
            api.call(Method::POST, "/v1/cluster/members", Some(&json!({"id": id, "raft_addr": raft_addr, "learner": learner}))).await?
        }
        ClusterCommand::Leave { id } => api.call(Method::DELETE, &format!("/v1/cluster/members/{id}"), None).await?,
    };
    print_status(&status, output);
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &Value, output: Output) {
    if output == Output::Json {
        println!("{status}");
        return;
    }
    let leader = status["leader"].as_u64().map_or("none".to_string(), |l| l.to_string());
    println!("leader {leader}, term {}, commit {} (as seen by coordinator {})", status["term"], status["commit"], status["id"]);
    let cluster = status["cluster_id"].as_str().unwrap_or("not set yet");
    println!("cluster {cluster}, version {}", status["cluster_version"]);
    let rows: Vec<Vec<String>> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let id = m["id"].as_u64().unwrap_or(0);
            vec![
                id.to_string(),
                m["raft_addr"].as_str().unwrap_or("?").to_string(),
                if Some(id) == status["leader"].as_u64() { "leader".into() } else { m["role"].as_str().unwrap_or("?").to_string() },
                m["matched"].as_u64().map_or("-".into(), |n| n.to_string()),
            ]
        })
        .collect();
    println!("{}", table::render(&["ID", "RAFT ADDRESS", "ROLE", "MATCHED"], &rows));
}
