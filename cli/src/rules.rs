//! `sluice rules apply|check|ls|rm|explain`: scheduling rules, kept in TOML
//! files and in the cluster's replicated state.
//!
//! `apply` and `check` read the file here, so every mistake is reported with
//! its line and column in the file before anything is sent; the coordinator
//! checks again, since other clients exist.

use crate::table;
use crate::Output;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};
use sluice_cli::client::Api;
use sluice_common::rules::{parse_file, Rule, RuleName, RuleSource};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Create or replace the rules in a TOML file (`[[rule]]` tables with name, scope, priority, rule).
    Apply { file: PathBuf },
    /// Check a rules file without applying it.
    Check { file: PathBuf },
    /// List the cluster's rules.
    Ls,
    /// Remove a rule.
    Rm { name: String },
    /// Show each rule's current values, whether it is in effect, since when, and why or why not.
    Explain {
        /// Only this rule.
        name: Option<String>,
    },
}

pub async fn run(api: &Api, output: Output, command: RulesCommand) -> Result<ExitCode> {
    match command {
        RulesCommand::Apply { file } => {
            let Some(rules) = read(&file)? else { return Ok(ExitCode::FAILURE) };
            let sources: Vec<&RuleSource> = rules.iter().map(|r| &r.source).collect();
            let reply = api.call(Method::PUT, "/v1/rules", Some(&json!({ "rules": sources }))).await?;
            match output {
                Output::Json => println!("{reply}"),
                Output::Table => println!("applied {} rule(s) from {}: `sluice rules explain` shows what they do now", rules.len(), file.display()),
            }
        }
        RulesCommand::Check { file } => {
            let Some(rules) = read(&file)? else { return Ok(ExitCode::FAILURE) };
            match output {
                Output::Json => println!("{}", json!({ "valid": true, "rules": rules })),
                Output::Table => {
                    println!("{}: {} rule(s), all valid", file.display(), rules.len());
                    for r in &rules {
                        println!("  {} ({}, priority {}): {r}", r.name, r.source.scope, r.priority);
                    }
                }
            }
        }
        RulesCommand::Ls => {
            let rules = api.call(Method::GET, "/v1/rules", None).await?;
            if output == Output::Json {
                println!("{rules}");
            } else {
                let rows: Vec<Vec<String>> = rules
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| vec![table::cell(&r["name"]), table::cell(&r["scope"]), table::cell(&r["priority"]), table::cell(&r["rule"])])
                    .collect();
                println!("{}", table::render(&["RULE", "SCOPE", "PRIORITY", "RULE TEXT"], &rows));
            }
        }
        RulesCommand::Rm { name } => {
            let name = RuleName::new(name).map_err(|e| anyhow::anyhow!("name: {}", e.message))?;
            let reply = api.call(Method::DELETE, &format!("/v1/rules/{name}"), None).await?;
            match output {
                Output::Json => println!("{reply}"),
                Output::Table => println!("removed rule {name}"),
            }
        }
        RulesCommand::Explain { name } => {
            let path = match name {
                Some(n) => {
                    let n = RuleName::new(n).map_err(|e| anyhow::anyhow!("name: {}", e.message))?;
                    format!("/v1/rules/explain?name={n}")
                }
                None => "/v1/rules/explain".into(),
            };
            let explanations = api.call(Method::GET, &path, None).await?;
            if output == Output::Json {
                println!("{explanations}");
            } else {
                print_explanations(&explanations);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The rules of `file`, or None after printing every error as `file:line:column: ...`.
fn read(file: &Path) -> Result<Option<Vec<Rule>>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match parse_file(&text) {
        Ok(rules) if rules.is_empty() => bail!("{}: no rules: add [[rule]] tables with name, rule and optionally scope and priority", file.display()),
        Ok(rules) => Ok(Some(rules)),
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{}:{}: {}: expected {}, found {}: {}", file.display(), e.line, e.column, e.field, e.expected, e.found, e.fix);
            }
            eprintln!("{} error(s) in {}; nothing was applied", errors.len(), file.display());
            Ok(None)
        }
    }
}

fn print_explanations(explanations: &Value) {
    let list = explanations.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no rule covers any function: `sluice rules ls` lists rules, `sluice ls` functions");
        return;
    }
    for e in list {
        let state = if e["in_effect"].as_bool() == Some(true) { "IN EFFECT" } else { "not in effect" };
        println!("{} on {} (priority {}): {state}", table::cell(&e["rule"]), table::cell(&e["function"]), table::cell(&e["priority"]));
        println!("  {}", table::cell(&e["text"]));
        for v in e["values"].as_array().into_iter().flatten() {
            let show = |x: &Value| x.as_f64().map_or("no data".to_string(), |f| format!("{f:.3}"));
            println!("  {}: {} vs {}", table::cell(&v["comparison"]), show(&v["left"]), show(&v["right"]));
        }
        if let Some(since) = e["holding_since"].as_u64() {
            println!("  holding since {}", ago(since));
        }
        if let Some(at) = e["last_fired"].as_u64() {
            println!("  last fired {}", ago(at));
        }
        println!("  why: {}", table::cell(&e["why"]));
    }
}

fn ago(ms: u64) -> String {
    use sluice_common::Clock;
    let now = sluice_common::SystemClock.now();
    format!("{:.0} s ago", now.since(sluice_common::Timestamp(ms)).as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_rules_file_is_valid() {
        let rules = sluice_common::rules::parse_file(include_str!("../../examples/rules/web.toml")).expect("examples/rules/web.toml parses");
        assert_eq!(rules.len(), 4);
    }
}
