//! `sluice registries ls|allow|set|any`: the registries images may come from
//! (admin to change). An empty list allows any registry.

use crate::Output;
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::Api;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum RegistriesCommand {
    /// Show the allow-list.
    Ls,
    /// Add registries (host[:port], docker.io for Docker Hub) to the allow-list.
    Allow {
        #[arg(required = true)]
        registries: Vec<String>,
    },
    /// Replace the allow-list.
    Set {
        #[arg(required = true)]
        registries: Vec<String>,
    },
    /// Empty the allow-list: images may come from any registry.
    Any,
}

pub async fn run(api: &Api, output: Output, command: RegistriesCommand) -> Result<ExitCode> {
    let list = match command {
        RegistriesCommand::Ls => api.call(Method::GET, "/v1/registries", None).await?,
        RegistriesCommand::Allow { registries } => {
            // Read, add, write: two admins adding at once may lose one of the adds; `ls` shows the outcome.
            let now = api.call(Method::GET, "/v1/registries", None).await?;
            let mut allowed: Vec<Value> = now["allowed"].as_array().cloned().unwrap_or_default();
            allowed.extend(registries.into_iter().map(Value::from));
            api.call(Method::PUT, "/v1/registries", Some(&json!({ "allowed": allowed }))).await?
        }
        RegistriesCommand::Set { registries } => api.call(Method::PUT, "/v1/registries", Some(&json!({ "allowed": registries }))).await?,
        RegistriesCommand::Any => api.call(Method::PUT, "/v1/registries", Some(&json!({ "allowed": [] }))).await?,
    };
    match output {
        Output::Json => println!("{list}"),
        Output::Table => {
            let allowed: Vec<&str> = list["allowed"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if allowed.is_empty() {
                println!("any registry (no allow-list)");
            } else {
                allowed.iter().for_each(|r| println!("{r}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
