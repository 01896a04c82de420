//! Config files with the real `sluice` binary: a coordinator started from a
//! file takes its settings from it where neither the environment nor a flag
//! gives one; on SIGHUP it applies a new `log_level` (the same API request then
//! logs at debug), says that a new `api` needs a restart, and keeps running
//! when the edited file has a mistake. An agent reports the labels and
//! instance limit of its edited file after SIGHUP. `sluice config check` and a
//! bad `--config` exit 2 with the mistake at its line and column.
//!
//! Runs the binary of `sluice_tests::process_cluster::sluice_binary`
//! (`SLUICE_BIN`, or the static build of scripts/build-images.sh); the agent
//! needs the Docker Engine (no image, no container), nothing needs a broker.
//! Each process logs to a file in the test's directory, shown when a test fails.

use anyhow::{ensure, Context, Result};
use hyper::Method;
use serde_json::json;
use sluice_tests::ports::free_port;
use sluice_tests::process_cluster::sluice_binary;
use sluice_tests::{eventually, Http};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A `sluice` process, killed when dropped.
struct Running(Child);

/// Starts `sluice ARGS` without RUST_LOG and SLUICE_BUS (so files decide), with `env`, logging to `log`.
fn spawn(args: &[&str], env: &[(&str, &Path)], log: &Path) -> Result<Running> {
    let binary = sluice_binary()?;
    let out = std::fs::File::create(log)?;
    let mut command = Command::new(&binary);
    command.args(args).env_remove("RUST_LOG").env_remove("SLUICE_BUS").env_remove("SLUICE_COORDINATORS").env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.stdout(Stdio::from(out.try_clone()?)).stderr(Stdio::from(out)).spawn().with_context(|| format!("starting {}", binary.display()))?;
    Ok(Running(child))
}

fn sighup(process: &Running) -> Result<()> {
    let pid = process.0.id().to_string();
    ensure!(Command::new("kill").args(["-HUP", &pid]).status()?.success(), "kill -HUP {pid} failed");
    Ok(())
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn coordinator_file(log_level: &str, api: u16, gateway: u16, raft: u16, data_dir: &Path, extra: &str) -> String {
    format!(
        "[coordinator]\nlog_level = \"{log_level}\"\napi = \"127.0.0.1:{api}\"\ngateway = \"127.0.0.1:{gateway}\"\nraft = \"127.0.0.1:{raft}\"\n\
         auth = \"off\"\npredict_policy = \"off\"\ngateway_threads = 3\ndata_dir = \"{}\"\n{extra}",
        data_dir.display()
    )
}

/// A line of `log` past byte `from` that holds every one of `parts`.
fn logged(log: &Path, from: usize, parts: &[&str]) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.get(from..)?.lines().find(|line| parts.iter().all(|p| line.contains(p))).map(str::to_string)
}

#[tokio::test]
async fn a_coordinator_takes_its_file_under_env_and_flags_and_reloads_it_on_sighup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, gateway, raft, other_api) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?, free_port("127.0.0.1")?, free_port("127.0.0.1")?);
    let (from_file, from_env) = (dir.path().join("data-from-file"), dir.path().join("data-from-env"));
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, coordinator_file("info", api, gateway, raft, &from_file, ""))?;
    let log = dir.path().join("coordinator.log");
    let coordinator = spawn(&["coordinator", "--config", config.to_str().context("path")?, "--gateway-threads", "1"], &[("SLUICE_DATA_DIR", &from_env)], &log)?;
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The file's api address is served; the flag's gateway_threads and the environment's data_dir beat the file's.
    let http = Http::fresh_connections(Duration::from_millis(500));
    let cluster = format!("http://127.0.0.1:{api}/v1/cluster");
    eventually("the API on the file's address", Duration::from_secs(30), || async { Ok(http.get(&cluster).await.ok().filter(|r| r.json().is_ok_and(|v| v["leader"].is_u64()))) })
        .await
        .with_context(show_log)?;
    let listening =
        eventually("the coordinator's listening line", Duration::from_secs(10), || async { Ok(logged(&log, 0, &["coordinator listening"])) }).await.with_context(show_log)?;
    ensure!(listening.contains("gateway_threads=1"), "the flag --gateway-threads 1 should beat the file's 3: {listening}");
    ensure!(from_env.join("raft.redb").is_file() && !from_file.exists(), "SLUICE_DATA_DIR should beat the file's data_dir:\n{}", show_log());

    // At info, a committed command is not logged.
    let registries = format!("http://127.0.0.1:{api}/v1/registries");
    http.call(Method::PUT, &registries, Some(&json!({ "allowed": ["one.example:5000"] }))).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(logged(&log, 0, &["command executed"]).is_none(), "a command logged at info:\n{}", show_log());

    // A new log_level applies at once; a new api address needs a restart.
    let before_reload = show_log().len();
    std::fs::write(&config, coordinator_file("debug", other_api, gateway, raft, &from_file, ""))?;
    sighup(&coordinator)?;
    let restart = format!("api changed from 127.0.0.1:{api} to 127.0.0.1:{other_api}: needs a restart");
    eventually("the reload's log lines", Duration::from_secs(10), || async {
        Ok(logged(&log, before_reload, &["log_level changed from info to debug: applied"]).and(logged(&log, before_reload, &["WARN", &restart])))
    })
    .await
    .with_context(show_log)?;
    http.call(Method::PUT, &registries, Some(&json!({ "allowed": ["two.example:5000"] }))).await.context("the API should stay on its address until a restart")?;
    eventually("a command logged at debug", Duration::from_secs(10), || async { Ok(logged(&log, before_reload, &["DEBUG", "command executed"])) }).await.with_context(show_log)?;

    // A file with a mistake is refused at its place; the process carries on as it was.
    let before_mistake = show_log().len();
    std::fs::write(&config, coordinator_file("debug", other_api, gateway, raft, &from_file, "gateway_thread = 2\n"))?;
    sighup(&coordinator)?;
    let place = format!("config not reloaded: {}:10:1: unknown key `gateway_thread` in [coordinator]: did you mean `gateway_threads`?", config.display());
    eventually("the refused reload", Duration::from_secs(10), || async { Ok(logged(&log, before_mistake, &["WARN", &place])) }).await.with_context(show_log)?;
    http.get(&cluster).await.context("the coordinator should still serve after a refused reload")?;
    Ok(())
}

fn agent_file(node: &str, labels: &str, max_instances: u32) -> String {
    format!("[agent]\nnode = \"{node}\"\nlabel = [{labels}]\nmax_instances = {max_instances}\nagent_metrics = \"127.0.0.1:0\"\n")
}

#[tokio::test]
async fn an_agent_reports_the_labels_and_instance_limit_of_its_edited_file_after_sighup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (api, data) = (free_port("127.0.0.1")?, dir.path().join("data"));
    let coordinator_log = dir.path().join("coordinator.log");
    let api_addr = format!("127.0.0.1:{api}");
    let _coordinator =
        spawn(&["coordinator", "--auth", "off", "--api", &api_addr, "--gateway", "127.0.0.1:0", "--raft", "127.0.0.1:0"], &[("SLUICE_DATA_DIR", &data)], &coordinator_log)?;
    let node = format!("config-test-{}", std::process::id());
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_file(&node, "\"zone=a\"", 3))?;
    let log = dir.path().join("agent.log");
    let coordinator_url = format!("http://{api_addr}");
    let agent = spawn(&["agent", "--config", config.to_str().context("path")?, "--coordinator", &coordinator_url], &[], &log)?;
    let show_logs = || format!("{}\n--- coordinator ---\n{}", std::fs::read_to_string(&log).unwrap_or_default(), std::fs::read_to_string(&coordinator_log).unwrap_or_default());

    let http = Http::fresh_connections(Duration::from_millis(500));
    let nodes = format!("{coordinator_url}/v1/nodes");
    let reported = |labels: serde_json::Value, max: u64| {
        let (http, nodes, node) = (&http, &nodes, &node);
        move || {
            let labels = labels.clone();
            async move {
                let Ok(list) = http.get(nodes).await.and_then(|r| r.json()) else { return Ok(None) };
                Ok(list.as_array().into_iter().flatten().find(|n| n["id"] == node.as_str() && n["labels"] == labels && n["max_instances"] == max).cloned())
            }
        }
    };
    eventually("the file's labels and max_instances reported", Duration::from_secs(30), reported(json!({ "zone": "a" }), 3)).await.with_context(show_logs)?;

    let before_reload = std::fs::read_to_string(&log)?.len();
    std::fs::write(&config, agent_file(&format!("{node}-renamed"), "\"zone=b\", \"disk=ssd\"", 5))?;
    sighup(&agent)?;
    eventually("the edited labels and max_instances reported", Duration::from_secs(15), reported(json!({ "zone": "b", "disk": "ssd" }), 5)).await.with_context(show_logs)?;
    let renamed = format!("node changed from {node} to {node}-renamed: needs a restart");
    for line in ["label changed from zone=a to zone=b,disk=ssd: applied", "max_instances changed from 3 to 5: applied", renamed.as_str()] {
        ensure!(logged(&log, before_reload, &[line]).is_some(), "no {line:?} in the agent's log:\n{}", show_logs());
    }
    Ok(())
}

fn run(args: &[&str]) -> Result<Output> {
    let binary = sluice_binary()?;
    Command::new(&binary).args(args).env_remove("RUST_LOG").output().with_context(|| format!("running {}", binary.display()))
}

#[test]
fn config_check_says_ok_or_shows_each_mistake_and_exits_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[coordinator]\ngateway_threads = 2\n\n[agent]\nnode = \"edge-1\"\nlabel = [\"zone=a\"]\n")?;
    let ok = run(&["config", "check", good.to_str().context("path")?])?;
    ensure!(ok.status.code() == Some(0), "{ok:?}");
    ensure!(String::from_utf8_lossy(&ok.stdout) == format!("{}: OK, [coordinator] 1 setting(s), [agent] 2 setting(s)\n", good.display()), "{ok:?}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\nnode = \"edge-1\"\nmax_instance = 3\nsample_secs = \"often\"\n")?;
    let refused = run(&["config", "check", bad.to_str().context("path")?])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(refused.status.code() == Some(2), "{refused:?}");
    ensure!(stderr.contains(&format!("{}:3:1: unknown key `max_instance` in [agent]: did you mean `max_instances`?", bad.display())), "{stderr}");
    ensure!(stderr.contains(&format!("{}:4:15: `sample_secs`: invalid value \"often\" for --sample-secs: ", bad.display())), "{stderr}");

    let wrong_kind = run(&["config", "check", "--kind", "coordinator", bad.to_str().context("path")?])?;
    ensure!(wrong_kind.status.code() == Some(2), "{wrong_kind:?}");
    Ok(())
}

#[test]
fn a_coordinator_with_a_bad_or_missing_config_does_not_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("coordinator.toml");
    std::fs::write(&bad, "[coordinator]\napi = \"127.0.0.1\"\n")?;
    let refused = run(&["coordinator", "--config", bad.to_str().context("path")?])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(refused.status.code() == Some(2), "{refused:?}");
    ensure!(stderr.contains(&format!("{}:2:7: `api`: invalid value \"127.0.0.1\" for --api: invalid socket address syntax", bad.display())), "{stderr}");

    let missing = dir.path().join("nowhere.toml");
    let refused = run(&["coordinator", "--config", missing.to_str().context("path")?])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(refused.status.code() == Some(2), "{refused:?}");
    ensure!(stderr.contains(&format!("{}: no such file: check the path given to --config", missing.display())), "{stderr}");
    Ok(())
}
