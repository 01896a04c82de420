//! B5, the collector alone: one pass of the agent's cgroup-file collector over
//! every Sluice container of a node, against Docker's one-shot stats API
//! (`stream=false, one-shot=true`) for the same containers, all at once, in the
//! same run. bench/b5_agent.sh runs it while its 50 containers are up.
//!
//! Usage: b5_collect NODE [PASSES]

use anyhow::{Context, Result};
use bollard::query_parameters::StatsOptionsBuilder;
use futures_util::StreamExt;
use sluice_agent::container_stats::{ContainerCollector, Watched};
use sluice_agent::runtime::{ContainerRuntime, DockerConfig, DockerRuntime};
use sluice_common::NodeId;
use std::time::Instant;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// CPU time this process has used, in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks * 10.0 // CLK_TCK is 100 on Linux
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let node = NodeId::new(args.next().context("usage: b5_collect NODE [PASSES]")?)?;
    let passes: usize = args.next().map(|p| p.parse()).transpose()?.unwrap_or(30);
    let runtime = DockerRuntime::connect(DockerConfig::default()).await?;
    let containers = runtime.list(&node).await?;
    anyhow::ensure!(!containers.is_empty(), "node {node} has no Sluice containers");
    let watched: Vec<Watched> = containers.iter().map(|c| Watched { container: c.id.0.clone(), instance: c.instance, function: c.function.clone() }).collect();

    let mut collector = ContainerCollector::default();
    let (mut cgroup_ms, cpu_before) = (Vec::new(), cpu_ms());
    for _ in 0..passes {
        let t = Instant::now();
        let figures = collector.sample(&watched, Instant::now());
        cgroup_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(figures.len() == watched.len(), "read {} of {} containers", figures.len(), watched.len());
    }
    let cgroup_cpu = (cpu_ms() - cpu_before) / passes as f64;

    let docker = bollard::Docker::connect_with_local_defaults()?;
    let mut docker_ms = Vec::new();
    for _ in 0..passes.min(10) {
        let t = Instant::now();
        let calls = watched.iter().map(|w| {
            let docker = docker.clone();
            let id = w.container.clone();
            async move {
                let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
                docker.stats(&id, Some(options)).next().await.context("no stats")?.context("stats call")
            }
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
        }
        docker_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let n = watched.len();
    let (c50, c99) = (percentile(&mut cgroup_ms, 0.5), percentile(&mut cgroup_ms, 0.99));
    let d50 = percentile(&mut docker_ms, 0.5);
    println!("b5_collect: {n} containers, cgroup files: p50 {c50:.2} ms, p99 {c99:.2} ms per pass, {cgroup_cpu:.2} ms CPU per pass (this process)");
    println!("b5_collect: {n} containers, Docker one-shot stats, all at once: p50 {d50:.0} ms per pass");
    println!("b5_collect: ratio docker/cgroup {:.0}x", d50 / c50);
    Ok(())
}
