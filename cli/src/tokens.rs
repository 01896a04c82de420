//! `sluice tokens create|ls|revoke`: API tokens and their roles (admin only).

use crate::table;
use crate::Output;
use anyhow::Result;
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::Api;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a token; its secret is printed once and cannot be shown again.
    Create {
        /// What it is for: 1-64 of a-z, 0-9, '-', '_', '.'.
        name: String,
        /// A role: admin, deployer, invoker, agent or reader (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime, e.g. 90m, 12h, 30d (default: it does not expire).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens: ids, names, roles and expiry (never secrets).
    Ls,
    /// Revoke a token: it stops working on every coordinator.
    Revoke {
        /// Its id, as `sluice tokens ls` shows it.
        id: String,
    },
}

pub async fn run(api: &Api, output: Output, command: TokensCommand) -> Result<ExitCode> {
    match command {
        TokensCommand::Create { name, roles, expires_in } => {
            let mut body = json!({"name": name, "roles": roles});
            if let Some(text) = expires_in {
                body["expires_in_secs"] = json!(crate::duration::parse_secs("--expires-in", &text)?);
            }
            let made = api.call(Method::POST, "/v1/tokens", Some(&body)).await?;
            match output {
                Output::Json => println!("{made}"),
                Output::Table => {
                    eprintln!("token {} ({}) made; keep it secret, it is not shown again:", made["info"]["id"].as_str().unwrap_or("?"), roles_of(&made["info"]));
                    println!("{}", made["token"].as_str().unwrap_or_default());
                }
            }
        }
        TokensCommand::Ls => {
            let tokens = api.call(Method::GET, "/v1/tokens", None).await?;
            match output {
                Output::Json => println!("{tokens}"),
                Output::Table => {
                    let rows: Vec<Vec<String>> = tokens
                        .as_array()
                        .map(|list| {
                            list.iter()
                                .map(|t| {
                                    let expires = t["expires_at"].as_u64().map_or("never".to_string(), expiry);
                                    vec![t["id"].as_str().unwrap_or("?").to_string(), t["name"].as_str().unwrap_or("?").to_string(), roles_of(t), expires]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    println!("{}", table::render(&["ID", "NAME", "ROLES", "EXPIRES"], &rows));
                }
            }
        }
        TokensCommand::Revoke { id } => {
            let done = api.call(Method::DELETE, &format!("/v1/tokens/{id}"), None).await?;
            match output {
                Output::Json => println!("{done}"),
                Output::Table => println!("revoked {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "in 3d 4h", "in 12m" or "expired".
fn expiry(at_ms: u64) -> String {
    use sluice_common::Clock;
    let now = sluice_common::SystemClock.now().millis();
    if at_ms <= now {
        return "expired".into();
    }
    let secs = (at_ms - now) / 1000;
    match secs {
        s if s >= 86_400 => format!("in {}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("in {}h {}m", s / 3600, s % 3600 / 60),
        s => format!("in {}m", s.div_ceil(60)),
    }
}

fn roles_of(t: &Value) -> String {
    t["roles"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default()
}
