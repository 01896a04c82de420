//! The operator's CLI end to end against a real single-node Sluice with tokens
//! required, on the real Docker Engine and registry: `sluice logs` (the tail
//! prefixed by instance, JSON output, `--follow` receiving lines written after
//! it started and ending when the instance goes), the logs route's 4xx answers
//! naming the field, `sluice deploy --wait`, `sluice top --once` and its JSON snapshot, and `sluice completions`.
//!
//! Runs the binary of `sluice_tests::process_cluster::sluice_binary`
//! (`SLUICE_BIN`, or the static build of scripts/build-images.sh) against the
//! in-process Sluice; `sluice/hello` must be in the registry at 127.0.0.1:5000.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use sluice_cli::node::AuthArg;
use sluice_tests::process_cluster::sluice_binary;
use sluice_tests::{eventually, hello_image, Cluster};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const NODE: &str = "t-cli-ops";

/// `sluice --api .. --token .. ARGS`, run to its end off the runtime's
/// threads (the Sluice under test runs on them).
async fn sluice(api: &str, token: &str, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(sluice_binary()?);
    command.args(["--api", api, "--token", token]).args(args);
    tokio::task::spawn_blocking(move || command.output()).await?.context("running sluice")
}

/// The next line from `rx` within `timeout`; `None` when the sender is gone or time is up.
async fn next_line(rx: &mpsc::Receiver<String>, timeout: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match rx.try_recv() {
            Ok(line) => return Some(line),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() > deadline => return None,
            Err(mpsc::TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_through_the_agent_and_completions() -> Result<()> {
    let c = Cluster::start_with(NODE, |a| a.coordinator.auth = AuthArg::Required).await?;
    let result = scenario(&c).await;
    c.stop().await?;
    result
}

async fn scenario(c: &Cluster) -> Result<()> {
    let admin = c.admin_token()?;
    let http = c.http.clone().with_token(Some(admin.clone()));
    let api = c.node.api_url();
    // deploy --wait returns once the minimum is ready, with progress on stderr.
    let image = hello_image();
    let out = sluice(&api, &admin, &["deploy", "hello", "--image", &image, "--port", "8080", "--min", "1", "--max", "1", "--wait", "--wait-timeout", "60"]).await?;
    ensure!(out.status.success(), "sluice deploy --wait: {}", text(&out.stderr));
    ensure!(text(&out.stderr).lines().last() == Some("hello: 1/1 ready (0 starting)"), "progress: {}", text(&out.stderr));
    let id = eventually("hello's instance is ready", Duration::from_secs(60), || async {
        let instances: Value = http.get(&c.api("/v1/instances?function=hello")).await?.json()?;
        Ok(instances.as_array().and_then(|a| a.iter().find(|i| i["state"] == "ready")).and_then(|i| i["id"].as_u64()))
    })
    .await?;
    let call = http.get(&c.function_url("hello", "")).await?;
    ensure!(call.status.is_success(), "invoke: {}", call.text());

    // The tail: hello writes "hello: listening on ..." to stderr when it starts.
    let out = sluice(&api, &admin, &["logs", "hello", "--tail", "10"]).await?;
    ensure!(out.status.success(), "sluice logs: {}", text(&out.stderr));
    let prefix = format!("i{id}");
    let line = text(&out.stderr).lines().find(|l| l.contains("hello: listening on")).map(str::to_string);
    let line = line.with_context(|| format!("no listening line on stderr: {}", text(&out.stderr)))?;
    ensure!(line.starts_with(&format!("{prefix:<5} | ")), "not prefixed by its instance: {line:?}");
    ensure!(!text(&out.stdout).contains("listening on"), "the container's stderr went to stdout: {}", text(&out.stdout));

    // JSON lines, one instance.
    let out = sluice(&api, &admin, &["--output", "json", "logs", "hello", "--tail", "10", "--instance", &prefix]).await?;
    ensure!(out.status.success(), "sluice logs -o json: {}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(serde_json::from_str).collect::<Result<_, _>>().context("JSON lines")?;
    ensure!(lines.iter().any(|l| l["instance"] == id && l["stream"] == "stderr" && l["line"].as_str().is_some_and(|t| t.contains("listening on"))), "{lines:?}");
    // top: one frame with hello's ready instance, and one JSON snapshot.
    let out = sluice(&api, &admin, &["top", "--once"]).await?;
    ensure!(out.status.success(), "sluice top --once: {}", text(&out.stderr));
    let frame = text(&out.stdout);
    let row: Vec<&str> = frame.lines().find(|l| l.starts_with("hello ")).with_context(|| format!("no hello row: {frame}"))?.split_whitespace().collect();
    ensure!(row[1] == "1", "READY is not 1: {frame}");
    ensure!(frame.lines().any(|l| l.starts_with(NODE) && l.contains("ready")), "no ready node row: {frame}");
    let out = sluice(&api, &admin, &["--output", "json", "top"]).await?;
    let snapshot: Value = serde_json::from_slice(&out.stdout).with_context(|| text(&out.stderr))?;
    ensure!(snapshot["functions"][0]["spec"]["name"] == "hello" && snapshot["functions"][0]["instances"]["ready"] == 1, "{snapshot}");
    ensure!(snapshot["nodes"].as_array().is_some_and(|n| n.iter().any(|n| n["id"] == NODE)), "{snapshot}");

    let out = sluice(&api, &admin, &["logs", "hello", "--tail", "0"]).await?;
    ensure!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(), "tail 0 prints nothing: {}", text(&out.stderr));

    // Bad input: 4xx with the field named, before any agent is asked.
    for (query, status, field) in
        [("tail=20000", 400, Some("tail")), ("since=5d", 400, Some("since")), ("follow=maybe", 400, Some("follow")), ("tial=5", 400, Some("tial")), ("instance=i999999", 404, None)]
    {
        let r = http.get(&c.api(&format!("/v1/functions/hello/logs?{query}"))).await?;
        ensure!(r.status.as_u16() == status, "{query}: {} {}", r.status, r.text());
        let body = r.json()?;
        ensure!(body["error"]["field"].as_str() == field, "{query}: {body}");
    }
    let r = http.get(&c.api("/v1/functions/nope/logs")).await?;
    ensure!(r.status.as_u16() == 404 && r.text().contains("nope"), "{} {}", r.status, r.text());
    let r = c.http.get(&c.api("/v1/functions/hello/logs")).await?;
    ensure!(r.status.as_u16() == 401, "no token: {}", r.status);
    let out = sluice(&api, &admin, &["logs", "hello", "--tail", "20000"]).await?;
    ensure!(out.status.code() == Some(2) && text(&out.stderr).contains("--tail"), "{:?} {}", out.status, text(&out.stderr));

    // Follow: lines written after it started arrive, and it ends when the instance goes.
    let mut follow = Command::new(sluice_binary()?)
        .args(["--api", &api, "--token", &admin, "logs", "hello", "--follow", "--tail", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("sluice logs --follow")?;
    let (tx, rx) = mpsc::channel();
    let stderr = follow.stderr.take().context("stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = next_line(&rx, Duration::from_secs(20)).await.context("--follow printed its tail line")?;
    ensure!(first.contains("listening on"), "{first}");
    // Removing the function stops the instance: hello logs its SIGTERM, then its stop.
    let r = http.send(hyper::Method::DELETE, &c.api("/v1/functions/hello"), "", &[]).await?;
    ensure!(r.status.is_success(), "rm: {}", r.text());
    let mut later = Vec::new();
    while let Some(line) = next_line(&rx, Duration::from_secs(60)).await {
        later.push(line);
    }
    ensure!(later.iter().any(|l| l.starts_with(&prefix) && l.contains("received, draining")), "no line written after --follow started: {later:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = follow.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            follow.kill()?;
            anyhow::bail!("--follow did not end once the instance was gone");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(status.success(), "--follow exit: {status:?}");

    // Completions: a script for each shell, naming the command.
    for shell in ["bash", "zsh", "fish"] {
        let out = tokio::task::spawn_blocking(move || Command::new(sluice_binary()?).args(["completions", shell]).output().map_err(anyhow::Error::from)).await??;
        ensure!(out.status.success() && text(&out.stdout).contains("sluice") && text(&out.stdout).contains("logs"), "{shell}: {}", text(&out.stderr));
    }
    let out = tokio::task::spawn_blocking(|| Command::new(sluice_binary()?).args(["completions", "tcsh"]).output().map_err(anyhow::Error::from)).await??;
    ensure!(out.status.code() == Some(2) && text(&out.stderr).contains("bash"), "{}", text(&out.stderr));
    Ok(())
}
