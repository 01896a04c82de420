//! `sluice invocation ID`: what became of an asynchronous invocation (the id
//! `POST /async-function/{name}` answered with): its state, tries, errors and
//! result, as any coordinator knows it.

use crate::Output;
use anyhow::{bail, Result};
use hyper::Method;
use serde_json::Value;
use sluice_cli::client::Api;
use std::process::ExitCode;

pub async fn show(api: &Api, output: Output, id: &str) -> Result<ExitCode> {
    if !sluice_coordinator::invocations::record::is_id(id) {
        bail!("invocation id {id:?}: use the id the 202 of POST /async-function/<name> gave (r or k and 32 hex digits)");
    }
    let view = api.call(Method::GET, &format!("/v1/invocations/{id}"), None).await?;
    match output {
        Output::Json => println!("{view}"),
        Output::Table => print!("{}", describe(&view)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The view as lines: state and tries, each failed try, the result.
fn describe(view: &Value) -> String {
    let mut out = format!(
        "{} of {}: {} after {} tr{}",
        view["id"].as_str().unwrap_or("?"),
        view["function"].as_str().unwrap_or("?"),
        view["state"].as_str().unwrap_or("?"),
        view["attempts"],
        if view["attempts"] == 1 { "y" } else { "ies" }
    );
    if let Some(by) = view["coordinator"].as_str() {
        out.push_str(&format!(" (latest on {by})"));
    }
    out.push('\n');
    for e in view["errors"].as_array().into_iter().flatten() {
        out.push_str(&format!("  try {}: {}\n", e["attempt"], e["error"].as_str().unwrap_or("")));
    }
    if let Some(result) = view["result"].as_object() {
        let body = result.get("body").and_then(Value::as_str).unwrap_or("");
        let cut = if result.get("truncated").and_then(Value::as_bool) == Some(true) { " (cut)" } else { "" };
        out.push_str(&format!("  result: {} {body}{cut}\n", result.get("status").unwrap_or(&Value::Null)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::describe;
    use serde_json::json;

    #[test]
    fn a_view_reads_as_lines() {
        let view = json!({"id": "ab", "function": "hello", "state": "done", "attempts": 3, "coordinator": "coordinator-2",
            "errors": [{"attempt": 1, "error": "the function answered 500: boom"}, {"attempt": 2, "error": "no answer within 5s"}],
            "result": {"status": 200, "body": "hello, world"}});
        assert_eq!(
            describe(&view),
            "ab of hello: done after 3 tries (latest on coordinator-2)\n  try 1: the function answered 500: boom\n  try 2: no answer within 5s\n  result: 200 hello, world\n"
        );
    }
}
