//! Asynchronous invocations end to end: three `sluice coordinator` processes
//! and an agent on the local Docker Engine, once on the Kafka broker of
//! scripts/brokers.sh (tansu on 127.0.0.1:9092; the test fails when it is not
//! running) and once on MQTT (a private mosquitto, as the other process tests).
//!
//! - R1: a function that fails twice, then succeeds, is retried to success; its
//!   state, with both failed tries, reads the same on every coordinator, and its
//!   callback URL receives the result.
//! - R2: submitted twice with one idempotency key (to two coordinators), it is
//!   one invocation: one id, and the function ran once.
//! - R4: a function that always fails ends dead-lettered after three tries, its
//!   request on the dead letter topic.
//! - R3: a coordinator SIGKILLed while invocations are queued and running on it
//!   (and restarted 12 s later): every accepted invocation ends (done, or
//!   dead-lettered), including those it was running.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_bus::Topic;
use sluice_cli::node::run_agent;
use sluice_common::{NodeId, SystemClock};
use sluice_tests::process_cluster::ProcessCluster;
use sluice_tests::{eventually, hello_image, host_args, remove_containers, sleep_image, Http, Method};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KAFKA: &str = "127.0.0.1:9092";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_invocations_are_retried_deduplicated_and_survive_a_killed_coordinator() -> Result<()> {
    // Fail loudly: a bus that is not there would only make the coordinators wait for it.
    std::net::TcpStream::connect_timeout(&KAFKA.parse()?, Duration::from_secs(2))
        .with_context(|| format!("no Kafka broker on {KAFKA}: start one with scripts/brokers.sh start"))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let bus = format!("kafka://{KAFKA}?prefix=tasync{}", nanos % 1_000_000_000);
    let pc = ProcessCluster::start_on_bus("async-kafka", 3, &["--tick-secs", "0.5"], Some(bus)).await?;
    with_agent(pc, "t-async-kafka").await
}

/// The same on MQTT (the cluster's private mosquitto), as on edge hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mqtt_invocations_are_retried_deduplicated_and_survive_a_killed_coordinator() -> Result<()> {
    let pc = ProcessCluster::start("async-mqtt", 3, &["--tick-secs", "0.5"]).await?;
    with_agent(pc, "t-async-mqtt").await
}

/// Runs the scenario with an agent `name` on the local Docker Engine.
async fn with_agent(mut pc: ProcessCluster, name: &str) -> Result<()> {
    let docker = DockerRuntime::connect(DockerConfig::default()).await?;
    remove_containers(&docker, &NodeId::new(name)?).await?;
    let agent_bus = sluice_cli::node::connect_bus(&pc.bus_url(), name).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let coordinators: Vec<String> = pc.ids().into_iter().map(|i| pc.api_url(i)).collect();
    let (_, run) = run_agent(&host_args(name), coordinators, None, None, Arc::new(SystemClock), Some(agent_bus), rx).await?;
    let agent = tokio::spawn(run);
    let result = scenario(&mut pc).await;
    let _ = stop.send(true);
    let _ = agent.await;
    remove_containers(&docker, &NodeId::new(name)?).await?;
    result.map_err(|e| e.context(pc.logs(60)))
}

async fn scenario(pc: &mut ProcessCluster) -> Result<()> {
    let http = Http::fresh_connections(Duration::from_millis(500));
    let leader = pc.leader(Duration::from_secs(10)).await?;
    for spec in [
        // One instance: its per-key call counts are the function's whole history.
        json!({"name": "hello", "image": hello_image(), "min_instances": 1, "max_instances": 1, "concurrency": 4}),
        json!({"name": "slow", "image": sleep_image(), "min_instances": 1, "max_instances": 2, "concurrency": 2, "queue_limit": 100, "start_timeout_secs": 60}),
    ] {
        let r = http.json(Method::POST, &format!("{}/v1/functions", pc.api_url(leader)), &spec).await?;
        ensure!(r.status.is_success(), "deploy: {} {}", r.status, r.text());
    }
    for name in ["hello", "slow"] {
        let url = format!("{}/function/{name}?ms=1", pc.gateway_url(leader));
        eventually(&format!("{name} answers"), Duration::from_secs(60), || async { Ok(http.get(&url).await.ok().filter(|r| r.status.is_success()).map(|_| ())) }).await?;
    }

    // R1: fails twice, then succeeds; the callback gets the result.
    let callback = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_url = format!("http://{}/done", callback.local_addr()?);
    let received = tokio::spawn(receive_one_post(callback));
    let id = submit(&http, &format!("{}/async-function/hello?key=r1&fail=2", pc.gateway_url(1)), &[("x-callback-url", &callback_url)]).await?;
    for i in pc.ids() {
        let view = ended(&http, pc, i, &id).await?;
        ensure!(view["state"] == "done" && view["attempts"] == 3, "R1: not retried to success, as read on coordinator {i}: {view}");
        ensure!(view["errors"].as_array().map(Vec::len) == Some(2), "R1: both failed tries are recorded: {view}");
        ensure!(view["result"]["status"] == 200 && view["result"]["body"] == "hello, world", "R1: the result: {view}");
    }
    let posted = tokio::time::timeout(Duration::from_secs(30), received).await.context("R1: no callback within 30 s")???;
    ensure!(posted.contains(&id) && posted.contains("\"state\":\"done\"") && posted.contains("hello, world"), "R1: the callback: {posted}");

    // R2: one idempotency key, two submissions (to two coordinators), one run.
    let key = [("idempotency-key", "order-42")];
    let first = submit(&http, &format!("{}/async-function/hello?key=r2", pc.gateway_url(1)), &key).await?;
    let second = submit(&http, &format!("{}/async-function/hello?key=r2", pc.gateway_url(2)), &key).await?;
    ensure!(first == second, "R2: one key, two ids: {first} {second}");
    ensure!(ended(&http, pc, 3, &first).await?["state"] == "done", "R2: the invocation ended otherwise");
    // Whatever ran late would have run by now; the function's own count says how often it ran.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = http.get(&format!("{}/function/hello?key=r2", pc.gateway_url(3))).await?;
    ensure!(r.header("x-hello-calls").as_deref() == Some("2"), "R2: the function ran {:?} times before this call, not once", r.header("x-hello-calls").map(|n| n + " - 1"));

    // R4: a function that always fails is dead-lettered after three tries, its request on the dead letter topic.
    // (Subscribed first: an MQTT broker keeps nothing for a session that does not exist yet.)
    let bus = sluice_cli::node::connect_bus(&pc.bus_url(), "t-async-reader").await?;
    let mut letters = bus.subscribe("t-async-dead-letters", &[Topic::DeadLetter]).await?;
    let dead = submit(&http, &format!("{}/async-function/hello?key=r4&fail=99", pc.gateway_url(2)), &[]).await?;
    let view = ended(&http, pc, 1, &dead).await?;
    ensure!(view["state"] == "dead_lettered" && view["attempts"] == 3 && view["errors"].as_array().map(Vec::len) == Some(3), "R4: {view}");
    let letter = tokio::time::timeout(Duration::from_secs(60), letters.next()).await.context("R4: nothing on the dead letter topic")??;
    let request: Value = serde_json::from_slice(&letter.payload)?;
    ensure!(letter.key == dead && request["id"] == dead.as_str() && request["path"] == "/?key=r4&fail=99", "R4: the dead letter: {request}");

    // The coordinators' counters tell the same story: four submissions (R2's second
    // answered as the first, or queued and then deduplicated by the worker), seven
    // tries, four of them retried, two answers and one dead letter, none running.
    let expected = [("accepted_total+repeated_total", 4), ("tries_total", 7), ("retried_total", 4), ("done_total", 2), ("dead_lettered_total", 1), ("running", 0)];
    eventually("the invocation counters add up", Duration::from_secs(20), || async {
        let mut seen = Vec::new();
        for (names, want) in expected {
            let mut total = 0;
            for i in pc.ids() {
                let text = http.get(&format!("{}/metrics", pc.api_url(i))).await?.text();
                for name in names.split('+') {
                    total += metric(&text, &format!("sluice_invocations_{name}")).with_context(|| format!("no sluice_invocations_{name} on coordinator {i}"))?;
                }
            }
            seen.push((names, total, want));
        }
        eprintln!("invocation counters (name, total, expected): {seen:?}");
        Ok(seen.iter().all(|(_, total, want)| total == want).then_some(()))
    })
    .await?;

    // R3: queue more than the instances take at once, kill a coordinator running some.
    let mut ids = Vec::new();
    for n in 0..12 {
        let gateway = pc.gateway_url(1 + n % 3);
        ids.push(submit(&http, &format!("{gateway}/async-function/slow?ms=4000"), &[]).await?);
    }
    let (victim, on_victim) = eventually("invocations running on some coordinator", Duration::from_secs(30), || async {
        let mut by_coordinator: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in &ids {
            let view = state(&http, pc, 1, id).await?;
            if view["state"] == "running" {
                by_coordinator.entry(view["coordinator"].as_str().unwrap_or("").to_string()).or_default().push(id.clone());
            }
        }
        Ok(by_coordinator.into_iter().find(|(c, _)| c.starts_with("coordinator-")))
    })
    .await?;
    let victim_id: u64 = victim.trim_start_matches("coordinator-").parse()?;
    let killed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    pc.kill(victim_id)?;
    eprintln!("killed {victim} while it ran {on_victim:?}");
    // Kafka hands a dead member's partitions to the others after its session
    // times out; tansu 0.6 does not always (it re-forms the group without telling
    // every member), and mosquitto keeps what the victim's session held for that
    // session. So the victim comes back, as under systemd: its return rebalances
    // the Kafka group and resumes its MQTT session, and its invocations are
    // delivered again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    pc.restart(victim_id)?;
    let reader = pc.alive().into_iter().find(|&i| i != victim_id).context("a survivor")?;
    let mut states = BTreeMap::new();
    for id in &ids {
        let view = ended(&http, pc, reader, id).await?;
        *states.entry(view["state"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
        if on_victim.contains(id) {
            // Its first try died with the victim: it ran again, as a new try or a repeat of the first.
            ensure!(view["state"] == "done" && view["updated_ms"].as_u64() > Some(killed_ms), "R3: {id} was running on the killed {victim} and did not run again: {view}");
        }
    }
    ensure!(states.keys().all(|s| s == "done" || s == "dead_lettered"), "R3: {states:?}");
    ensure!(states.get("done") == Some(&ids.len()), "R3: a 4 s sleep should not fail three times: {states:?}");
    Ok(())
}

/// The value of the unlabelled metric `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Submits and returns the invocation id of the 202.
async fn submit(http: &Http, url: &str, headers: &[(&str, &str)]) -> Result<String> {
    let r = http.send(Method::POST, url, "", headers).await?;
    ensure!(r.status.as_u16() == 202, "submitting {url}: {} {}", r.status, r.text());
    Ok(r.json()?["id"].as_str().context("an id in the 202")?.to_string())
}

/// The invocation as coordinator `i` reports it (state "unknown" until it hears of it).
async fn state(http: &Http, pc: &ProcessCluster, i: u64, id: &str) -> Result<Value> {
    let r = http.get(&format!("{}/v1/invocations/{id}", pc.api_url(i))).await?;
    match r.status.as_u16() {
        200 => r.json(),
        404 => Ok(json!({"state": "unknown"})),
        _ => bail!("GET /v1/invocations/{id} on {i}: {} {}", r.status, r.text()),
    }
}

/// Waits for the invocation to end, as coordinator `i` reports it.
async fn ended(http: &Http, pc: &ProcessCluster, i: u64, id: &str) -> Result<Value> {
    eventually(&format!("invocation {id} ends (coordinator {i})"), Duration::from_secs(90), || async {
        let view = state(http, pc, i, id).await?;
        Ok(matches!(view["state"].as_str(), Some("done" | "dead_lettered")).then_some(view))
    })
    .await
}

/// Answers one HTTP request with 200 and returns what was sent (headers and body).
async fn receive_one_post(listener: tokio::net::TcpListener) -> Result<String> {
    let (mut stream, _) = listener.accept().await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        ensure!(n > 0, "the callback connection closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
            if body.len() >= length {
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
                return Ok(text);
            }
        }
    }
}
