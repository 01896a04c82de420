//! Keep-warm prediction across a leader change: three coordinator processes
//! (a private mosquitto as their metrics bus) with prediction on, one agent on
//! the real Docker Engine, and a function called every few seconds through a
//! follower's gateway. Every coordinator feeds its models from the bus, so
//! when the leader is killed the new one already knows the function's rhythm:
//! the calls after the failover are no more cold than those before it.

use anyhow::Result;
use sluice_agent::runtime::{DockerConfig, DockerRuntime};
use sluice_cli::node::run_agent;
use sluice_common::{NodeId, SystemClock};
use sluice_tests::process_cluster::ProcessCluster;
use sluice_tests::{hello_image, host_args, remove_containers, Http};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: &str = "t-pfo-a";
const PERIOD: Duration = Duration::from_secs(6);
/// Calls before the kill (the model learns from them) and after it (judged).
const BEFORE: usize = 8;
const AFTER: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_a_periodic_function_warm() -> Result<()> {
    let mut pc = ProcessCluster::start("pfo", 3, &["--tick-secs", "0.5", "--predict-policy", "sluice", "--predict-bin-secs", "1"]).await?;
    let docker = DockerRuntime::connect(DockerConfig::default()).await?;
    remove_containers(&docker, &NodeId::new(AGENT)?).await?;
    let bus = sluice_cli::node::connect_bus(&pc.bus_url(), AGENT).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let coordinators: Vec<String> = pc.ids().into_iter().map(|i| pc.api_url(i)).collect();
    let (_, agent) = run_agent(&host_args(AGENT), coordinators, None, None, Arc::new(SystemClock), Some(bus), rx).await?;
    let agent = tokio::spawn(agent);
    let result = run(&mut pc).await;
    let _ = stop.send(true);
    let _ = agent.await;
    remove_containers(&docker, &NodeId::new(AGENT)?).await?;
    result.map_err(|e| e.context(pc.logs(80)))
}

/// The gateway's own count of requests that waited for a cold start.
async fn cold_starts(http: &Http, gateway: &str) -> Result<u64> {
    let text = http.get(&format!("{gateway}/metrics")).await?.text();
    let line = text.lines().find(|l| l.starts_with("sluice_gateway_cold_starts_total{function=\"hello\"}"));
    Ok(line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64)
}

async fn run(pc: &mut ProcessCluster) -> Result<()> {
    let http = Http::fresh_connections(Duration::from_secs(10));
    let leader = pc.leader(Duration::from_secs(10)).await?;
    let via = pc.ids().into_iter().find(|i| *i != leader).expect("three coordinators");
    let spec = serde_json::json!({
        "name": "hello", "image": hello_image(), "port": 8080, "min_instances": 0, "max_instances": 2, "concurrency": 4,
        "idle_timeout_secs": 1, "scaling": {"stable_window_secs": 2, "panic_window_secs": 1}
    });
    let r = http.json(sluice_tests::Method::POST, &format!("{}/v1/functions", pc.api_url(leader)), &spec).await?;
    anyhow::ensure!(r.status.is_success(), "deploy: {} {}", r.status, r.text());
    let gateway = pc.gateway_url(via);
    let url = format!("{gateway}/function/hello");
    let mut next = Instant::now();
    let mut log = Vec::new();
    let mut cold_at_kill = 0;
    for k in 0..BEFORE + AFTER {
        if k == BEFORE {
            cold_at_kill = cold_starts(&http, &gateway).await?;
            pc.kill(leader)?;
            let new = pc.leader(Duration::from_secs(15)).await?;
            log.push(format!("[leader {leader} killed, {new} leads]"));
        }
        tokio::time::sleep_until(next.into()).await;
        next = Instant::now() + PERIOD;
        let started = Instant::now();
        let r = http.get(&url).await?;
        anyhow::ensure!(r.status.is_success(), "call {k}: {} {}", r.status, r.text());
        log.push(format!("{}:{}ms", r.header("x-sluice-instance").unwrap_or_default(), started.elapsed().as_millis()));
    }
    let after = cold_starts(&http, &gateway).await? - cold_at_kill;
    eprintln!("calls through coordinator {via}'s gateway: {}", log.join(" "));
    anyhow::ensure!(after == 0, "{after} of the {AFTER} calls after the failover waited for a cold start: {}", log.join(" "));
    pc.restart(leader)?;
    Ok(())
}
