//! B1: a cold invocation through Sluice against the raw Docker API doing the
//! same work (create + start the same image + first HTTP response), in one run.
//!
//! Rounds alternate between the two so that drift in the machine's load hits
//! both alike. Prints medians and their ratio, and writes `bench/results/b1.json`.

use anyhow::{bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use serde_json::json;
use sluice_tests::{eventually, Cluster, Http, Method, REGISTRY};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The reference: create, start, read the published port, poll until the first response.
async fn raw_docker(docker: &bollard::Docker, image: &str, http: &Http, round: usize) -> Result<f64> {
    let name = format!("sluice-b1-raw-{}-{round}", std::process::id());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([("8080/tcp".to_string(), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    docker.create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body).await?;
    docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await?;
    let inspect = docker.inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>).await?;
    let port = inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .context("no published port")?;
    let url = format!("http://127.0.0.1:{port}/");
    let elapsed = loop {
        if let Ok(r) = http.get(&url).await {
            if r.status.is_success() {
                break started.elapsed();
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("raw container never answered");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    docker.remove_container(&name, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await?;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// Sluice: a function scaled to zero, one request, time to its response.
async fn sluice_cold(c: &Cluster, round: usize, image: &str) -> Result<f64> {
    let name = format!("b1-{round}");
    c.deploy(json!({"name": name, "image": image, "min_instances": 0, "idle_timeout_secs": 600})).await?;
    let started = Instant::now();
    let r = c.http.get(&c.function_url(&name, "/")).await?;
    let elapsed = started.elapsed();
    if !r.status.is_success() {
        bail!("cold invocation failed: {} {}", r.status, r.text());
    }
    // Remove it and wait until its container is gone, so rounds do not overlap.
    c.http.send(Method::DELETE, &c.api(&format!("/v1/functions/{name}")), Vec::new(), &[]).await?;
    eventually("container removed", Duration::from_secs(30), || async { Ok(c.containers(&name).await?.is_empty().then_some(())) }).await?;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(15);
    let image = format!("{REGISTRY}/sluice/hello:latest");
    let c = Cluster::start("bench-b1").await?;
    let docker = c.docker.client().clone();
    let http = Http::new();
    // One warm-up of each, not counted: first use of the image and of the code paths.
    raw_docker(&docker, &image, &http, 0).await?;
    sluice_cold(&c, 0, &image).await?;
    let (mut raw, mut sluice) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        raw.push(raw_docker(&docker, &image, &http, round).await?);
        sluice.push(sluice_cold(&c, round, &image).await?);
        eprintln!("b1: round {round}/{rounds}: raw docker {:.1} ms, sluice cold {:.1} ms", raw.last().unwrap(), sluice.last().unwrap());
    }
    let (raw_p50, sluice_p50) = (median(&mut raw), median(&mut sluice));
    let (raw_p90, sluice_p90) = (percentile(&mut raw, 0.9), percentile(&mut sluice, 0.9));
    let ratio = sluice_p50 / raw_p50;
    println!("B1 raw docker create+start+first response: p50 {raw_p50:.1} ms, p90 {raw_p90:.1} ms ({rounds} rounds)");
    println!("B1 sluice cold invocation:                  p50 {sluice_p50:.1} ms, p90 {sluice_p90:.1} ms");
    println!("B1 ratio sluice/raw p50: {ratio:.3} (goal <= 1.10)");
    let out = json!({
        "bench": "B1", "rounds": rounds,
        "raw_docker_ms": {"p50": raw_p50, "p90": raw_p90, "samples": raw},
        "sluice_cold_ms": {"p50": sluice_p50, "p90": sluice_p90, "samples": sluice},
        "ratio_p50": ratio,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("b1.json"), serde_json::to_string_pretty(&out)?)?;
    c.stop().await
}
